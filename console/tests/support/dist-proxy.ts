// For working on the console only (CONSOLE_E2E_DIST=disk): serves
// console/dist from disk with the headers the real server gives its pages
// (the Content-Security-Policy included), and passes every other request
// (the gRPC-Web calls) to the real server with its Host unchanged, so the
// server's same-origin check sees the page's own origin.

import { readFile } from "node:fs/promises";
import { createServer, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";

export interface DistProxy {
  url: string;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

export async function startDistProxy(dist: string, upstream: string): Promise<DistProxy> {
  const pageHeaders = pickPageHeaders((await fetch(`${upstream}/`)).headers);
  const target = new URL(upstream);
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (req.method === "GET" || req.method === "HEAD") {
      const name = path === "/" ? "index.html" : path.slice(1);
      if (!/^[\w.-]+$/.test(name)) {
        res.writeHead(404, pageHeaders).end();
        return;
      }
      readFile(`${dist}/${name}`).then(
        (body) => {
          res.writeHead(200, { ...pageHeaders, "content-type": TYPES[name.split(".").pop()!] ?? "application/octet-stream" });
          res.end(req.method === "HEAD" ? undefined : body);
        },
        () => res.writeHead(404, pageHeaders).end("no such page"),
      );
      return;
    }
    const forward = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.writeHead(502).end());
    req.pipe(forward);
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((done) => server.close(() => done())),
  };
}

function pickPageHeaders(headers: Headers): IncomingHttpHeaders {
  const kept: Record<string, string> = {};
  for (const name of ["content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy", "cache-control"]) {
    const value = headers.get(name);
    if (value) kept[name] = value;
  }
  return kept;
}
