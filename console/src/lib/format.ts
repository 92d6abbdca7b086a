// Conversions between the API's types (Timestamp, Duration, int64 as
// bigint) and what people read and type.

import { create } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

export function millis(ts: Timestamp | undefined): number | undefined {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : undefined;
}

export function timestamp(ms: number): Timestamp {
  return create(TimestampSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 });
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const hourFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** "5 Dec 2026, 10:25", or `none` when unset. */
export function when(ts: Timestamp | undefined, none = "—"): string {
  const ms = millis(ts);
  return ms === undefined ? none : dateTime.format(ms);
}

export function hourLabel(ms: number): string {
  return hourFormat.format(ms);
}

export function isPast(ts: Timestamp | undefined): boolean {
  const ms = millis(ts);
  return ms !== undefined && ms <= Date.now();
}

/** For <input type="datetime-local">: local time, minutes. */
export function toLocalInput(ms: number | undefined): string {
  if (ms === undefined) return "";
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** From <input type="datetime-local">; undefined when empty or invalid. */
export function fromLocalInput(value: string): number | undefined {
  if (!value) return undefined;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

export const UNITS = [
  { label: "seconds", seconds: 1 },
  { label: "minutes", seconds: 60 },
  { label: "hours", seconds: 3600 },
  { label: "days", seconds: 86400 },
] as const;

export type UnitLabel = (typeof UNITS)[number]["label"];

export function duration(amount: number, unit: UnitLabel): Duration {
  const seconds = UNITS.find((u) => u.label === unit)!.seconds * amount;
  return create(DurationSchema, { seconds: BigInt(Math.round(seconds)) });
}

/** A Duration as the largest unit it is a whole number of. */
export function splitDuration(d: Duration | undefined): { amount: string; unit: UnitLabel } {
  const seconds = d ? Number(d.seconds) : 0;
  for (const u of [...UNITS].reverse()) {
    if (seconds > 0 && seconds % u.seconds === 0) return { amount: String(seconds / u.seconds), unit: u.label };
  }
  return { amount: seconds ? String(seconds) : "", unit: "seconds" };
}

export function durationText(d: Duration | undefined): string {
  const { amount, unit } = splitDuration(d);
  if (!amount) return "—";
  return amount === "1" ? `1 ${unit.slice(0, -1)}` : `${amount} ${unit}`;
}

const integer = new Intl.NumberFormat("en-US");

export function count(n: bigint | number): string {
  return integer.format(n);
}

/** A whole number typed in a form, or undefined when empty or not whole. */
export function parseInteger(value: string): bigint | undefined {
  const trimmed = value.trim().replace(/[,_\s]/g, "");
  return /^-?\d+$/.test(trimmed) ? BigInt(trimmed) : undefined;
}

/** A short form of a UUID for tables; the whole one is in its title. */
export function shortId(id: string): string {
  return id.length > 13 ? `${id.slice(0, 8)}…` : id;
}
