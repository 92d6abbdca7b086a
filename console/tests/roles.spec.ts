import { Code, ConnectError } from "@connectrpc/connect";
import { apiAs, createTeam, expect, expectAccessible, screenshot, signUp, test, uniqueEmail } from "./fixtures";

async function refusal(call: Promise<unknown>): Promise<Code | "succeeded"> {
  try {
    await call;
    return "succeeded";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

test("a viewer is offered no change, and the server refuses one sent anyway", async ({ page, server, newPage }, testInfo) => {
  // The owner: a team with a chatbot and a key, and an invitation.
  const ownerEmail = await signUp(page);
  await createTeam(page, "Viewed team");
  const owner = await apiAs(server, ownerEmail);
  const team = (await owner.orgs.listOrganizations({})).organizations.find((o) => o.name === "Viewed team")!;
  const { chatbot } = await owner.chatbots.createChatbot({ organizationId: team.id, name: "Team Bot", llmEndpointUrl: "https://llm.example.com/v1" });
  const { apiKey } = await owner.keys.createApiKey({ chatbotId: chatbot!.id, displayName: "team key", credits: { remaining: 10n } });

  const viewerEmail = uniqueEmail("viewer");
  await page.getByRole("link", { name: "Members" }).click();
  const invite = page.getByRole("form", { name: "Invite someone" });
  await invite.getByLabel("Email to invite").fill(viewerEmail);
  await invite.getByLabel("Role").selectOption({ label: "Viewer" });
  await invite.getByRole("button", { name: "Invite" }).click();
  const shown = page.getByRole("dialog", { name: `Invitation for ${viewerEmail}` });
  await expect(shown).toContainText("shown only once");
  const token = await shown.getByLabel("Invitation token").inputValue();
  expect(token).toMatch(/^cbi_/);
  await shown.getByRole("button", { name: "Done" }).click();
  await expect(page.getByRole("row", { name: new RegExp(viewerEmail) })).toContainText("Viewer");
  await expectAccessible(page, "the members page of an owner");
  await screenshot(page, "members", testInfo);

  // The viewer, in a browser of their own: sign up, accept, switch.
  const viewer = await newPage();
  await signUp(viewer, viewerEmail);
  await viewer.getByRole("link", { name: "Organizations" }).click();
  await viewer.getByLabel("Invitation token").fill(token);
  await viewer.getByRole("button", { name: "Join" }).click();
  await expect(viewer.getByRole("status")).toContainText("Switched to Viewed team.");
  await expect(viewer.locator(".role-badge")).toHaveText("Viewer");

  // Nothing that changes anything is offered.
  await viewer.getByRole("link", { name: "Chatbots" }).click();
  await expect(viewer.getByRole("row", { name: /Team Bot/ })).toBeVisible();
  await expect(viewer.getByRole("button", { name: "New chatbot" })).toHaveCount(0);
  await expect(viewer.getByRole("link", { name: /^Edit/ })).toHaveCount(0);
  await expect(viewer.getByRole("button", { name: /^Delete/ })).toHaveCount(0);
  await viewer.getByRole("link", { name: "Team Bot" }).click();
  await expect(viewer.getByRole("heading", { level: 1, name: "Team Bot" })).toBeVisible();
  await expect(viewer.getByRole("row", { name: /team key/ })).toBeVisible();
  await expect(viewer.getByRole("region", { name: "Settings" })).toHaveCount(0);
  await expect(viewer.getByRole("button", { name: /Delete|New key/ })).toHaveCount(0);
  await expectAccessible(viewer, "a chatbot's page for a viewer");
  await viewer.getByRole("link", { name: "team key" }).click();
  await expect(viewer.getByRole("heading", { level: 1, name: "team key" })).toBeVisible();
  await expect(viewer.getByTestId("credits")).toHaveText("10 left");
  await expect(viewer.getByRole("button", { name: /Rotate|Revoke|Delete|Save|Add credits/ })).toHaveCount(0);
  await expect(viewer.getByRole("form")).toHaveCount(0);
  await viewer.getByRole("link", { name: "Members" }).click();
  await expect(viewer.getByRole("row", { name: /\(you\)/ })).toContainText("Viewer");
  await expect(viewer.getByRole("heading", { name: /Invitations|Service accounts/ })).toHaveCount(0);
  await expect(viewer.getByRole("combobox", { name: /^Role of/ })).toHaveCount(0);
  await expect(viewer.getByRole("button", { name: /^Remove/ })).toHaveCount(0);

  // And the server refuses what the page does not offer, sent directly
  // with the viewer's own token.
  const direct = await apiAs(server, viewerEmail);
  expect(await refusal(direct.chatbots.createChatbot({ organizationId: team.id, name: "Sneaky", llmEndpointUrl: "https://llm.example.com/v1" }))).toBe(
    Code.PermissionDenied,
  );
  expect(await refusal(direct.keys.revokeApiKey({ id: apiKey!.id }))).toBe(Code.PermissionDenied);
  expect(await refusal(direct.orgs.listServiceAccounts({ organizationId: team.id }))).toBe(Code.PermissionDenied);

  // The owner makes them an editor: after switching in again, the
  // changes are offered.
  await page.reload();
  await page.getByLabel("Email").fill(ownerEmail);
  await page.getByLabel("Password").fill("correct-horse-battery-staple");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByLabel("Organization", { exact: true }).selectOption({ label: "Viewed team" });
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("combobox", { name: `Role of ${viewerEmail}` }).selectOption({ label: "Editor" });
  await page.getByRole("button", { name: "Change role" }).click();
  await expect(page.getByRole("status")).toContainText(`${viewerEmail} is now editor.`);
  await viewer.getByLabel("Organization", { exact: true }).selectOption({ label: "Personal" });
  await viewer.getByLabel("Organization", { exact: true }).selectOption({ label: "Viewed team" });
  await expect(viewer.locator(".role-badge")).toHaveText("Editor");
  await viewer.getByRole("link", { name: "Chatbots" }).click();
  await expect(viewer.getByRole("button", { name: "New chatbot" })).toBeVisible();

  // And removes them.
  await page.getByRole("button", { name: `Remove ${viewerEmail}` }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Remove member" }).click();
  await expect(page.getByRole("row", { name: new RegExp(viewerEmail) })).toHaveCount(0);
  expect(await refusal(direct.chatbots.listChatbots({ organizationId: team.id }))).toBe(Code.PermissionDenied);
});

test("invitations: create (token once), list and withdraw", async ({ page }) => {
  await signUp(page);
  await createTeam(page, "Inviting team");
  await page.getByRole("link", { name: "Members" }).click();
  const invite = page.getByRole("form", { name: "Invite someone" });
  const email = uniqueEmail("invitee");
  await invite.getByLabel("Email to invite").fill("not-an-email");
  await invite.getByRole("button", { name: "Invite" }).click();
  await expect(invite.getByLabel("Email to invite")).toHaveAccessibleDescription(/must be an email address/);
  await invite.getByLabel("Email to invite").fill(email);
  await invite.getByLabel("Role").selectOption({ label: "Editor" });
  await invite.getByRole("button", { name: "Invite" }).click();
  const shown = page.getByRole("dialog", { name: `Invitation for ${email}` });
  const token = await shown.getByLabel("Invitation token").inputValue();
  await shown.getByRole("button", { name: "Done" }).click();
  expect(await page.content()).not.toContain(token);
  const row = page.getByRole("row", { name: new RegExp(email) });
  await expect(row).toContainText("Editor");
  await page.getByRole("button", { name: `Withdraw the invitation for ${email}` }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Withdraw" }).click();
  await expect(row).toHaveCount(0);
  await expect(page.getByText("No open invitations.")).toBeVisible();
});
