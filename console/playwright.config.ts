// End-to-end tests in real Chromium (Debian's, never a downloaded build)
// against the real server, once per store: every test runs in both
// projects. `npm run test:e2e` after the repository's `cargo build`.

import { defineConfig } from "@playwright/test";
import type { StoreOption } from "./tests/fixtures";

export default defineConfig<object, StoreOption>({
  testDir: "tests",
  // The flows share one server per store and the machine is small: one
  // worker, in order, is the steady choice.
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 90_000,
  expect: { timeout: 10_000 },
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    launchOptions: { executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium" },
    locale: "en-US",
    timezoneId: "UTC",
    viewport: { width: 1280, height: 800 },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
  projects: [
    { name: "sqlite", use: { store: "sqlite" } },
    { name: "postgres", use: { store: "postgres" } },
  ],
});
