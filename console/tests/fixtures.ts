// The tests' fixtures: one real server per store for each worker (the
// Playwright project says which store), and pages watched for what must
// never happen: a console error (a CSP violation is one), an uncaught
// exception, or anything in a store a page script could read a token from.

import AxeBuilder from "@axe-core/playwright";
import { test as base, expect, type Browser, type Page, type TestInfo } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { apiAt, signedInApi, type Api } from "./support/api";
import { startServer, type Server, type Store } from "./support/server";

export { expect };

/** The option each Playwright project sets (playwright.config.ts). */
export interface StoreOption {
  store: Store;
}

interface WorkerFixtures {
  store: Store;
  server: Server;
}

interface TestFixtures {
  /** Clients in Node against the test's server, signed out. */
  api: Api;
  /** Opens another person's page (a context of its own), watched like
   * `page`; on the test's server unless `baseURL` names another. */
  newPage(baseURL?: string): Promise<Page>;
}

export const test = base.extend<TestFixtures, WorkerFixtures>({
  store: ["sqlite", { option: true, scope: "worker" }],
  server: [
    async ({ store }, use) => {
      const server = await startServer(store);
      try {
        await use(server);
      } finally {
        await server.stop();
      }
    },
    { scope: "worker", timeout: 90_000 },
  ],
  baseURL: async ({ server }, use) => use(server.url),
  api: async ({ server }, use) => use(apiAt(server.apiUrl)),
  page: async ({ page }, use, testInfo) => {
    const watch = watchPage(page);
    await use(page);
    await watch.check(testInfo);
  },
  newPage: async ({ browser, server }, use, testInfo) => {
    const opened: { page: Page; watch: ReturnType<typeof watchPage> }[] = [];
    await use(async (baseURL = server.url) => {
      const page = await openPage(browser, baseURL);
      opened.push({ page, watch: watchPage(page) });
      return page;
    });
    for (const { page, watch } of opened) {
      await watch.check(testInfo);
      await page.context().close();
    }
  },
});

async function openPage(browser: Browser, baseURL: string): Promise<Page> {
  const context = await browser.newContext({ baseURL, locale: "en-US", timezoneId: "UTC" });
  return context.newPage();
}

function watchPage(page: Page) {
  const problems: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
  // Chrome reports a violation as a console error too; this names it.
  void page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
    });
  });
  return {
    async check(testInfo: TestInfo) {
      if (!page.isClosed() && page.url().startsWith("http")) {
        const stores = await page.evaluate(async () => ({
          localStorage: localStorage.length,
          sessionStorage: sessionStorage.length,
          cookie: document.cookie,
          indexedDB: (await indexedDB.databases()).length,
        }));
        expect(stores, "the page keeps nothing a script could read a token from").toEqual({
          localStorage: 0,
          sessionStorage: 0,
          cookie: "",
          indexedDB: 0,
        });
      }
      if (testInfo.status === testInfo.expectedStatus) {
        expect(problems, "the page logged no error").toEqual([]);
      }
    },
  };
}

let counter = 0;

/** An email no other test (or run) uses. */
export function uniqueEmail(who: string): string {
  counter += 1;
  return `${who}-${Date.now().toString(36)}-${counter}@example.com`;
}

export const PASSWORD = "correct-horse-battery-staple";

/** Signs up through the page and lands on the chatbots. */
export async function signUp(page: Page, email = uniqueEmail("owner"), password = PASSWORD): Promise<string> {
  await page.goto("/#/signup");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeVisible();
  return email;
}

export async function signIn(page: Page, email: string, password = PASSWORD) {
  await page.goto("/#/signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chatbots" })).toBeVisible();
}

/** The test's own clients, signed in as `email`. */
export function apiAs(server: Server, email: string, password = PASSWORD): Promise<Api> {
  return signedInApi(server.apiUrl, email, password);
}

/** Creates a team through the page and switches to it. */
export async function createTeam(page: Page, name: string) {
  await page.getByRole("link", { name: "Organizations" }).click();
  await page.getByLabel("Team name").fill(name);
  await page.getByRole("button", { name: "Create team" }).click();
  await expect(page.getByLabel("Organization", { exact: true })).toHaveValue(/.+/);
  await expect(page.getByRole("status").filter({ hasText: `Switched to ${name}.` })).toBeVisible();
}

/** No serious or critical axe violation (WCAG 2.1 A and AA, and best practice). */
export async function expectAccessible(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]).analyze();
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(
    serious.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    `accessibility of ${what}`,
  ).toEqual([]);
}

const screenshots = resolve(dirname(fileURLToPath(import.meta.url)), "../../docs/console");

/** A screenshot for README (docs/console/NAME.png), from the SQLite run only
 * so each is made once. */
export async function screenshot(page: Page, name: string, testInfo: TestInfo) {
  if (testInfo.project.name !== "sqlite") return;
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: `${screenshots}/${name}.png`, animations: "disabled", caret: "hide" });
}
