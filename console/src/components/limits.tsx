// A key's rate limit and credits as form inputs (api_key.proto: RateLimit,
// Credits, Refill), shared by the create and the edit forms. What is typed
// is kept as text (a draft) and turned into messages on submit, so an
// out-of-range value reaches the server, whose violation is shown under
// the input it names.

import { create } from "@bufbuild/protobuf";
import { CreditsSchema, RateLimitSchema, RateLimitUnit, type ApiKey, type Credits, type RateLimit } from "../gen/chatbot/v1/api_key_pb";
import { duration, parseInteger, splitDuration, UNITS, type UnitLabel } from "../lib/format";
import { Checkbox, Field, Select, TextField, type Form } from "./forms";

export interface LimitsDraft {
  rateOn: boolean;
  limit: string;
  window: string;
  windowUnit: UnitLabel;
  unit: string;
  creditsOn: boolean;
  remaining: string;
  refillOn: boolean;
  refillAmount: string;
  refillEvery: string;
  refillUnit: UnitLabel;
  lowThreshold: string;
}

/** The request paths the limit inputs set (relative to the key). */
export const LIMIT_INPUTS = [
  "rate_limit.limit",
  "rate_limit.window",
  "rate_limit.unit",
  "credits.remaining",
  "credits.refill.amount",
  "credits.refill.interval",
  "credits.low_threshold",
] as const;

export function draftOf(key?: ApiKey): LimitsDraft {
  const rate = key?.rateLimit;
  const credits = key?.credits;
  const window = splitDuration(rate?.window);
  const every = splitDuration(credits?.refill?.interval);
  return {
    rateOn: !!rate,
    limit: rate ? String(rate.limit) : "",
    window: window.amount || "1",
    windowUnit: rate ? window.unit : "minutes",
    unit: String(rate?.unit === RateLimitUnit.CREDITS ? RateLimitUnit.CREDITS : RateLimitUnit.CALLS),
    creditsOn: !!credits,
    remaining: credits ? String(credits.remaining) : "",
    refillOn: !!credits?.refill,
    refillAmount: credits?.refill ? String(credits.refill.amount) : "",
    refillEvery: every.amount || "1",
    refillUnit: credits?.refill ? every.unit : "days",
    lowThreshold: credits?.lowThreshold ? String(credits.lowThreshold) : "",
  };
}

// Empty or malformed numbers go as 0: the server's range check then names
// the field ("must be from 1 to ...").
const int = (text: string) => parseInteger(text) ?? 0n;

export function rateLimitOf(d: LimitsDraft): RateLimit | undefined {
  if (!d.rateOn) return undefined;
  return create(RateLimitSchema, {
    limit: int(d.limit),
    window: duration(Number(int(d.window)), d.windowUnit),
    unit: Number(d.unit) as RateLimitUnit,
  });
}

export function creditsOf(d: LimitsDraft): Credits | undefined {
  if (!d.creditsOn) return undefined;
  return create(CreditsSchema, {
    remaining: int(d.remaining),
    refill: d.refillOn ? { amount: int(d.refillAmount), interval: duration(Number(int(d.refillEvery)), d.refillUnit) } : undefined,
    lowThreshold: int(d.lowThreshold),
  });
}

/** The update_mask paths for what changed between two drafts: the
 * narrowest ones, so that saving a new refill does not also set the
 * balance read minutes ago (spends since would be lost). */
export function limitPaths(before: LimitsDraft, after: LimitsDraft): string[] {
  const paths: string[] = [];
  const seconds = (amount: string, unit: UnitLabel) => Number(duration(Number(int(amount)), unit).seconds);
  const rateChanged =
    before.rateOn !== after.rateOn ||
    (after.rateOn &&
      (int(before.limit) !== int(after.limit) ||
        seconds(before.window, before.windowUnit) !== seconds(after.window, after.windowUnit) ||
        before.unit !== after.unit));
  if (rateChanged) paths.push("rate_limit");
  if (before.creditsOn !== after.creditsOn) {
    paths.push("credits");
  } else if (after.creditsOn) {
    if (int(before.remaining) !== int(after.remaining)) paths.push("credits.remaining");
    const refillChanged =
      before.refillOn !== after.refillOn ||
      (after.refillOn &&
        (int(before.refillAmount) !== int(after.refillAmount) ||
          seconds(before.refillEvery, before.refillUnit) !== seconds(after.refillEvery, after.refillUnit)));
    if (refillChanged) paths.push("credits.refill");
    if (int(before.lowThreshold) !== int(after.lowThreshold)) paths.push("credits.low_threshold");
  }
  return paths;
}

const UNIT_OPTIONS = UNITS.map((u) => ({ value: u.label, label: u.label }));

/** A number and its unit; the violation of the Duration lands on both. */
function DurationField(props: {
  form: Form;
  name: string;
  label: string;
  hint?: string;
  amount: string;
  unit: UnitLabel;
  onAmount(value: string): void;
  onUnit(unit: UnitLabel): void;
}) {
  const { form, name, label } = props;
  return (
    <Field form={form} name={name} label={label} hint={props.hint}>
      {(a11y) => (
        <div class="duration">
          <input {...a11y} type="number" min="1" step="1" inputMode="numeric" value={props.amount} onInput={(e) => props.onAmount(e.currentTarget.value)} />
          <Select
            aria-label={`${label} unit`}
            value={props.unit}
            options={UNIT_OPTIONS}
            onValue={(v) => props.onUnit(v as UnitLabel)}
          />
        </div>
      )}
    </Field>
  );
}

export function LimitsFields({ form, draft, onDraft }: { form: Form; draft: LimitsDraft; onDraft(d: LimitsDraft): void }) {
  const set = <K extends keyof LimitsDraft>(key: K) => (value: LimitsDraft[K]) => onDraft({ ...draft, [key]: value });
  return (
    <>
      <fieldset>
        <legend>Rate limit</legend>
        <Checkbox label="Limit how often the key may be verified" checked={draft.rateOn} onChecked={set("rateOn")} />
        {draft.rateOn && (
          <div class="row">
            <TextField form={form} name="rate_limit.limit" label="Limit" hint="1 to 1,000,000 calls (or 1,000,000,000 credits)." type="number" min="1" inputMode="numeric" value={draft.limit} onValue={set("limit")} />
            <DurationField
              form={form}
              name="rate_limit.window"
              label="Per window of"
              hint="1 second to 1 day."
              amount={draft.window}
              unit={draft.windowUnit}
              onAmount={set("window")}
              onUnit={set("windowUnit")}
            />
            <Field form={form} name="rate_limit.unit" label="Counting">
              {(a11y) => (
                <Select
                  {...a11y}
                  value={draft.unit}
                  options={[
                    { value: String(RateLimitUnit.CALLS), label: "calls" },
                    { value: String(RateLimitUnit.CREDITS), label: "credits (each call's cost)" },
                  ]}
                  onValue={set("unit")}
                />
              )}
            </Field>
          </div>
        )}
      </fieldset>
      <fieldset>
        <legend>Credits</legend>
        <Checkbox label="Limit the credits the key may spend" checked={draft.creditsOn} onChecked={set("creditsOn")} />
        {draft.creditsOn && (
          <>
            <div class="row">
              <TextField form={form} name="credits.remaining" label="Balance" hint="Credits left, 0 to 1,000,000,000,000." type="number" min="0" inputMode="numeric" value={draft.remaining} onValue={set("remaining")} />
              <TextField form={form} name="credits.low_threshold" label="Low balance warning at" hint="Optional: an event when the balance falls to it." type="number" min="0" inputMode="numeric" value={draft.lowThreshold} onValue={set("lowThreshold")} />
            </div>
            <Checkbox label="Refill the balance periodically" checked={draft.refillOn} onChecked={set("refillOn")} />
            {draft.refillOn && (
              <div class="row">
                <TextField form={form} name="credits.refill.amount" label="Refill to" type="number" min="1" inputMode="numeric" value={draft.refillAmount} onValue={set("refillAmount")} />
                <DurationField
                  form={form}
                  name="credits.refill.interval"
                  label="Every"
                  hint="1 minute to 366 days."
                  amount={draft.refillEvery}
                  unit={draft.refillUnit}
                  onAmount={set("refillEvery")}
                  onUnit={set("refillUnit")}
                />
              </div>
            )}
          </>
        )}
      </fieldset>
    </>
  );
}
