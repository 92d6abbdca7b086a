// The signed-in session: the access token and the refresh token, in this
// module's memory only. Never in localStorage, sessionStorage or a cookie:
// the server hands tokens out in response bodies, so any store a script can
// read back later would be one an injected script could read too; memory
// dies with the tab. The cost: a reload means signing in again
// (console/README.md, "Tokens").

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

/** What Login and RefreshToken answer (the fields the session keeps). */
export interface TokenPair {
  accessToken: string;
  accessTokenExpireTime?: Timestamp;
  refreshToken: string;
}

/** Exchanges a refresh token for a new pair (AuthService.RefreshToken). */
export type Refresher = (refreshToken: string) => Promise<TokenPair>;

interface Tokens {
  access: string;
  /** Milliseconds since the epoch; 0 when the server gave no expiry. */
  accessExpiresAt: number;
  /** Refresh this long before accessExpiresAt, so that a call in flight does
   * not meet UNAUTHENTICATED: a minute, or a quarter of a shorter lifetime. */
  earlyMs: number;
  refresh: string;
}

let tokens: Tokens | null = null;
let refresher: Refresher | null = null;
// One refresh at a time: a refresh token works once, and presenting a spent
// one again revokes the whole login (auth_service.proto), so two calls that
// both find the access token stale must share one RefreshToken.
let refreshing: Promise<string | null> | null = null;
const endListeners = new Set<(reason: string) => void>();

export function setRefresher(fn: Refresher): void {
  refresher = fn;
}

export function start(pair: TokenPair): void {
  tokens = fromPair(pair);
}

/** The refresh token, for Logout. */
export function refreshToken(): string | null {
  return tokens?.refresh ?? null;
}

/** Forgets both tokens. `reason`, when given, tells the listeners why the
 * session ended without the person signing out (the app shows it). */
export function end(reason?: string): void {
  const wasSignedIn = tokens !== null;
  tokens = null;
  refreshing = null;
  if (wasSignedIn && reason) {
    for (const listener of endListeners) listener(reason);
  }
}

export function onEnd(listener: (reason: string) => void): () => void {
  endListeners.add(listener);
  return () => endListeners.delete(listener);
}

/** An access token good for the next call: refreshed first when it is about
 * to expire. Null when signed out. */
export async function accessToken(): Promise<string | null> {
  if (!tokens) return null;
  if (tokens.accessExpiresAt && tokens.accessExpiresAt - Date.now() < tokens.earlyMs) {
    return refresh(tokens.access);
  }
  return tokens.access;
}

/** After the server refused `rejected`: a newer access token, refreshing
 * unless another call already did. Null when the session is over. */
export async function replaceRejected(rejected: string): Promise<string | null> {
  if (!tokens) return null;
  if (tokens.access !== rejected) return tokens.access;
  return refresh(rejected);
}

function refresh(stale: string): Promise<string | null> {
  if (!refreshing) {
    refreshing = exchange(stale).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function exchange(stale: string): Promise<string | null> {
  const current = tokens;
  if (!current || !refresher) return null;
  if (current.access !== stale) return current.access;
  try {
    const pair = await refresher(current.refresh);
    // Signed out (or in again) while the refresh was under way: keep what
    // is there now.
    if (tokens !== current) return tokens?.access ?? null;
    tokens = fromPair(pair);
    return tokens.access;
  } catch (error) {
    // Only a refused refresh token ends the session; an outage does not
    // (the call fails with it and the person may try again).
    if (ConnectError.from(error).code !== Code.Unauthenticated) throw error;
    if (tokens === current) end("Your session has ended. Sign in again.");
    return null;
  }
}

function fromPair(pair: TokenPair): Tokens {
  const expire = pair.accessTokenExpireTime;
  const accessExpiresAt = expire ? Number(expire.seconds) * 1000 + Math.floor(expire.nanos / 1e6) : 0;
  // If the page's clock is off, the server's UNAUTHENTICATED still leads
  // to a refresh (replaceRejected).
  const lifetime = Math.max(0, accessExpiresAt - Date.now());
  return { access: pair.accessToken, accessExpiresAt, earlyMs: Math.min(60_000, lifetime / 4), refresh: pair.refreshToken };
}
