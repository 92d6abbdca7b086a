// The session over the access token's lifetime: refreshed before it
// expires, refreshed when the server refuses it as expired, and ended
// (back to signing in) when the refresh token no longer works. Each test
// runs its own server with short token lifetimes.

import type { Page } from "@playwright/test";
import { startServer } from "./support/server";
import { createTeam, expect, signUp, test } from "./fixtures";

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Counts the page's calls of each RPC. */
function countCalls(page: Page): Map<string, number> {
  const calls = new Map<string, number>();
  page.on("request", (r) => {
    const rpc = r.url().split("/").pop()!;
    calls.set(rpc, (calls.get(rpc) ?? 0) + 1);
  });
  return calls;
}

/** The members page of a team's owner: three lists loaded at once. */
async function openMembers(page: Page) {
  await page.getByRole("link", { name: "Members" }).click();
  await expect(page.getByRole("row", { name: /\(you\)/ })).toBeVisible();
  await expect(page.getByText("No open invitations.")).toBeVisible();
  await expect(page.getByText("No service accounts.")).toBeVisible();
  await expect(page.getByRole("alert")).toHaveCount(0);
}

test("an access token about to expire is refreshed once before the next calls", async ({ store, newPage }) => {
  const server = await startServer(store, { ACCESS_TOKEN_TTL_SECS: "3" });
  try {
    const page = await newPage(server.url);
    await signUp(page);
    await createTeam(page, "Refreshing team");
    await wait(3500);
    const calls = countCalls(page);
    await openMembers(page);
    // Three lists at once, one refresh: a second RefreshToken with the
    // same (spent) refresh token would have ended the whole session.
    expect(calls.get("RefreshToken")).toBe(1);
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();
  } finally {
    await server.stop();
  }
});

test("a call refused as expired is refreshed and sent again", async ({ store, newPage }) => {
  const server = await startServer(store, { ACCESS_TOKEN_TTL_SECS: "3" });
  try {
    const page = await newPage(server.url);
    // The page's clock stands still, so it never sees its token age: only
    // the server's UNAUTHENTICATED tells it.
    await page.clock.setFixedTime(Date.now());
    await signUp(page);
    await createTeam(page, "Stale team");
    // Past the token's 3 s and the server's 5 s of leeway for clock skew.
    await wait(9000);
    const calls = countCalls(page);
    await openMembers(page);
    expect(calls.get("RefreshToken")).toBe(1);
    expect(calls.get("ListMembers")).toBe(2);
    expect(calls.get("ListInvitations")).toBe(2);
  } finally {
    await server.stop();
  }
});

test("when the refresh token no longer works, the page asks to sign in again", async ({ store, newPage }) => {
  const server = await startServer(store, { ACCESS_TOKEN_TTL_SECS: "2", REFRESH_TOKEN_TTL_SECS: "2" });
  try {
    const page = await newPage(server.url);
    await signUp(page);
    await wait(2500);
    await page.getByRole("link", { name: "Audit log" }).click();
    await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();
    await expect(page.getByRole("alert")).toContainText("Your session has ended. Sign in again.");
  } finally {
    await server.stop();
  }
});
