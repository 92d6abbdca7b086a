import { apiAs, expect, expectAccessible, screenshot, signUp, test } from "./fixtures";

test("a key's and a chatbot's usage, by hour and reason, over a chosen range", async ({ page, server, api: anonymous }, testInfo) => {
  const email = await signUp(page);
  const api = await apiAs(server, email);
  const { chatbot } = await api.chatbots.createChatbot({ name: "Support Bot", llmEndpointUrl: "https://api.openai.com/v1/chat/completions" });
  const chatbotId = chatbot!.id;
  const metered = await api.keys.createApiKey({ chatbotId, displayName: "metered", credits: { remaining: 3n } });
  const other = await api.keys.createApiKey({ chatbotId, displayName: "other" });
  // metered: 3 valid, then 2 out of credits; other: 4 valid, then revoked
  // and 1 revoked answer.
  for (let i = 0; i < 5; i++) await anonymous.keys.verifyApiKey({ key: metered.key });
  for (let i = 0; i < 4; i++) await anonymous.keys.verifyApiKey({ key: other.key });
  await api.keys.revokeApiKey({ id: other.apiKey!.id });
  await anonymous.keys.verifyApiKey({ key: other.key });

  await page.goto(`/#/chatbots/${chatbotId}/keys/${metered.apiKey!.id}`);
  await expect(page.getByRole("heading", { level: 1, name: "metered" })).toBeVisible();
  const usage = page.getByRole("region", { name: "Usage" });
  const legend = usage.getByRole("list", { name: "Legend" });
  // Counts reach the store within USAGE_FLUSH_INTERVAL_SECS (1 s here).
  await expect(async () => {
    await usage.getByRole("button", { name: "Last 24 hours" }).click();
    await expect(legend).toContainText("Valid: 3", { timeout: 1000 });
    await expect(legend).toContainText("Out of credits: 2", { timeout: 1000 });
  }).toPass({ timeout: 20_000 });
  const chart = usage.getByRole("img");
  await expect(chart).toHaveAttribute("aria-label", /^5 verifications of key metered from .*: 3 valid, 2 out of credits; 3 credits spent\.$/);
  await expect(chart.locator("rect.r-valid")).toHaveCount(1);
  await expect(chart.locator("rect.r-credits")).toHaveCount(1);
  await usage.getByText("Usage by hour as a table").click();
  const table = usage.getByRole("table");
  await expect(table.getByRole("columnheader")).toHaveText(["Hour", "Valid", "Out of credits", "Credits spent"]);
  await expect(table.locator("tbody tr")).toHaveCount(1);
  await expect(table.locator("tbody tr td")).toHaveText(["3", "2", "3"]);
  await expectAccessible(page, "a key's usage");

  // Another range: a week still holds it, two days last month none.
  await usage.getByRole("button", { name: "Last 7 days" }).click();
  await expect(usage.getByRole("button", { name: "Last 7 days" })).toHaveAttribute("aria-pressed", "true");
  await expect(legend).toContainText("Valid: 3");
  const day = 24 * 3600_000;
  const local = (ms: number) => new Date(ms).toISOString().slice(0, 16); // the page's time zone is UTC
  await usage.getByLabel("From", { exact: true }).fill(local(Date.now() - 30 * day));
  await usage.getByLabel("To", { exact: true }).fill(local(Date.now() - 28 * day));
  await usage.getByRole("button", { name: "Show" }).click();
  await expect(usage.getByText(/^No verifications of key metered from/)).toBeVisible();
  // More than 31 days: the server's violation, under the field it names.
  await usage.getByLabel("From", { exact: true }).fill(local(Date.now() - 40 * day));
  await usage.getByLabel("To", { exact: true }).fill(local(Date.now()));
  await usage.getByRole("button", { name: "Show" }).click();
  await expect(usage.getByLabel("To", { exact: true })).toHaveAccessibleDescription(/at most 31 days after start_time/);

  // The chatbot's: both keys added up, the revoked answer included.
  await page.getByRole("link", { name: "Support Bot", exact: true }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Support Bot" })).toBeVisible();
  const chatbotLegend = page.getByRole("region", { name: "Usage" }).getByRole("list", { name: "Legend" });
  await expect(chatbotLegend).toContainText("Valid: 7");
  await expect(chatbotLegend).toContainText("Revoked: 1");
  await expect(chatbotLegend).toContainText("Out of credits: 2");
  await page.getByRole("region", { name: "Usage" }).scrollIntoViewIfNeeded();
  await screenshot(page, "usage", testInfo);
});
