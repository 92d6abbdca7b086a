import { apiAs, expect, expectAccessible, screenshot, signUp, test } from "./fixtures";

test.describe("at a phone's width", () => {
  test.use({ viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true });

  test("every main view fits without sideways scrolling", async ({ page, server }, testInfo) => {
    const email = await signUp(page);
    const api = await apiAs(server, email);
    const { chatbot } = await api.chatbots.createChatbot({ name: "Support Bot", llmEndpointUrl: "https://api.openai.com/v1/chat/completions" });
    const { apiKey } = await api.keys.createApiKey({ chatbotId: chatbot!.id, displayName: "production", credits: { remaining: 1000n } });
    const fits = async (what: string) => {
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      expect(width, `${what} fits 375 px`).toBeLessThanOrEqual(375);
    };

    await page.getByRole("link", { name: "Members" }).click();
    await page.getByRole("link", { name: "Chatbots" }).click();
    await expect(page.getByRole("row", { name: /Support Bot/ })).toBeVisible();
    await fits("the chatbots");
    await screenshot(page, "phone", testInfo);
    await expectAccessible(page, "the chatbots at a phone's width");

    for (const [route, heading] of [
      [`#/chatbots/${chatbot!.id}`, "Support Bot"],
      [`#/chatbots/${chatbot!.id}/keys/${apiKey!.id}`, "production"],
      ["#/audit", "Audit log"],
      ["#/members", "Members"],
      ["#/organizations", "Organizations"],
    ] as const) {
      // Only the hash changes: the same document, still signed in.
      await page.goto(`/${route}`);
      await expect(page.getByRole("heading", { level: 1, name: heading })).toBeVisible();
      await expect(page.getByText(/^Loading/)).toHaveCount(0);
      await fits(heading);
      await expectAccessible(page, `${heading} at a phone's width`);
    }
  });
});

test("keyboard: the skip button, focus on each new page, dialogs keep and return the focus", async ({ page, server }) => {
  const email = await signUp(page);
  const api = await apiAs(server, email);
  const { chatbot } = await api.chatbots.createChatbot({ name: "Keyboard Bot", llmEndpointUrl: "https://llm.example.com/v1" });

  // A new page puts the focus on its heading.
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("link", { name: "Chatbots" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeFocused();

  // The skip button comes first and leads to the content.
  const skip = page.getByRole("button", { name: "Skip to content" });
  const first = await page.evaluate(() => document.querySelector("button, a[href], input, select, textarea")?.textContent);
  expect(first).toBe("Skip to content");
  await skip.focus();
  await expect(skip).toBeInViewport();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeFocused();

  // A dialog opened from the keyboard holds the focus until Escape, then
  // gives it back.
  const remove = page.getByRole("button", { name: `Delete ${chatbot!.name}` });
  await remove.focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Delete Keyboard Bot?" });
  await expect(dialog).toBeVisible();
  await expect(dialog.getByRole("button", { name: "Cancel" })).toBeFocused();
  for (let i = 0; i < 5; i++) {
    await page.keyboard.press("Tab");
    expect(await dialog.evaluate((d) => d.contains(document.activeElement))).toBe(true);
  }
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
  await expect(remove).toBeFocused();

  // Focus is visible: an outline on the focused control.
  const outline = await remove.evaluate((el) => getComputedStyle(el).outlineStyle);
  expect(outline).not.toBe("none");
});
