// The audit log (AuditService.ListAuditEvents), newest first, paged, with
// every filter the RPC takes: action, actor, target type and id,
// organization, and a time range.

import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import { FormProblem, onSubmit, SelectField, Submit, TextField, useForm } from "../components/forms";
import { Pager, usePaged } from "../components/paging";
import { Table } from "../components/table";
import { useApp, useTitle } from "../context";
import { AuditOutcome, type AuditEvent } from "../gen/chatbot/v1/audit_service_pb";
import { fromLocalInput, shortId, timestamp, when } from "../lib/format";

const PAGE_SIZE = 25;

const TARGET_TYPES = ["", "user", "chatbot", "api_key", "organization", "member", "invitation", "service_account", "webhook", "rpc"];

interface Filters {
  action: string;
  actorUserId: string;
  targetType: string;
  targetId: string;
  organizationId: string;
  from: string;
  to: string;
}

export function AuditView() {
  const app = useApp();
  useTitle("Audit log");
  const initial: Filters = { action: "", actorUserId: "", targetType: "", targetId: "", organizationId: app.org.id, from: "", to: "" };
  const [draft, setDraft] = useState(initial);
  const [applied, setApplied] = useState(initial);
  const form = useForm(["action", "actor_user_id", "target_type", "target_id", "organization_id", "start_time", "end_time"]);

  const paged = usePaged(JSON.stringify(applied), async (pageToken) => {
    const start = fromLocalInput(applied.from);
    const end = fromLocalInput(applied.to);
    const page = await api.audit.listAuditEvents({
      pageSize: PAGE_SIZE,
      pageToken,
      action: applied.action.trim(),
      actorUserId: applied.actorUserId.trim(),
      targetType: applied.targetType,
      targetId: applied.targetId.trim(),
      organizationId: applied.organizationId,
      startTime: start === undefined ? undefined : timestamp(start),
      endTime: end === undefined ? undefined : timestamp(end),
    });
    return { items: page.auditEvents, next: page.nextPageToken };
  });
  // A bad filter is INVALID_ARGUMENT naming it: shown on the form, under
  // the filter it names.
  useEffect(() => form.setProblem(paged.problem), [paged.problem]);
  const set = (key: keyof Filters) => (value: string) => setDraft({ ...draft, [key]: value });

  return (
    <>
      <h1 tabIndex={-1}>Audit log</h1>
      <p class="lead">Every change, who made it and how it ended, newest first.</p>
      <form
        class="card filters"
        aria-label="Filters"
        noValidate
        onSubmit={onSubmit(() => {
          form.setProblem(null);
          setApplied(draft);
        })}
      >
        <FormProblem form={form} />
        <div class="row">
          <TextField form={form} name="action" label="Action" hint="For example chatbot.create or api_key.revoke." value={draft.action} onValue={set("action")} />
          <SelectField
            form={form}
            name="organization_id"
            label="Organization"
            value={draft.organizationId}
            options={[{ value: "", label: "All of mine" }, ...app.orgs.map((o) => ({ value: o.id, label: o.name }))]}
            onValue={set("organizationId")}
          />
          <SelectField
            form={form}
            name="target_type"
            label="Target type"
            value={draft.targetType}
            options={TARGET_TYPES.map((t) => ({ value: t, label: t || "Any" }))}
            onValue={set("targetType")}
          />
          <TextField form={form} name="target_id" label="Target id" hint="With a target type." value={draft.targetId} onValue={set("targetId")} />
          <TextField form={form} name="actor_user_id" label="Actor user id" value={draft.actorUserId} onValue={set("actorUserId")} />
          <TextField form={form} name="start_time" label="From" type="datetime-local" value={draft.from} onValue={set("from")} />
          <TextField form={form} name="end_time" label="Before" type="datetime-local" value={draft.to} onValue={set("to")} />
        </div>
        <div class="actions">
          <Submit form={form}>Apply filters</Submit>
          <button
            type="button"
            onClick={() => {
              setDraft(initial);
              setApplied(initial);
            }}
          >
            Clear
          </button>
        </div>
      </form>
      {paged.items === null ? (
        <p>Loading events…</p>
      ) : paged.items.length === 0 ? (
        <p>No events match.</p>
      ) : (
        <Table caption="Audit events" class="audit">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Action</th>
              <th scope="col">Actor</th>
              <th scope="col">Target</th>
              <th scope="col">Outcome</th>
              <th scope="col" class="opt">
                Changes
              </th>
            </tr>
          </thead>
          <tbody>
            {paged.items.map((e) => (
              <EventRow key={String(e.id)} event={e} />
            ))}
          </tbody>
        </Table>
      )}
      <Pager paged={paged} label="Audit log pages" />
    </>
  );
}

function EventRow({ event: e }: { event: AuditEvent }) {
  const actor = e.actor;
  const who = actor?.email || actor?.serviceAccountName || actor?.command || (actor?.userId ? shortId(actor.userId) : "—");
  const denied = e.outcome === AuditOutcome.DENIED;
  return (
    <tr>
      <td>
        {when(e.createTime ?? e.lastTime)}
        {e.repeats > 1n && <span class="repeats"> ×{String(e.repeats)}</span>}
      </td>
      <td>
        <code>{e.action}</code>
      </td>
      <td title={actor?.userId || actor?.serviceAccountId || undefined}>
        {who}
        {actor?.serviceAccountId && " (service account)"}
      </td>
      <td title={e.target?.id || undefined}>
        {e.target?.type}
        {e.target?.id ? ` ${shortId(e.target.id)}` : ""}
      </td>
      <td>
        <span class={`state ${denied ? "state-bad" : "state-ok"}`}>{denied ? "Denied" : "Succeeded"}</span>
      </td>
      <td class="opt changes">
        {e.changes.length === 0
          ? "—"
          : e.changes.map((c) => (
              <div key={c.field}>
                <code>{c.field}</code>
                {/* Some actions record only which fields changed. */}
                {(c.oldValue || c.newValue) && `: ${c.oldValue || "∅"} → ${c.newValue || "∅"}`}
              </div>
            ))}
      </td>
    </tr>
  );
}
