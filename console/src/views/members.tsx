// The current organization's people and credentials: members (owners
// change roles and remove; anyone may leave a team), invitations and
// service accounts (owners only; their tokens shown once).

import { useState } from "preact/hooks";
import { api } from "../api/client";
import { problemOf, type Problem } from "../api/errors";
import { SecretDialog, useConfirm, type OneTimeSecret } from "../components/dialog";
import { FormProblem, onSubmit, ProblemNote, Select, SelectField, Submit, TextField, useForm } from "../components/forms";
import { Pager, usePaged } from "../components/paging";
import { Table } from "../components/table";
import { useApp, useTitle } from "../context";
import { OrganizationRole, type Member } from "../gen/chatbot/v1/organization_pb";
import { duration, fromLocalInput, isPast, parseInteger, shortId, timestamp, when } from "../lib/format";
import { ROLE_LABELS } from "../lib/roles";

const PAGE_SIZE = 50;

const roleOptions = (roles: OrganizationRole[]) => roles.map((r) => ({ value: String(r), label: ROLE_LABELS[r] }));
const ALL_ROLES = [OrganizationRole.VIEWER, OrganizationRole.EDITOR, OrganizationRole.OWNER];

export function MembersView() {
  const app = useApp();
  useTitle("Members");
  const [secret, setSecret] = useState<OneTimeSecret | null>(null);
  return (
    <>
      <h1 tabIndex={-1}>Members</h1>
      <p class="lead">
        Who belongs to {app.org.name}
        {app.org.personal ? " (your personal organization: only you)" : ""}.
      </p>
      <MembersSection />
      {app.can.manage && !app.org.personal && <InvitationsSection onSecret={setSecret} />}
      {app.can.manage && <ServiceAccountsSection onSecret={setSecret} />}
      {secret && <SecretDialog secret={secret} onClose={() => setSecret(null)} />}
    </>
  );
}

function MembersSection() {
  const app = useApp();
  const [problem, setProblem] = useState<Problem | null>(null);
  const [confirmDialog, ask] = useConfirm();
  const paged = usePaged(`members:${app.org.id}`, async (pageToken) => {
    const page = await api.orgs.listMembers({ organizationId: app.org.id, pageSize: PAGE_SIZE, pageToken });
    return { items: page.members, next: page.nextPageToken };
  });
  const manage = app.can.manage && !app.org.personal;

  const act = async (action: () => Promise<void>) => {
    try {
      await action();
      setProblem(null);
      paged.reload();
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  const changeRole = (m: Member, role: OrganizationRole) =>
    act(async () => {
      await api.orgs.updateMember({ member: { organizationId: m.organizationId, userId: m.userId, role }, updateMask: { paths: ["role"] } });
      app.notify(`${m.email || "Member"} is now ${ROLE_LABELS[role].toLowerCase()}.`);
      if (m.userId === app.user.id) await app.switchOrg(app.org.id);
    });

  const remove = async (m: Member) => {
    const self = m.userId === app.user.id;
    const yes = await ask({
      title: self ? `Leave ${app.org.name}?` : `Remove ${m.email || shortId(m.userId)}?`,
      body: <p>{self ? "You lose access to its chatbots and keys at once." : "They lose access to its chatbots and keys at once."}</p>,
      confirm: self ? "Leave" : "Remove member",
      danger: true,
    });
    if (!yes) return;
    await act(async () => {
      await api.orgs.removeMember({ organizationId: m.organizationId, userId: m.userId });
      if (self) {
        app.notify(`You left ${app.org.name}.`);
        await app.reloadOrgs(app.user.id);
      } else {
        app.notify("Member removed.");
      }
    });
  };

  return (
    <section aria-labelledby="members-heading">
      <h2 id="members-heading">People</h2>
      <ProblemNote problem={problem ?? paged.problem} />
      {paged.items === null ? (
        <p>Loading members…</p>
      ) : (
        <Table caption="Members">
          <thead>
            <tr>
              <th scope="col">Member</th>
              <th scope="col">Role</th>
              <th scope="col" class="opt">
                Joined
              </th>
              {!app.org.personal && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {paged.items.map((m) => (
              <MemberRow key={m.userId} member={m} manage={manage} onRole={changeRole} onRemove={remove} />
            ))}
          </tbody>
        </Table>
      )}
      <Pager paged={paged} label="Member pages" />
      {confirmDialog}
    </section>
  );
}

function MemberRow(props: { member: Member; manage: boolean; onRole(m: Member, role: OrganizationRole): void; onRemove(m: Member): void }) {
  const app = useApp();
  const m = props.member;
  // The role is chosen, then applied with the button: a select that acted
  // on change would apply every role the arrow keys pass through.
  const [role, setRole] = useState(String(m.role));
  const self = m.userId === app.user.id;
  const label = m.email || `User ${shortId(m.userId)}`;
  return (
    <tr>
      <th scope="row" title={m.userId}>
        {label}
        {self && " (you)"}
      </th>
      <td>
        {props.manage ? (
          <div class="inline">
            <Select aria-label={`Role of ${label}`} value={role} options={roleOptions(ALL_ROLES)} onValue={setRole} />
            {role !== String(m.role) && (
              <button type="button" onClick={() => props.onRole(m, Number(role) as OrganizationRole)}>
                Change role
              </button>
            )}
          </div>
        ) : (
          ROLE_LABELS[m.role]
        )}
      </td>
      <td class="opt">{when(m.createTime)}</td>
      {!app.org.personal && (
        <td class="row-actions">
          {(props.manage || self) && (
            <button type="button" class="danger" onClick={() => props.onRemove(m)} aria-label={self ? "Leave the organization" : `Remove ${label}`}>
              {self ? "Leave" : "Remove"}
            </button>
          )}
        </td>
      )}
    </tr>
  );
}

function InvitationsSection({ onSecret }: { onSecret(s: OneTimeSecret): void }) {
  const app = useApp();
  const form = useForm(["email", "role", "ttl"]);
  const [email, setEmail] = useState("");
  const [role, setRole] = useState(String(OrganizationRole.VIEWER));
  const [days, setDays] = useState("7");
  const [problem, setProblem] = useState<Problem | null>(null);
  const [confirmDialog, ask] = useConfirm();
  const paged = usePaged(`invitations:${app.org.id}`, async (pageToken) => {
    const page = await api.orgs.listInvitations({ organizationId: app.org.id, pageSize: PAGE_SIZE, pageToken });
    return { items: page.invitations, next: page.nextPageToken };
  });

  const invite = () =>
    form.run(async () => {
      const r = await api.orgs.createInvitation({
        organizationId: app.org.id,
        email,
        role: Number(role) as OrganizationRole,
        ttl: duration(Number(parseInteger(days) ?? 0n), "days"),
      });
      setEmail("");
      paged.reload();
      onSecret({
        title: `Invitation for ${r.invitation?.email ?? email}`,
        what: "invitation token",
        value: r.token,
        note: "Hand it to them: signed in with that email, they accept it under Organizations, Join with an invitation.",
      });
    });

  const withdraw = async (id: string, who: string) => {
    const yes = await ask({ title: `Withdraw the invitation for ${who}?`, body: <p>Its token stops working.</p>, confirm: "Withdraw", danger: true });
    if (!yes) return;
    try {
      await api.orgs.deleteInvitation({ id });
      setProblem(null);
      app.notify("Invitation withdrawn.");
      paged.reload();
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  return (
    <section aria-labelledby="invitations-heading">
      <h2 id="invitations-heading">Invitations</h2>
      <form class="card" onSubmit={onSubmit(() => void invite())} noValidate aria-label="Invite someone">
        <FormProblem form={form} />
        <div class="row">
          <TextField form={form} name="email" label="Email to invite" type="email" autocomplete="off" value={email} onValue={setEmail} />
          <SelectField form={form} name="role" label="Role" value={role} options={roleOptions(ALL_ROLES)} onValue={setRole} />
          <TextField form={form} name="ttl" label="Valid for (days)" type="number" min="1" max="30" value={days} onValue={setDays} />
        </div>
        <div class="actions">
          <Submit form={form}>Invite</Submit>
        </div>
      </form>
      <ProblemNote problem={problem ?? paged.problem} />
      {paged.items && paged.items.length > 0 ? (
        <Table caption="Open invitations">
          <thead>
            <tr>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">Expires</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {paged.items.map((i) => (
              <tr key={i.id}>
                <th scope="row">{i.email}</th>
                <td>{ROLE_LABELS[i.role]}</td>
                <td>
                  {when(i.expireTime)}
                  {isPast(i.expireTime) && " (expired)"}
                </td>
                <td class="row-actions">
                  <button type="button" class="danger" onClick={() => withdraw(i.id, i.email)} aria-label={`Withdraw the invitation for ${i.email}`}>
                    Withdraw
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </Table>
      ) : (
        paged.items && <p>No open invitations.</p>
      )}
      <Pager paged={paged} label="Invitation pages" />
      {confirmDialog}
    </section>
  );
}

function ServiceAccountsSection({ onSecret }: { onSecret(s: OneTimeSecret): void }) {
  const app = useApp();
  const form = useForm(["name", "role", "expire_time"]);
  const [name, setName] = useState("");
  const [role, setRole] = useState(String(OrganizationRole.EDITOR));
  const [expiry, setExpiry] = useState("");
  const [problem, setProblem] = useState<Problem | null>(null);
  const [confirmDialog, ask] = useConfirm();
  const paged = usePaged(`service-accounts:${app.org.id}`, async (pageToken) => {
    const page = await api.orgs.listServiceAccounts({ organizationId: app.org.id, pageSize: PAGE_SIZE, pageToken });
    return { items: page.serviceAccounts, next: page.nextPageToken };
  });

  const createAccount = () =>
    form.run(async () => {
      const expireMs = fromLocalInput(expiry);
      const r = await api.orgs.createServiceAccount({
        organizationId: app.org.id,
        name,
        role: Number(role) as OrganizationRole,
        expireTime: expireMs === undefined ? undefined : timestamp(expireMs),
      });
      setName("");
      setExpiry("");
      paged.reload();
      onSecret({
        title: `Service account ${r.serviceAccount?.name ?? name} created`,
        what: "service account token",
        value: r.token,
        note: "The service sends it as authorization: Bearer <token>.",
      });
    });

  const act = async (confirmText: { title: string; body: string; confirm: string }, action: () => Promise<void>) => {
    const yes = await ask({ ...confirmText, body: <p>{confirmText.body}</p>, danger: true });
    if (!yes) return;
    try {
      await action();
      setProblem(null);
      paged.reload();
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  return (
    <section aria-labelledby="service-accounts-heading">
      <h2 id="service-accounts-heading">Service accounts</h2>
      <p class="hint">Credentials for other services (provisioning, billing), held by no person, acting here with their role.</p>
      <form class="card" onSubmit={onSubmit(() => void createAccount())} noValidate aria-label="New service account">
        <FormProblem form={form} />
        <div class="row">
          <TextField form={form} name="name" label="Service account name" value={name} onValue={setName} />
          <SelectField
            form={form}
            name="role"
            label="Service account role"
            value={role}
            options={roleOptions([OrganizationRole.EDITOR, OrganizationRole.VIEWER])}
            onValue={setRole}
          />
          <TextField form={form} name="expire_time" label="Token expires" hint="Optional: empty means never." type="datetime-local" value={expiry} onValue={setExpiry} />
        </div>
        <div class="actions">
          <Submit form={form}>Create service account</Submit>
        </div>
      </form>
      <ProblemNote problem={problem ?? paged.problem} />
      {paged.items && paged.items.length > 0 ? (
        <Table caption="Service accounts">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Token</th>
              <th scope="col">State</th>
              <th scope="col" class="opt">
                Last used
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {paged.items.map((s) => {
              const revoked = !!s.revokeTime;
              const expired = isPast(s.expireTime);
              return (
                <tr key={s.id}>
                  <th scope="row">{s.name}</th>
                  <td>{ROLE_LABELS[s.role]}</td>
                  <td>
                    <code>{s.tokenPrefix}</code>
                  </td>
                  <td>
                    <span class={`state ${revoked || expired ? "state-bad" : "state-ok"}`}>
                      {revoked ? "Revoked" : expired ? "Expired" : s.expireTime ? `Active until ${when(s.expireTime)}` : "Active"}
                    </span>
                  </td>
                  <td class="opt">{when(s.lastUseTime, "Never")}</td>
                  <td class="row-actions">
                    {!revoked && (
                      <button
                        type="button"
                        class="danger"
                        aria-label={`Revoke ${s.name}`}
                        onClick={() =>
                          act({ title: `Revoke ${s.name}?`, body: "Its token stops working at its next call.", confirm: "Revoke" }, async () => {
                            await api.orgs.revokeServiceAccount({ id: s.id });
                            app.notify(`${s.name} revoked.`);
                          })
                        }
                      >
                        Revoke
                      </button>
                    )}
                    <button
                      type="button"
                      class="danger"
                      aria-label={`Delete ${s.name}`}
                      onClick={() =>
                        act({ title: `Delete ${s.name}?`, body: "What it created stays.", confirm: "Delete" }, async () => {
                          await api.orgs.deleteServiceAccount({ id: s.id });
                          app.notify(`${s.name} deleted.`);
                        })
                      }
                    >
                      Delete
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </Table>
      ) : (
        paged.items && <p>No service accounts.</p>
      )}
      <Pager paged={paged} label="Service account pages" />
      {confirmDialog}
    </section>
  );
}
