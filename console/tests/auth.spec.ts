import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { LogoutRequestSchema } from "../src/gen/chatbot/v1/auth_service_pb";
import { expect, expectAccessible, PASSWORD, signIn, signUp, test, uniqueEmail } from "./fixtures";

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

test("every page is served with the strict Content-Security-Policy", async ({ request }) => {
  for (const path of ["/", "/index.html", "/console.js", "/console.css"]) {
    const response = await request.get(path);
    expect(response.status(), path).toBe(200);
    expect(response.headers()["content-security-policy"], path).toBe(CSP);
    expect(response.headers()["x-content-type-options"], path).toBe("nosniff");
  }
  const page = await request.get("/");
  expect(page.headers()["content-type"]).toContain("text/html");
  // Nothing inline the policy would have to allow.
  const html = await page.text();
  expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
  expect(html).not.toMatch(/<style|style=/);
});

test("sign up, sign out (the refresh token revoked) and sign in again", async ({ page, api }) => {
  const email = await signUp(page);
  await expect(page.locator(".account")).toContainText(email);
  await expectAccessible(page, "the chatbots of a new account");

  // Sign out: Logout carries the refresh token, which no longer works.
  const logout = page.waitForRequest((r) => r.url().endsWith("/chatbot.v1.AuthService/Logout"));
  await page.getByRole("button", { name: "Sign out" }).click();
  const body = (await logout).postDataBuffer()!;
  // One gRPC-Web frame: a flag byte, a 4-byte length, the message.
  const { refreshToken } = fromBinary(LogoutRequestSchema, body.subarray(5, 5 + body.readUInt32BE(1)));
  expect(refreshToken).not.toBe("");
  await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();
  await expect(page.getByRole("status")).toContainText("Signed out.");
  const refused = await api.auth.refreshToken({ refreshToken }).catch((e: unknown) => ConnectError.from(e));
  expect(refused instanceof ConnectError && refused.code).toBe(Code.Unauthenticated);

  await signIn(page, email);
  await expect(page.locator(".account")).toContainText(email);
});

test("a reload signs out: the tokens were in the page's memory only", async ({ page }) => {
  await signUp(page);
  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();
});

test("a wrong password shows the server's message", async ({ page }) => {
  const email = await signUp(page);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("invalid email or password");
  await expectAccessible(page, "the sign-in form with an error");
});

test("sign-up violations are shown under the fields they name", async ({ page }) => {
  await page.goto("/#/signup");
  await page.getByLabel("Email").fill("not-an-email");
  await page.getByLabel("Password").fill("short");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByLabel("Email")).toHaveAccessibleDescription(/must be an email address/);
  await expect(page.getByLabel("Password")).toHaveAccessibleDescription(/at least 8 characters/);
  await expect(page.getByLabel("Email")).toHaveAttribute("aria-invalid", "true");
  // The first field to correct has the focus.
  await expect(page.getByLabel("Email")).toBeFocused();
  await expectAccessible(page, "the sign-up form with violations");

  await page.getByLabel("Email").fill(uniqueEmail("new"));
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeVisible();
});

test("too many wrong passwords: RESOURCE_EXHAUSTED with the delay to wait", async ({ page }) => {
  const email = await signUp(page);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("not-the-password");
  const alert = page.getByRole("alert");
  // Five failures per email are allowed (LOGIN_MAX_FAILURES_PER_EMAIL), the
  // sixth attempt is refused before the password is checked.
  for (let attempt = 1; attempt <= 6; attempt++) {
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(alert).toContainText(attempt <= 5 ? "invalid email or password" : "Too many requests");
  }
  await expect(alert).toContainText(/Try again in \d+ s\./);
});
