// Bundles the console into dist/: index.html, console.js and console.css,
// and nothing else. dist/ is committed (the server embeds it at compile
// time), so the output must be the same bytes for the same inputs: esbuild
// is deterministic, no source maps or timestamps are written, and dist/ is
// emptied first so no stale file is left for the server to embed.
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dist = `${root}dist`;

await mkdir(dist, { recursive: true });
for (const name of await readdir(dist)) {
  await rm(`${dist}/${name}`, { recursive: true });
}

await build({
  absWorkingDir: root,
  entryPoints: { console: "src/main.tsx" },
  outdir: "dist",
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  platform: "browser",
  jsx: "automatic",
  jsxImportSource: "preact",
  sourcemap: false,
  // Third-party licence headers go to one comment at the end of the file.
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
  define: { "process.env.NODE_ENV": '"production"' },
});
await copyFile(`${root}src/index.html`, `${dist}/index.html`);
