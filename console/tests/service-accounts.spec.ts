import { Code, ConnectError } from "@connectrpc/connect";
import { apiAt } from "./support/api";
import { apiAs, createTeam, expect, expectAccessible, signUp, test } from "./fixtures";

test("an owner creates a service account (token once), revokes and deletes it", async ({ page, server }) => {
  const email = await signUp(page);
  await createTeam(page, "Provisioned team");
  const team = (await (await apiAs(server, email)).orgs.listOrganizations({})).organizations.find((o) => o.name === "Provisioned team")!;
  await page.getByRole("link", { name: "Members" }).click();

  const form = page.getByRole("form", { name: "New service account" });
  await form.getByRole("button", { name: "Create service account" }).click();
  await expect(form.getByLabel("Service account name")).toHaveAccessibleDescription(/is required/);
  await form.getByLabel("Service account name").fill("provisioning");
  await form.getByLabel("Service account role").selectOption({ label: "Editor" });
  await form.getByRole("button", { name: "Create service account" }).click();
  const shown = page.getByRole("dialog", { name: "Service account provisioning created" });
  await expect(shown).toContainText("shown only once");
  const token = await shown.getByLabel("Service account token").inputValue();
  expect(token).toMatch(/^cbs_/);
  await expectAccessible(page, "the service account token dialog");
  await shown.getByRole("button", { name: "Done" }).click();
  expect(await page.content()).not.toContain(token);

  const row = page.getByRole("row", { name: /provisioning/ });
  await expect(row).toContainText("Editor");
  await expect(row).toContainText(token.slice(0, 12));
  await expect(row).toContainText("Active");

  // The token works as an editor of the team...
  const service = apiAt(server.apiUrl, token);
  const { chatbot } = await service.chatbots.createChatbot({ organizationId: team.id, name: "Provisioned", llmEndpointUrl: "https://llm.example.com/v1" });
  expect(chatbot!.organizationId).toBe(team.id);

  // ...until revoked.
  await page.getByRole("button", { name: "Revoke provisioning" }).click();
  await page.getByRole("dialog", { name: "Revoke provisioning?" }).getByRole("button", { name: "Revoke" }).click();
  await expect(row).toContainText("Revoked");
  const refused = await service.chatbots.listChatbots({ organizationId: team.id }).catch((e: unknown) => ConnectError.from(e));
  expect(refused instanceof ConnectError && refused.code).toBe(Code.Unauthenticated);

  await page.getByRole("button", { name: "Delete provisioning" }).click();
  await page.getByRole("dialog", { name: "Delete provisioning?" }).getByRole("button", { name: "Delete" }).click();
  await expect(row).toHaveCount(0);
  await expect(page.getByText("No service accounts.")).toBeVisible();
});
