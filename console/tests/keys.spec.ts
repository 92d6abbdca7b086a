import type { Page } from "@playwright/test";
import { VerifyApiKeyReason } from "../src/gen/chatbot/v1/api_key_service_pb";
import type { Api } from "./support/api";
import type { Server } from "./support/server";
import { apiAs, expect, expectAccessible, screenshot, signUp, test } from "./fixtures";

/** Signs up, creates a chatbot from the test and opens its page. */
async function chatbotPage(page: Page, server: Server) {
  const email = await signUp(page);
  const api = await apiAs(server, email);
  const { chatbot } = await api.chatbots.createChatbot({ name: "Support Bot", llmEndpointUrl: "https://api.openai.com/v1/chat/completions" });
  await page.goto(`/#/chatbots/${chatbot!.id}`);
  await expect(page.getByRole("heading", { level: 1, name: "Support Bot" })).toBeVisible();
  return { api, chatbotId: chatbot!.id };
}

async function secretIsGone(page: Page, secret: string) {
  const found = await page.evaluate(
    (s) => document.documentElement.outerHTML.includes(s) || [...document.querySelectorAll("input")].some((i) => i.value.includes(s)),
    secret,
  );
  expect(found, "the secret is nowhere in the page").toBe(false);
}

test("create a key, see and copy its secret once", async ({ page, server, api: anonymous, context }, testInfo) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  await chatbotPage(page, server);
  await page.getByRole("button", { name: "New key" }).click();
  const form = page.getByRole("form", { name: "New key" });
  await form.getByLabel("Display name").fill("production");
  const tomorrow = new Date(Date.now() + 24 * 3600_000).toISOString().slice(0, 16); // the page's time zone is UTC
  await form.getByLabel("Expires").fill(tomorrow);
  await form.getByLabel("Limit how often the key may be verified").check();
  await form.getByLabel("Limit", { exact: true }).fill("100");
  await form.getByLabel("Per window of", { exact: true }).fill("1");
  await form.getByLabel("Per window of unit").selectOption("minutes");
  await form.getByLabel("Limit the credits the key may spend").check();
  await form.getByLabel("Balance", { exact: true }).fill("1000");
  await form.getByRole("button", { name: "Create key" }).click();

  const dialog = page.getByRole("dialog", { name: "Key production created" });
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText("shown only once");
  await expect(dialog).toContainText("cannot be shown again");
  const secret = await dialog.getByLabel("Secret key").inputValue();
  expect(secret).toMatch(/^cbk_/);
  await dialog.getByRole("button", { name: "Copy" }).click();
  await expect(dialog.getByRole("status")).toHaveText("Copied to the clipboard.");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(secret);
  await expectAccessible(page, "the secret dialog");
  await screenshot(page, "key-secret", testInfo);

  // The key works: VerifyApiKey from another service's point of view.
  const verified = await anonymous.keys.verifyApiKey({ key: secret });
  expect(verified.valid).toBe(true);
  expect(verified.creditsRemaining).toBe(999n);

  await dialog.getByRole("button", { name: "Done" }).click();
  await expect(dialog).toBeHidden();
  await secretIsGone(page, secret);
  const row = page.getByRole("row", { name: /production/ });
  await expect(row).toContainText(secret.slice(0, 12));
  await expect(row).toContainText("Active until expiry");
  await expect(row).toContainText(/1,000 left|999 left/);
});

test("a limit violation is shown under the input it names", async ({ page, server }) => {
  await chatbotPage(page, server);
  await page.getByRole("button", { name: "New key" }).click();
  const form = page.getByRole("form", { name: "New key" });
  await form.getByLabel("Limit how often the key may be verified").check();
  await form.getByLabel("Limit", { exact: true }).fill("0");
  await form.getByLabel("Limit the credits the key may spend").check();
  await form.getByLabel("Balance", { exact: true }).fill("-5");
  await form.getByRole("button", { name: "Create key" }).click();
  await expect(form.getByLabel("Limit", { exact: true })).toHaveAccessibleDescription(/must be from 1 to 1000000/);
  await expect(form.getByLabel("Balance", { exact: true })).toHaveAccessibleDescription(/must be from 0 to/);
  await expectAccessible(page, "the new key form with violations");
});

async function keyPage(page: Page, api: Api, chatbotId: string, init: Parameters<Api["keys"]["createApiKey"]>[0]) {
  const created = await api.keys.createApiKey({ chatbotId, ...init });
  await page.goto(`/#/chatbots/${chatbotId}/keys/${created.apiKey!.id}`);
  await expect(page.getByRole("heading", { level: 1, name: init.displayName })).toBeVisible();
  return created;
}

test("set a key's rate limit and credits, then top it up", async ({ page, server }) => {
  const { api, chatbotId } = await chatbotPage(page, server);
  const { apiKey } = await keyPage(page, api, chatbotId, { chatbotId, displayName: "metered" });
  await expect(page.locator(".facts")).toContainText("Unlimited");

  const limits = page.getByRole("form", { name: "Rate limit and credits" });
  await limits.getByLabel("Limit how often the key may be verified").check();
  await limits.getByLabel("Limit", { exact: true }).fill("50");
  await limits.getByLabel("Per window of", { exact: true }).fill("1");
  await limits.getByLabel("Per window of unit").selectOption("minutes");
  await limits.getByLabel("Limit the credits the key may spend").check();
  await limits.getByLabel("Balance", { exact: true }).fill("500");
  await limits.getByRole("button", { name: "Save limits" }).click();
  await expect(page.getByRole("status")).toContainText("Limits saved.");
  await expect(page.getByTestId("rate-limit")).toHaveText("50 calls per 1 minute");
  await expect(page.getByTestId("credits")).toHaveText("500 left");

  // Change them: a refill, a higher limit.
  await limits.getByLabel("Limit", { exact: true }).fill("80");
  await limits.getByLabel("Refill the balance periodically").check();
  await limits.getByLabel("Refill to").fill("1000");
  await limits.getByLabel("Every", { exact: true }).fill("1");
  await limits.getByLabel("Every unit").selectOption("days");
  await limits.getByRole("button", { name: "Save limits" }).click();
  await expect(page.getByTestId("rate-limit")).toHaveText("80 calls per 1 minute");
  await expect(page.getByTestId("credits")).toHaveText("500 left, refilled to 1,000 every 1 day");

  const topUp = page.getByRole("form", { name: "Top up" });
  await topUp.getByLabel("Credits to add").fill("250");
  await topUp.getByRole("button", { name: "Add credits" }).click();
  await expect(page.getByRole("status")).toContainText("Added 250 credits: 750 left.");
  await expect(page.getByTestId("credits")).toContainText("750 left");
  await expectAccessible(page, "a key's page");

  const { apiKey: stored } = await api.keys.getApiKey({ id: apiKey!.id });
  expect(stored!.rateLimit!.limit).toBe(80n);
  expect(stored!.rateLimit!.window!.seconds).toBe(60n);
  expect(stored!.credits!.remaining).toBe(750n);
  expect(stored!.credits!.refill!.amount).toBe(1000n);

  // Take the limits off again.
  await limits.getByLabel("Limit how often the key may be verified").uncheck();
  await limits.getByLabel("Limit the credits the key may spend").uncheck();
  await limits.getByRole("button", { name: "Save limits" }).click();
  await expect(page.getByTestId("rate-limit")).toHaveText("None");
  await expect(page.getByTestId("credits")).toHaveText("Unlimited");
});

test("revoke a key: VerifyApiKey then answers REVOKED", async ({ page, server, api: anonymous }) => {
  const { api, chatbotId } = await chatbotPage(page, server);
  const { key } = await keyPage(page, api, chatbotId, { chatbotId, displayName: "doomed" });
  expect((await anonymous.keys.verifyApiKey({ key })).valid).toBe(true);
  await page.getByRole("button", { name: "Revoke" }).click();
  await page.getByRole("dialog", { name: "Revoke doomed?" }).getByRole("button", { name: "Revoke key" }).click();
  await expect(page.getByRole("status")).toContainText("doomed revoked.");
  await expect(page.locator(".facts")).toContainText("Revoked");
  await expect(page.getByRole("button", { name: "Revoke" })).toHaveCount(0);
  const answer = await anonymous.keys.verifyApiKey({ key });
  expect(answer.valid).toBe(false);
  expect(answer.reason).toBe(VerifyApiKeyReason.REVOKED);

  // The chatbot lists it only when asked for revoked keys.
  await page.getByRole("link", { name: "Support Bot", exact: true }).click();
  await expect(page.getByRole("row", { name: /doomed/ })).toHaveCount(0);
  await page.getByLabel("Show revoked keys").check();
  await expect(page.getByRole("row", { name: /doomed/ })).toContainText("Revoked");
});

test("rotate a key with a grace period: both keys work until it ends", async ({ page, server, api: anonymous }) => {
  const { api, chatbotId } = await chatbotPage(page, server);
  const { key: oldSecret } = await keyPage(page, api, chatbotId, { chatbotId, displayName: "rotating" });
  await page.getByRole("button", { name: "Rotate…" }).click();
  const rotate = page.getByRole("dialog", { name: "Rotate rotating" });
  await rotate.getByLabel("Grace period", { exact: true }).fill("2");
  await rotate.getByLabel("Grace period unit").selectOption("hours");
  await rotate.getByRole("button", { name: "Rotate key" }).click();

  const shown = page.getByRole("dialog", { name: "rotating rotated" });
  await expect(shown).toContainText("shown only once");
  const newSecret = await shown.getByLabel("Secret key").inputValue();
  expect(newSecret).toMatch(/^cbk_/);
  expect(newSecret).not.toBe(oldSecret);
  await shown.getByRole("button", { name: "Done" }).click();
  await secretIsGone(page, newSecret);

  await expect(page.locator(".facts")).toContainText("Active until expiry");
  const oldAnswer = await anonymous.keys.verifyApiKey({ key: oldSecret });
  const newAnswer = await anonymous.keys.verifyApiKey({ key: newSecret });
  expect(oldAnswer.valid).toBe(true);
  expect(newAnswer.valid).toBe(true);
  const previous = await api.keys.getApiKey({ id: oldAnswer.apiKeyId });
  const expires = Number(previous.apiKey!.expireTime!.seconds) * 1000;
  expect(Math.abs(expires - (Date.now() + 2 * 3600_000))).toBeLessThan(5 * 60_000);

  // The page links the replacement.
  await page.getByRole("link", { name: /rotating/ }).click();
  await expect(page.locator(".facts")).toContainText(newSecret.slice(0, 12));
});

test("delete a key: VerifyApiKey then answers NOT_FOUND", async ({ page, server, api: anonymous }) => {
  const { api, chatbotId } = await chatbotPage(page, server);
  const { key } = await keyPage(page, api, chatbotId, { chatbotId, displayName: "gone" });
  await page.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog", { name: "Delete gone?" }).getByRole("button", { name: "Delete key" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Support Bot" })).toBeVisible();
  await expect(page.getByRole("status")).toContainText("gone deleted.");
  expect((await anonymous.keys.verifyApiKey({ key })).reason).toBe(VerifyApiKeyReason.NOT_FOUND);
});
