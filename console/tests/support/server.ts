// Starts the real server for a store (SQLite in a fresh temporary file, or a
// fresh PostgreSQL database with a random name), with the console on a free
// port, and stops it afterwards. Its log goes to a file, named on failure.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startDistProxy, type DistProxy } from "./dist-proxy";

export type Store = "sqlite" | "postgres";

export interface Server {
  store: Store;
  /** Where the page is: the console's origin. */
  url: string;
  /** The console listener itself (the same as url unless a dist proxy is in front). */
  apiUrl: string;
  /** The server's log (removed with its directory on stop unless CONSOLE_E2E_KEEP). */
  log: string;
  stop(): Promise<void>;
}

const consoleDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The binary `cargo build` made; CHATBOT_BACKEND_BIN overrides. */
export function binaryPath(): string {
  return resolve(consoleDir, process.env.CHATBOT_BACKEND_BIN ?? "../target/debug/chatbot-backend");
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => done(port));
    });
  });
}

const POSTGRES = process.env.CONSOLE_E2E_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432";

/** `settings`: environment variables for this server on top of the tests'
 * own (e.g. a short ACCESS_TOKEN_TTL_SECS). */
export async function startServer(store: Store, settings: Record<string, string> = {}): Promise<Server> {
  const binary = binaryPath();
  if (!existsSync(binary)) {
    throw new Error(`no server binary at ${binary}: run \`cargo build\` in the repository first (or set CHATBOT_BACKEND_BIN)`);
  }
  const dir = mkdtempSync(join(tmpdir(), `console-e2e-${store}-`));
  const database = `console_e2e_${randomBytes(6).toString("hex")}`;
  const databaseUrl = store === "sqlite" ? `sqlite://${join(dir, "console.db")}` : `${POSTGRES}/${database}`;
  const port = await freePort();
  const log = join(dir, "server.log");
  const out = createWriteStream(log);

  // A clean environment: nothing of the caller's (a DATABASE_URL, a
  // REDIS_URL set for cargo test) changes the server the browser meets.
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATABASE_URL: databaseUrl,
    SECRET_KEY: "console-e2e-secret-key-at-least-32-bytes-long",
    LISTEN_ADDR: "127.0.0.1:0",
    CONSOLE_LISTEN_ADDR: `127.0.0.1:${port}`,
    RATE_LIMIT_PER_USER: "0",
    RATE_LIMIT_PER_ADDRESS: "0",
    // Every test signs in from 127.0.0.1: one test's wrong passwords must
    // not lock out the next (the limit per email still applies).
    LOGIN_MAX_FAILURES_PER_ADDRESS: "1000",
    // Usage and last use show within a second, not the default 30 s.
    USAGE_FLUSH_INTERVAL_SECS: "1",
    LAST_USED_FLUSH_INTERVAL_SECS: "1",
    RUST_LOG: process.env.CONSOLE_E2E_RUST_LOG ?? "info",
    ...settings,
  };
  const child = spawn(binary, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));

  const apiUrl = `http://127.0.0.1:${port}`;
  let proxy: DistProxy | undefined;
  const stop = async () => {
    await proxy?.close();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    out.end();
    if (store === "postgres") dropDatabase(database);
    if (!process.env.CONSOLE_E2E_KEEP) rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitUntilServing(apiUrl, child, log);
    if (process.env.CONSOLE_E2E_DIST === "disk") {
      // For working on the console without rebuilding the server: pages
      // from console/dist on disk, calls passed to the real server.
      proxy = await startDistProxy(join(consoleDir, "dist"), apiUrl);
    } else {
      await checkEmbeddedIsCurrent(apiUrl);
    }
  } catch (error) {
    // Nothing is left running (or behind) by a start that failed.
    await stop();
    throw error;
  }

  return { store, url: proxy?.url ?? apiUrl, apiUrl, log, stop };
}

async function waitUntilServing(url: string, child: ChildProcess, log: string) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the server exited (${child.exitCode ?? child.signalCode}) before serving; its log:\n${readFileSync(log, "utf8")}`);
    }
    try {
      await fetch(`${url}/`);
      return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the server did not serve ${url} within 60 s; its log:\n${readFileSync(log, "utf8")}`);
}

/** The binary embeds console/dist as it was at `cargo build`: a test of an
 * older build would pass or fail for the wrong reasons. */
async function checkEmbeddedIsCurrent(url: string) {
  if ((await fetch(`${url}/`)).status === 404) {
    throw new Error("the server serves no console: run `npm run build` in console/, then `cargo build`");
  }
  for (const name of ["index.html", "console.js", "console.css"]) {
    const served = Buffer.from(await (await fetch(`${url}/${name}`)).arrayBuffer());
    const built = readFileSync(join(consoleDir, "dist", name));
    if (!served.equals(built)) {
      throw new Error(
        `the server embeds another ${name} than console/dist has: run \`cargo build\` after \`npm run build\` ` +
          "(or CONSOLE_E2E_DIST=disk to serve console/dist from disk while working on the console)",
      );
    }
  }
}

function dropDatabase(database: string) {
  // Best effort: the server is stopped, so nothing holds the database; a
  // missing psql leaves it behind (named console_e2e_*).
  spawnSync("psql", [`${POSTGRES}/postgres`, "-q", "-c", `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`], {
    stdio: "ignore",
    timeout: 20_000,
  });
}
