import { apiAs, createTeam, expect, expectAccessible, screenshot, signUp, test } from "./fixtures";

test("browse the audit log, page through it and filter it", async ({ page, server }, testInfo) => {
  const email = await signUp(page);
  await createTeam(page, "Audited team");
  const api = await apiAs(server, email);
  const team = (await api.orgs.listOrganizations({})).organizations.find((o) => o.name === "Audited team")!;
  // 28 chatbot changes in the team, one chatbot in the personal organization.
  const created = [];
  for (let i = 1; i <= 14; i++) {
    const { chatbot } = await api.chatbots.createChatbot({ organizationId: team.id, name: `Bot ${i}`, llmEndpointUrl: "https://llm.example.com/v1" });
    created.push(chatbot!);
  }
  for (const chatbot of created) {
    await api.chatbots.updateChatbot({ chatbot: { id: chatbot.id, name: `${chatbot.name} renamed` }, updateMask: { paths: ["name"] } });
  }
  await api.chatbots.createChatbot({ name: "Personal bot", llmEndpointUrl: "https://llm.example.com/v1" });

  await page.getByRole("link", { name: "Audit log" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Audit log" })).toBeVisible();
  const rows = page.locator("table.audit tbody tr");
  // Newest first, 25 a page, this organization only by default.
  await expect(rows).toHaveCount(25);
  await expect(rows.first()).toContainText("chatbot.update");
  await expect(rows.first()).toContainText(email);
  await expect(rows.first().locator(".changes")).toHaveText("name");
  await expectAccessible(page, "the audit log");
  await screenshot(page, "audit-log", testInfo);
  const pages = page.getByRole("navigation", { name: "Audit log pages" });
  await pages.getByRole("button", { name: "Next page" }).click();
  await expect(pages).toContainText("Page 2");
  // 14 creates + 14 updates + the organization's creation and its owner.
  await expect(rows.last()).toContainText("organization.create");

  const filters = page.getByRole("form", { name: "Filters" });
  await filters.getByLabel("Action").fill("chatbot.create");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(rows).toHaveCount(14);
  for (const action of await rows.locator("td:nth-child(2)").allTextContents()) expect(action).toBe("chatbot.create");
  await expect(pages).toHaveCount(0);

  // All of the caller's organizations: the personal chatbot too.
  await filters.getByLabel("Organization").selectOption({ label: "All of mine" });
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(rows).toHaveCount(15);

  // One target.
  await filters.getByLabel("Target type").selectOption("chatbot");
  await filters.getByLabel("Target id").fill(created[0]!.id);
  await filters.getByLabel("Action").fill("");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(rows).toHaveCount(2);
  await expect(rows.nth(0)).toContainText("chatbot.update");
  await expect(rows.nth(1)).toContainText("chatbot.create");

  // A time range with nothing in it.
  await filters.getByLabel("From").fill("2001-01-01T00:00");
  await filters.getByLabel("Before").fill("2001-01-02T00:00");
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(page.getByText("No events match.")).toBeVisible();

  // A filter the server refuses, shown under the field it names.
  await filters.getByRole("button", { name: "Clear" }).click();
  await filters.getByLabel("Target id").fill(created[0]!.id);
  await filters.getByRole("button", { name: "Apply filters" }).click();
  await expect(filters.getByLabel("Target type")).toHaveAccessibleDescription(/is required with target_id/);
});
