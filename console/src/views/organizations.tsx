// The caller's organizations: switch, create a team (the caller becomes
// its owner), join one with an invitation's token (AcceptInvitation).

import { useState } from "preact/hooks";
import { api } from "../api/client";
import { FormProblem, onSubmit, Submit, TextField, useForm } from "../components/forms";
import { Table } from "../components/table";
import { useApp, useTitle } from "../context";
import { when } from "../lib/format";
import { ROLE_LABELS } from "../lib/roles";

export function OrganizationsView() {
  const app = useApp();
  useTitle("Organizations");
  return (
    <>
      <h1 tabIndex={-1}>Organizations</h1>
      <p class="lead">
        You work in {app.org.name} as {ROLE_LABELS[app.role].toLowerCase()}. Chatbots and their keys belong to an organization.
      </p>
      <Table caption="Your organizations">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Kind</th>
            <th scope="col" class="opt">
              Created
            </th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {app.orgs.map((o) => (
            <tr key={o.id}>
              <th scope="row">{o.name}</th>
              <td>{o.personal ? "Personal" : "Team"}</td>
              <td class="opt">{when(o.createTime)}</td>
              <td class="row-actions">
                {o.id === app.org.id ? (
                  <span class="state state-ok">Current</span>
                ) : (
                  <button type="button" onClick={() => void app.switchOrg(o.id)} aria-label={`Switch to ${o.name}`}>
                    Switch
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </Table>
      <div class="columns">
        <CreateTeam />
        <JoinTeam />
      </div>
    </>
  );
}

function CreateTeam() {
  const app = useApp();
  const form = useForm(["name"]);
  const [name, setName] = useState("");
  const submit = () =>
    form.run(async () => {
      const { organization } = await api.orgs.createOrganization({ name });
      setName("");
      if (organization) await app.reloadOrgs(organization.id);
    });
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="create-team-heading">
      <h2 id="create-team-heading">Create a team</h2>
      <FormProblem form={form} />
      <TextField form={form} name="name" label="Team name" hint="1 to 100 characters. You become its owner." value={name} onValue={setName} />
      <div class="actions">
        <Submit form={form}>Create team</Submit>
      </div>
    </form>
  );
}

function JoinTeam() {
  const app = useApp();
  const form = useForm(["token"]);
  const [token, setToken] = useState("");
  const submit = () =>
    form.run(async () => {
      const { member } = await api.orgs.acceptInvitation({ token: token.trim() });
      setToken("");
      if (member) await app.reloadOrgs(member.organizationId);
    });
  return (
    <form class="card" onSubmit={onSubmit(() => void submit())} noValidate aria-labelledby="join-team-heading">
      <h2 id="join-team-heading">Join with an invitation</h2>
      <FormProblem form={form} />
      <TextField
        form={form}
        name="token"
        label="Invitation token"
        hint="The cbi_… token an owner gave you; sign in with the email it was sent to."
        autocomplete="off"
        spellcheck={false}
        value={token}
        onValue={setToken}
      />
      <div class="actions">
        <Submit form={form}>Join</Submit>
      </div>
    </form>
  );
}
