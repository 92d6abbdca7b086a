// One API key: what it is, its name and expiry, its rate limit and credits
// (UpdateApiKey with the narrowest update_mask), a top-up (credits_to_add),
// revoke, rotate with a grace period (the new secret shown once) and
// delete; and its usage.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import { localViolation, problemOf, type Problem } from "../api/errors";
import { Dialog, SecretDialog, useConfirm, type OneTimeSecret } from "../components/dialog";
import { Field, FormProblem, onSubmit, ProblemNote, Select, Submit, TextField, useForm } from "../components/forms";
import { creditsOf, draftOf, LIMIT_INPUTS, limitPaths, LimitsFields, rateLimitOf } from "../components/limits";
import { UsagePanel, type UsageLoader } from "../components/usage";
import { useApp, useTitle } from "../context";
import type { ApiKey } from "../gen/chatbot/v1/api_key_pb";
import type { Chatbot } from "../gen/chatbot/v1/chatbot_pb";
import { count, duration, fromLocalInput, millis, parseInteger, timestamp, toLocalInput, UNITS, when, type UnitLabel } from "../lib/format";
import { href, navigate } from "../lib/router";
import { useFollowOrganization } from "./chatbot";
import { creditsText, keyState, rateText } from "./keys";

export function KeyView({ chatbotId, id }: { chatbotId: string; id: bigint }) {
  const app = useApp();
  const [key, setKey] = useState<ApiKey | null>(null);
  const [chatbot, setChatbot] = useState<Chatbot | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [secret, setSecret] = useState<OneTimeSecret | null>(null);
  const [rotating, setRotating] = useState(false);
  const [replacement, setReplacement] = useState<ApiKey | null>(null);
  const [confirmDialog, ask] = useConfirm();
  const name = key ? key.displayName || `Key ${key.id}` : "API key";
  useTitle(name);

  useEffect(() => {
    api.keys.getApiKey({ id }).then(
      (r) => setKey(r.apiKey ?? null),
      (e) => setProblem(problemOf(e)),
    );
    // For its name and organization; the key's own errors say enough.
    api.chatbots.getChatbot({ id: chatbotId }).then(
      (r) => setChatbot(r.chatbot ?? null),
      () => undefined,
    );
  }, [id, chatbotId]);
  useFollowOrganization(chatbot?.organizationId);

  const loadUsage: UsageLoader = useCallback((startTime, endTime) => api.keys.getApiKeyUsage({ apiKeyId: id, startTime, endTime }), [id]);

  const act = async (action: () => Promise<void>) => {
    try {
      await action();
      setProblem(null);
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  const revoke = async () => {
    const yes = await ask({
      title: `Revoke ${name}?`,
      body: <p>The key stops working at once, on every replica; this cannot be undone.</p>,
      confirm: "Revoke key",
      danger: true,
    });
    if (yes) {
      await act(async () => {
        const r = await api.keys.revokeApiKey({ id });
        setKey(r.apiKey ?? null);
        app.notify(`${name} revoked.`);
      });
    }
  };

  const remove = async () => {
    const yes = await ask({
      title: `Delete ${name}?`,
      body: <p>The key is deleted: verifying it answers NOT_FOUND. Its usage stays in the chatbot's.</p>,
      confirm: "Delete key",
      danger: true,
    });
    if (yes) {
      await act(async () => {
        await api.keys.deleteApiKey({ id });
        app.notify(`${name} deleted.`);
        navigate({ name: "chatbot", id: chatbotId });
      });
    }
  };

  const live = key && !key.revoked && !(millis(key.expireTime) !== undefined && millis(key.expireTime)! <= Date.now());

  return (
    <>
      <p class="crumbs">
        <a href="#/chatbots">Chatbots</a> / <a href={href({ name: "chatbot", id: chatbotId })}>{chatbot?.name ?? "Chatbot"}</a> /
      </p>
      <div class="page-head">
        <h1 tabIndex={-1}>{name}</h1>
        {key && app.can.edit && (
          <div class="row-actions">
            {live && (
              <button type="button" onClick={() => setRotating(true)}>
                Rotate…
              </button>
            )}
            {!key.revoked && (
              <button type="button" class="danger" onClick={revoke}>
                Revoke
              </button>
            )}
            <button type="button" class="danger" onClick={remove}>
              Delete
            </button>
          </div>
        )}
      </div>
      <ProblemNote problem={problem} />
      {replacement && (
        <p class="note">
          Replaced by <a href={href({ name: "key", chatbotId, id: replacement.id })}>{replacement.displayName || `key ${replacement.id}`}</a> (
          <code>{replacement.keyPrefix}</code>).
        </p>
      )}
      {key && (
        <>
          <KeyFacts apiKey={key} />
          {app.can.edit && (
            <>
              <DetailsForm apiKey={key} onSaved={setKey} />
              <LimitsForm apiKey={key} onSaved={setKey} />
              {key.credits && <TopUpForm apiKey={key} onSaved={setKey} />}
            </>
          )}
          <UsagePanel load={loadUsage} source={`key:${id}`} subject={`key ${name}`} />
        </>
      )}
      {rotating && key && (
        <RotateDialog
          apiKey={key}
          onClose={() => setRotating(false)}
          onRotated={(previous, next, value) => {
            setRotating(false);
            setKey(previous);
            setReplacement(next);
            setSecret({
              title: `${name} rotated`,
              what: "secret key",
              value,
              note: `The new key replaces ${previous.keyPrefix}, which works until ${when(previous.expireTime, "now")}.`,
            });
          }}
        />
      )}
      {secret && <SecretDialog secret={secret} onClose={() => setSecret(null)} />}
      {confirmDialog}
    </>
  );
}

function KeyFacts({ apiKey: k }: { apiKey: ApiKey }) {
  const state = keyState(k);
  return (
    <dl class="facts">
      <dt>State</dt>
      <dd>
        <span class={`state ${state.cls}`}>{state.label}</span>
      </dd>
      <dt>Prefix</dt>
      <dd>
        <code>{k.keyPrefix}</code>
      </dd>
      <dt>Created</dt>
      <dd>{when(k.createTime)}</dd>
      <dt>Expires</dt>
      <dd>{when(k.expireTime, "Never")}</dd>
      {k.revoked && (
        <>
          <dt>Revoked</dt>
          <dd>{when(k.revokeTime)}</dd>
        </>
      )}
      <dt>Last used</dt>
      <dd>{when(k.lastUsedTime, "Never")}</dd>
      <dt>Rate limit</dt>
      <dd data-testid="rate-limit">{rateText(k)}</dd>
      <dt>Credits</dt>
      <dd data-testid="credits">{creditsText(k)}</dd>
      {k.credits?.nextRefillTime && (
        <>
          <dt>Next refill</dt>
          <dd>{when(k.credits.nextRefillTime)}</dd>
        </>
      )}
    </dl>
  );
}

function DetailsForm({ apiKey, onSaved }: { apiKey: ApiKey; onSaved(k: ApiKey): void }) {
  const app = useApp();
  const form = useForm(["display_name", "expire_time"], ["api_key"]);
  const [name, setName] = useState(apiKey.displayName);
  const [expiry, setExpiry] = useState(toLocalInput(millis(apiKey.expireTime)));
  const submit = () =>
    form.run(async () => {
      const paths: string[] = [];
      if (name !== apiKey.displayName) paths.push("display_name");
      if (expiry !== toLocalInput(millis(apiKey.expireTime))) paths.push("expire_time");
      if (paths.length === 0) return app.notify("Nothing changed.");
      const expireMs = fromLocalInput(expiry);
      const r = await api.keys.updateApiKey({
        apiKey: { id: apiKey.id, displayName: name, expireTime: expireMs === undefined ? undefined : timestamp(expireMs) },
        updateMask: { paths },
      });
      if (r.apiKey) onSaved(r.apiKey);
      app.notify("Key saved.");
    });
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="key-details-heading">
      <h2 id="key-details-heading">Name and expiry</h2>
      <FormProblem form={form} />
      <div class="row">
        <TextField form={form} name="display_name" label="Display name" value={name} onValue={setName} />
        <TextField form={form} name="expire_time" label="Expires" hint="Empty means never." type="datetime-local" value={expiry} onValue={setExpiry} />
      </div>
      <div class="actions">
        <Submit form={form}>Save name and expiry</Submit>
      </div>
    </form>
  );
}

function LimitsForm({ apiKey, onSaved }: { apiKey: ApiKey; onSaved(k: ApiKey): void }) {
  const app = useApp();
  const form = useForm(LIMIT_INPUTS, ["api_key"]);
  const [draft, setDraft] = useState(() => draftOf(apiKey));
  // After a save (or a top-up) the form starts from what the server has.
  useEffect(() => setDraft(draftOf(apiKey)), [apiKey]);
  const submit = () =>
    form.run(async () => {
      const paths = limitPaths(draftOf(apiKey), draft);
      if (paths.length === 0) return app.notify("Nothing changed.");
      const r = await api.keys.updateApiKey({
        apiKey: { id: apiKey.id, rateLimit: rateLimitOf(draft), credits: creditsOf(draft) },
        updateMask: { paths },
      });
      if (r.apiKey) onSaved(r.apiKey);
      app.notify("Limits saved.");
    });
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="limits-heading">
      <h2 id="limits-heading">Rate limit and credits</h2>
      <FormProblem form={form} />
      <LimitsFields form={form} draft={draft} onDraft={setDraft} />
      <div class="actions">
        <Submit form={form}>Save limits</Submit>
      </div>
    </form>
  );
}

function TopUpForm({ apiKey, onSaved }: { apiKey: ApiKey; onSaved(k: ApiKey): void }) {
  const app = useApp();
  const form = useForm(["credits_to_add"]);
  const [amount, setAmount] = useState("");
  const submit = () => {
    const add = parseInteger(amount);
    if (add === undefined || add <= 0n) {
      // 0 would mean "nothing to add" to the server, which then asks for an
      // update_mask: say what is missing here instead.
      form.setProblem(localViolation("credits_to_add", "enter how many credits to add (1 or more)"));
      return;
    }
    return form.run(async () => {
      // Added to the balance as it is when written, so spends meanwhile
      // are not lost (unlike setting the balance).
      const r = await api.keys.updateApiKey({
        apiKey: { id: apiKey.id },
        creditsToAdd: add,
      });
      if (r.apiKey) onSaved(r.apiKey);
      setAmount("");
      app.notify(`Added ${count(add)} credits: ${r.apiKey?.credits ? count(r.apiKey.credits.remaining) : "?"} left.`);
    });
  };
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="topup-heading">
      <h2 id="topup-heading">Top up</h2>
      <FormProblem form={form} />
      <div class="row">
        <TextField
          form={form}
          name="credits_to_add"
          label="Credits to add"
          hint="Added to the balance as it is then, 1 to 1,000,000,000,000."
          type="number"
          min="1"
          inputMode="numeric"
          value={amount}
          onValue={setAmount}
        />
        <div class="field submit-field">
          <Submit form={form}>Add credits</Submit>
        </div>
      </div>
    </form>
  );
}

function RotateDialog(props: { apiKey: ApiKey; onClose(): void; onRotated(previous: ApiKey, next: ApiKey, secret: string): void }) {
  const form = useForm(["grace_period"]);
  const [amount, setAmount] = useState("24");
  const [unit, setUnit] = useState<UnitLabel>("hours");
  const submit = () =>
    form.run(async () => {
      const r = await api.keys.rotateApiKey({ id: props.apiKey.id, gracePeriod: duration(Number(parseInteger(amount) ?? 0n), unit) });
      if (r.apiKey && r.previousApiKey) props.onRotated(r.previousApiKey, r.apiKey, r.key);
    });
  return (
    <Dialog title={`Rotate ${props.apiKey.displayName || props.apiKey.keyPrefix}`} onClose={props.onClose}>
      <form onSubmit={onSubmit(() => void submit())} noValidate>
        <p>A new key replaces this one, with the same limits, credits and permissions. The old key keeps working for the grace period, then stops.</p>
        <FormProblem form={form} />
        <Field form={form} name="grace_period" label="Grace period" hint="0 ends the old key at once; at most 30 days.">
          {(a11y) => (
            <div class="duration">
              <input {...a11y} type="number" min="0" step="1" inputMode="numeric" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
              <Select
                aria-label="Grace period unit"
                value={unit}
                options={UNITS.map((u) => ({ value: u.label, label: u.label }))}
                onValue={(v) => setUnit(v as UnitLabel)}
              />
            </div>
          )}
        </Field>
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <Submit form={form}>Rotate key</Submit>
        </div>
      </form>
    </Dialog>
  );
}
