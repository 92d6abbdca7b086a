// A chatbot's API keys: the list (paged, revoked ones on request) and the
// form that creates one. A new key's secret is shown once (SecretDialog)
// and held only while that dialog is open.

import { useState } from "preact/hooks";
import { api } from "../api/client";
import { SecretDialog, type OneTimeSecret } from "../components/dialog";
import { Checkbox, FormProblem, onSubmit, ProblemNote, Submit, TextField, useForm } from "../components/forms";
import { creditsOf, draftOf, LIMIT_INPUTS, LimitsFields, rateLimitOf } from "../components/limits";
import { Pager, usePaged } from "../components/paging";
import { Table } from "../components/table";
import { useApp } from "../context";
import { RateLimitUnit, type ApiKey } from "../gen/chatbot/v1/api_key_pb";
import type { Chatbot } from "../gen/chatbot/v1/chatbot_pb";
import { count, durationText, fromLocalInput, isPast, timestamp, when } from "../lib/format";
import { href } from "../lib/router";

const PAGE_SIZE = 20;

export function keyState(key: ApiKey): { label: string; cls: string } {
  if (key.revoked) return { label: "Revoked", cls: "state-bad" };
  if (isPast(key.expireTime)) return { label: "Expired", cls: "state-bad" };
  if (key.expireTime) return { label: "Active until expiry", cls: "state-warn" };
  return { label: "Active", cls: "state-ok" };
}

export function creditsText(key: ApiKey): string {
  const c = key.credits;
  if (!c) return "Unlimited";
  const refill = c.refill ? `, refilled to ${count(c.refill.amount)} every ${durationText(c.refill.interval)}` : "";
  return `${count(c.remaining)} left${refill}`;
}

export function rateText(key: ApiKey): string {
  const r = key.rateLimit;
  if (!r) return "None";
  return `${count(r.limit)} ${r.unit === RateLimitUnit.CREDITS ? "credits" : "calls"} per ${durationText(r.window)}`;
}

export function KeysSection({ chatbot }: { chatbot: Chatbot }) {
  const app = useApp();
  const [showRevoked, setShowRevoked] = useState(false);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<OneTimeSecret | null>(null);
  const paged = usePaged(`keys:${chatbot.id}:${showRevoked}`, async (pageToken) => {
    const page = await api.keys.listApiKeys({ chatbotId: chatbot.id, pageSize: PAGE_SIZE, pageToken, showRevoked });
    return { items: page.apiKeys, next: page.nextPageToken };
  });

  return (
    <section aria-labelledby="keys-heading">
      <div class="page-head">
        <h2 id="keys-heading">API keys</h2>
        {app.can.edit && !creating && (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New key
          </button>
        )}
      </div>
      {creating && (
        <CreateKeyForm
          chatbot={chatbot}
          onCancel={() => setCreating(false)}
          onCreated={(key, value) => {
            setCreating(false);
            setSecret({
              title: `Key ${key.displayName || key.keyPrefix} created`,
              what: "secret key",
              value,
              note: "Services present it to the chatbot; VerifyApiKey checks it.",
            });
            paged.reload();
          }}
        />
      )}
      <Checkbox label="Show revoked keys" checked={showRevoked} onChecked={setShowRevoked} />
      <ProblemNote problem={paged.problem} />
      {paged.items === null ? (
        <p>Loading keys…</p>
      ) : paged.items.length === 0 ? (
        <p>No keys{showRevoked ? "" : " in use"}.</p>
      ) : (
        <Table caption={`API keys of ${chatbot.name}`}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Prefix</th>
              <th scope="col">State</th>
              <th scope="col" class="opt">
                Expires
              </th>
              <th scope="col">Credits</th>
              <th scope="col" class="opt">
                Rate limit
              </th>
            </tr>
          </thead>
          <tbody>
            {paged.items.map((k) => {
              const state = keyState(k);
              return (
                <tr key={String(k.id)}>
                  <th scope="row">
                    <a href={href({ name: "key", chatbotId: chatbot.id, id: k.id })}>{k.displayName || `Key ${k.id}`}</a>
                  </th>
                  <td>
                    <code>{k.keyPrefix}</code>
                  </td>
                  <td>
                    <span class={`state ${state.cls}`}>{state.label}</span>
                  </td>
                  <td class="opt">{when(k.expireTime, "Never")}</td>
                  <td>{creditsText(k)}</td>
                  <td class="opt">{rateText(k)}</td>
                </tr>
              );
            })}
          </tbody>
        </Table>
      )}
      <Pager paged={paged} label="Key pages" />
      {secret && <SecretDialog secret={secret} onClose={() => setSecret(null)} />}
    </section>
  );
}

function CreateKeyForm(props: { chatbot: Chatbot; onCancel(): void; onCreated(key: ApiKey, secret: string): void }) {
  const form = useForm(["display_name", "expire_time", ...LIMIT_INPUTS]);
  const [name, setName] = useState("");
  const [expiry, setExpiry] = useState("");
  const [limits, setLimits] = useState(draftOf());
  const submit = () =>
    form.run(async () => {
      const expireMs = fromLocalInput(expiry);
      const response = await api.keys.createApiKey({
        chatbotId: props.chatbot.id,
        displayName: name,
        expireTime: expireMs === undefined ? undefined : timestamp(expireMs),
        rateLimit: rateLimitOf(limits),
        credits: creditsOf(limits),
      });
      // The secret goes straight to the dialog and nowhere else.
      if (response.apiKey) props.onCreated(response.apiKey, response.key);
    });
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="new-key-heading">
      <h3 id="new-key-heading">New key</h3>
      <FormProblem form={form} />
      <div class="row">
        <TextField form={form} name="display_name" label="Display name" hint="Optional, at most 100 characters." value={name} onValue={setName} />
        <TextField form={form} name="expire_time" label="Expires" hint="Optional: empty means never." type="datetime-local" value={expiry} onValue={setExpiry} />
      </div>
      <LimitsFields form={form} draft={limits} onDraft={setLimits} />
      <div class="actions">
        <Submit form={form}>Create key</Submit>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
