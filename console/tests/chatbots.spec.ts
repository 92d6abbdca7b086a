import { apiAs, createTeam, expect, expectAccessible, screenshot, signUp, test } from "./fixtures";

test("create a team organization and switch between it and the personal one", async ({ page }) => {
  await signUp(page);
  await createTeam(page, "Ops team");
  const switcher = page.getByLabel("Organization", { exact: true });
  await expect(switcher.locator("option:checked")).toHaveText("Ops team");
  await expect(page.locator(".role-badge")).toHaveText("Owner");
  await expect(page.getByRole("row", { name: /Ops team/ })).toContainText("Current");
  await expectAccessible(page, "the organizations");

  await switcher.selectOption({ label: "Personal" });
  await expect(page.getByRole("status")).toContainText("Switched to Personal.");
  await page.getByRole("button", { name: "Switch to Ops team" }).click();
  await expect(switcher.locator("option:checked")).toHaveText("Ops team");
});

test("create, edit and delete a chatbot, with a violation shown under its field", async ({ page, server }, testInfo) => {
  const email = await signUp(page);
  await createTeam(page, "Support team");
  await page.getByRole("link", { name: "Chatbots" }).click();

  await page.getByRole("button", { name: "New chatbot" }).click();
  await page.getByLabel("Name").fill("Support Bot");
  await page.getByLabel("LLM endpoint URL").fill("http://127.0.0.1:8080/v1");
  await page.getByRole("button", { name: "Create chatbot" }).click();
  const url = page.getByLabel("LLM endpoint URL");
  await expect(url).toHaveAccessibleDescription(/must point at a publicly reachable host/);
  await expect(url).toBeFocused();
  await expect(page.getByRole("alert")).toContainText("correct the fields marked below");
  await expectAccessible(page, "the new chatbot form with a violation");

  await url.fill("https://api.openai.com/v1/chat/completions");
  await page.getByRole("button", { name: "Create chatbot" }).click();
  await expect(page.getByRole("status")).toContainText("Chatbot Support Bot created.");
  await expect(page.getByRole("row", { name: /Support Bot/ })).toContainText("https://api.openai.com/v1/chat/completions");

  // A second one, for the picture.
  await page.getByRole("button", { name: "New chatbot" }).click();
  await page.getByLabel("Name").fill("Sales Bot");
  await page.getByLabel("LLM endpoint URL").fill("https://llm.example.com/v1/chat");
  await page.getByRole("button", { name: "Create chatbot" }).click();
  await expect(page.getByRole("row", { name: /Sales Bot/ })).toBeVisible();
  await expectAccessible(page, "the chatbots list");
  await screenshot(page, "chatbots", testInfo);

  // Edit: only what changed is in the update_mask.
  await page.getByRole("link", { name: "Edit Support Bot" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Support Bot" })).toBeVisible();
  const settings = page.getByRole("region", { name: "Settings" });
  await settings.getByLabel("LLM endpoint URL").fill("ftp://example.com");
  await settings.getByRole("button", { name: "Save changes" }).click();
  await expect(settings.getByLabel("LLM endpoint URL")).toHaveAccessibleDescription(/must use http or https/);
  await settings.getByLabel("LLM endpoint URL").fill("https://api.openai.com/v1/chat/completions");
  await settings.getByLabel("Name").fill("Helpdesk Bot");
  await settings.getByRole("button", { name: "Save changes" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Helpdesk Bot" })).toBeVisible();
  await expectAccessible(page, "a chatbot's page");
  const api = await apiAs(server, email);
  const orgs = await api.orgs.listOrganizations({});
  const team = orgs.organizations.find((o) => o.name === "Support team")!;
  const listed = await api.chatbots.listChatbots({ organizationId: team.id });
  expect(listed.chatbots.map((c) => c.name).sort()).toEqual(["Helpdesk Bot", "Sales Bot"]);

  // Delete, after a cancelled first try (Escape closes the dialog and the
  // focus goes back to the button that opened it).
  const remove = page.getByRole("button", { name: "Delete chatbot" });
  await remove.click();
  const dialog = page.getByRole("dialog", { name: "Delete Helpdesk Bot?" });
  await expect(dialog).toBeVisible();
  await expectAccessible(page, "the delete confirmation");
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
  await expect(remove).toBeFocused();
  await remove.click();
  await dialog.getByRole("button", { name: "Delete chatbot" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeVisible();
  await expect(page.getByRole("status")).toContainText("Chatbot Helpdesk Bot deleted.");
  await expect(page.getByRole("row", { name: /Helpdesk Bot/ })).toHaveCount(0);
  await expect(page.getByRole("row", { name: /Sales Bot/ })).toBeVisible();
  expect((await api.chatbots.listChatbots({ organizationId: team.id })).chatbots.map((c) => c.name)).toEqual(["Sales Bot"]);
});

test("the chatbot list pages with next_page_token", async ({ page, server }) => {
  const email = await signUp(page);
  const api = await apiAs(server, email);
  for (let i = 1; i <= 23; i++) {
    await api.chatbots.createChatbot({ name: `Bot ${String(i).padStart(2, "0")}`, llmEndpointUrl: "https://llm.example.com/v1" });
  }
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("link", { name: "Chatbots" }).click();
  const rows = page.locator("tbody tr");
  await expect(rows).toHaveCount(20);
  await expect(rows.first()).toContainText("Bot 01");
  const pages = page.getByRole("navigation", { name: "Chatbot pages" });
  await pages.getByRole("button", { name: "Next page" }).click();
  await expect(rows).toHaveCount(3);
  await expect(rows.first()).toContainText("Bot 21");
  await expect(pages).toContainText("Page 2");
  await expect(pages.getByRole("button", { name: "Next page" })).toHaveAttribute("aria-disabled", "true");
  await pages.getByRole("button", { name: "Previous page" }).click();
  await expect(rows).toHaveCount(20);
  await expect(rows.first()).toContainText("Bot 01");
});
