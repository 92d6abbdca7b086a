// Usage as a chart: VerifyApiKey answers per hour, stacked by reason
// (GetApiKeyUsage, GetChatbotUsage), drawn as plain SVG. The same numbers
// are in a sentence (the chart's accessible name) and in a table, for
// those who do not see the chart.

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import { localViolation, problemOf } from "../api/errors";
import type { UsageBucket, UsageCounts } from "../gen/chatbot/v1/api_key_pb";
import { count, fromLocalInput, hourLabel, millis, timestamp, toLocalInput, when } from "../lib/format";
import { FormProblem, onSubmit, TextField, useForm } from "./forms";
import { Table } from "./table";

const HOUR = 3_600_000;

type Reason = "valid" | "revoked" | "expired" | "rateLimited" | "usageExceeded" | "addressNotAllowed" | "insufficientPermissions";

// Stacked bottom to top in this order; each has a colour class (console.css).
const REASONS: readonly { key: Reason; label: string; cls: string }[] = [
  { key: "valid", label: "Valid", cls: "r-valid" },
  { key: "revoked", label: "Revoked", cls: "r-revoked" },
  { key: "expired", label: "Expired", cls: "r-expired" },
  { key: "rateLimited", label: "Rate limited", cls: "r-rate" },
  { key: "usageExceeded", label: "Out of credits", cls: "r-credits" },
  { key: "addressNotAllowed", label: "Address not allowed", cls: "r-address" },
  { key: "insufficientPermissions", label: "Missing permissions", cls: "r-perms" },
];

export interface Usage {
  buckets: UsageBucket[];
  total?: UsageCounts;
}

export type UsageLoader = (start: Timestamp, end: Timestamp) => Promise<Usage>;

const PRESETS = [
  { label: "Last 24 hours", hours: 24 },
  { label: "Last 7 days", hours: 24 * 7 },
  { label: "Last 31 days", hours: 24 * 31 },
] as const;

/** A usage chart with its range: presets, or From and To. `source` names
 * what `load` loads: a new source loads again. */
export function UsagePanel({ load, source, subject }: { load: UsageLoader; source: string; subject: string }) {
  const form = useForm(["start_time", "end_time"]);
  const [preset, setPreset] = useState<number | null>(24);
  const [from, setFrom] = useState(() => toLocalInput(Date.now() - 24 * HOUR));
  const [to, setTo] = useState("");
  const [shown, setShown] = useState<{ usage: Usage; start: number; end: number } | null>(null);

  // The last range asked for wins: a preset chosen while another loads
  // replaces it (form.run would drop the second).
  const latest = useRef(0);
  const show = async (start: number, end: number) => {
    const asked = ++latest.current;
    form.setProblem(null);
    try {
      const usage = await load(timestamp(start), timestamp(end));
      if (asked === latest.current) setShown({ usage, start, end });
    } catch (error) {
      if (asked === latest.current) form.setProblem(problemOf(error));
    }
  };

  const choose = (hours: number) => {
    const end = Date.now();
    setPreset(hours);
    setFrom(toLocalInput(end - hours * HOUR));
    setTo("");
    void show(end - hours * HOUR, end);
  };

  useEffect(() => choose(24), [source]);

  const apply = () => {
    const start = fromLocalInput(from);
    const end = fromLocalInput(to) ?? Date.now();
    if (start === undefined) {
      form.setProblem(localViolation("start_time", "choose when the range starts"));
      return;
    }
    setPreset(null);
    void show(start, end);
  };

  return (
    <section class="usage" aria-labelledby="usage-heading">
      <h2 id="usage-heading">Usage</h2>
      <form class="range" onSubmit={onSubmit(apply)} noValidate>
        <div class="presets" role="group" aria-label="Range presets">
          {PRESETS.map((p) => (
            <button type="button" key={p.hours} aria-pressed={preset === p.hours ? "true" : "false"} onClick={() => choose(p.hours)}>
              {p.label}
            </button>
          ))}
        </div>
        <FormProblem form={form} />
        <div class="row">
          <TextField form={form} name="start_time" label="From" type="datetime-local" value={from} onValue={setFrom} />
          <TextField form={form} name="end_time" label="To" hint="Empty: now." type="datetime-local" value={to} onValue={setTo} />
          <div class="field submit-field">
            <button type="submit" class="primary">
              Show
            </button>
          </div>
        </div>
      </form>
      {shown ? <UsageChart usage={shown.usage} start={shown.start} end={shown.end} subject={subject} /> : <p>Loading usage…</p>}
    </section>
  );
}

function counts(c: UsageCounts | undefined, reason: Reason): number {
  return c ? Number(c[reason]) : 0;
}

/** The whole range's numbers in a sentence. */
export function summarize(usage: Usage, subject: string, start: number, end: number): string {
  const range = `from ${when(timestamp(start))} to ${when(timestamp(end))}`;
  const parts = REASONS.filter((r) => counts(usage.total, r.key) > 0).map((r) => `${count(counts(usage.total, r.key))} ${r.label.toLowerCase()}`);
  if (parts.length === 0) return `No verifications of ${subject} ${range}.`;
  const total = REASONS.reduce((sum, r) => sum + counts(usage.total, r.key), 0);
  const credits = usage.total ? Number(usage.total.creditsSpent) : 0;
  return `${count(total)} verifications of ${subject} ${range}: ${parts.join(", ")}${credits ? `; ${count(credits)} credits spent` : ""}.`;
}

export function UsageChart({ usage, start, end, subject }: { usage: Usage; start: number; end: number; subject: string }) {
  const first = Math.floor(start / HOUR) * HOUR;
  const hours = Math.max(1, Math.ceil((end - first) / HOUR));
  const slots: (UsageCounts | undefined)[] = new Array(hours).fill(undefined);
  for (const b of usage.buckets) {
    const at = millis(b.startTime);
    if (at === undefined) continue;
    const index = Math.round((at - first) / HOUR);
    if (index >= 0 && index < hours) slots[index] = b.counts;
  }
  const present = REASONS.filter((r) => counts(usage.total, r.key) > 0 || usage.buckets.some((b) => counts(b.counts, r.key) > 0));
  const peak = Math.max(0, ...slots.map((c) => REASONS.reduce((sum, r) => sum + counts(c, r.key), 0)));
  const top = niceCeiling(peak);
  const summary = summarize(usage, subject, start, end);
  // One unit of width per hour, 0..100 for height; stretched to the box
  // (preserveAspectRatio none), so labels live in HTML, not in the SVG.
  const width = hours * 10;

  return (
    <figure class="chart">
      <figcaption>Verifications per hour, by reason</figcaption>
      <div class="plot">
        <div class="y-axis" aria-hidden="true">
          <span>{count(top)}</span>
          <span>{count(top / 2)}</span>
          <span>0</span>
        </div>
        <svg role="img" aria-label={summary} viewBox={`0 0 ${width} 100`} preserveAspectRatio="none">
          <line class="grid" x1="0" x2={width} y1="50" y2="50" vector-effect="non-scaling-stroke" />
          <line class="axis" x1="0" x2={width} y1="100" y2="100" vector-effect="non-scaling-stroke" />
          {slots.map((c, i) => {
            if (!c) return null;
            let y = 100;
            return (
              <g key={i}>
                <title>{`${hourLabel(first + i * HOUR)}: ${present
                  .filter((r) => counts(c, r.key) > 0)
                  .map((r) => `${count(counts(c, r.key))} ${r.label.toLowerCase()}`)
                  .join(", ")}`}</title>
                {present.map((r) => {
                  const n = counts(c, r.key);
                  if (n === 0 || top === 0) return null;
                  const h = (n / top) * 100;
                  y -= h;
                  return <rect key={r.key} class={r.cls} x={i * 10 + 1} y={y} width="8" height={h} />;
                })}
              </g>
            );
          })}
        </svg>
      </div>
      <div class="x-axis" aria-hidden="true">
        <span>{hourLabel(first)}</span>
        <span>{hourLabel(first + Math.floor(hours / 2) * HOUR)}</span>
        <span>{hourLabel(first + hours * HOUR)}</span>
      </div>
      {present.length > 0 && (
        <ul class="legend" aria-label="Legend">
          {present.map((r) => (
            <li key={r.key}>
              <span class={`swatch ${r.cls}`} aria-hidden="true" />
              {r.label}: {count(counts(usage.total, r.key))}
            </li>
          ))}
        </ul>
      )}
      <p class="summary">{summary}</p>
      {usage.buckets.length > 0 && (
        <details>
          <summary>Usage by hour as a table</summary>
          <Table caption={`Verifications of ${subject} per hour`}>
            <thead>
              <tr>
                <th scope="col">Hour</th>
                {present.map((r) => (
                  <th scope="col" key={r.key}>
                    {r.label}
                  </th>
                ))}
                <th scope="col">Credits spent</th>
              </tr>
            </thead>
            <tbody>
              {usage.buckets.map((b) => (
                <tr key={String(b.startTime?.seconds)}>
                  <th scope="row">{hourLabel(millis(b.startTime) ?? 0)}</th>
                  {present.map((r) => (
                    <td key={r.key}>{count(counts(b.counts, r.key))}</td>
                  ))}
                  <td>{count(b.counts ? Number(b.counts.creditsSpent) : 0)}</td>
                </tr>
              ))}
            </tbody>
          </Table>
        </details>
      )}
    </figure>
  );
}

/** The top of the scale: 1, 2, 4, 6, 8 or 10 times a power of ten, at or
 * above n, so that its half is a whole number too. */
function niceCeiling(n: number): number {
  if (n <= 2) return 2;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 4, 6, 8]) {
    if (step * power >= n) return step * power;
  }
  return 10 * power;
}
