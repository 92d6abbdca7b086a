// Fails when the console's assets pass their budget. The budget is the
// measured size with about 25% headroom (console/README.md, "Budget"):
// raise it only with a reason, in the same commit as what needs it.
import { readdir, readFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const BUDGET = { raw: 264_000, gzip: 78_000 };

const dist = fileURLToPath(new URL("../dist", import.meta.url));
let raw = 0;
let gzip = 0;
/** @type {{ name: string, raw: number, gzip: number }[]} */
const rows = [];
for (const name of (await readdir(dist)).sort()) {
  const bytes = await readFile(`${dist}/${name}`);
  const zipped = gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length;
  gzip += zipped;
  rows.push({ name, raw: bytes.length, gzip: zipped });
}
/** @param {string | number} value @param {number} width */
const pad = (value, width) => String(value).padStart(width);
console.log(`${"file".padEnd(14)} ${pad("raw bytes", 10)} ${pad("gzip bytes", 11)}`);
for (const row of rows) {
  console.log(`${row.name.padEnd(14)} ${pad(row.raw, 10)} ${pad(row.gzip, 11)}`);
}
console.log(`${"total".padEnd(14)} ${pad(raw, 10)} ${pad(gzip, 11)}`);
console.log(`${"budget".padEnd(14)} ${pad(BUDGET.raw, 10)} ${pad(BUDGET.gzip, 11)}`);
if (raw > BUDGET.raw || gzip > BUDGET.gzip) {
  console.error("console/dist is over its budget");
  process.exit(1);
}
console.log("within budget");
