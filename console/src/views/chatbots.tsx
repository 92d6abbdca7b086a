// The current organization's chatbots: list (paged), create, delete; and
// the form a chatbot is created and edited with.

import { useState } from "preact/hooks";
import { api } from "../api/client";
import { problemOf } from "../api/errors";
import { useConfirm } from "../components/dialog";
import { FormProblem, onSubmit, ProblemNote, Submit, TextField, useForm } from "../components/forms";
import { Pager, usePaged } from "../components/paging";
import { Table } from "../components/table";
import { useApp, useTitle } from "../context";
import type { Chatbot } from "../gen/chatbot/v1/chatbot_pb";
import { when } from "../lib/format";
import { href } from "../lib/router";

const PAGE_SIZE = 20;

export function ChatbotsView() {
  const app = useApp();
  useTitle("Chatbots");
  const [creating, setCreating] = useState(false);
  const [confirmDialog, ask] = useConfirm();
  const [problem, setProblem] = useState<ReturnType<typeof problemOf> | null>(null);
  const paged = usePaged(`chatbots:${app.org.id}`, async (pageToken) => {
    const page = await api.chatbots.listChatbots({ organizationId: app.org.id, pageSize: PAGE_SIZE, pageToken });
    return { items: page.chatbots, next: page.nextPageToken };
  });

  const remove = async (chatbot: Chatbot) => {
    const yes = await ask({
      title: `Delete ${chatbot.name}?`,
      body: <p>The chatbot and all its API keys are deleted; services using those keys are refused at once.</p>,
      confirm: "Delete chatbot",
      danger: true,
    });
    if (!yes) return;
    try {
      await api.chatbots.deleteChatbot({ id: chatbot.id });
      setProblem(null);
      app.notify(`Chatbot ${chatbot.name} deleted.`);
      paged.reload();
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Chatbots</h1>
        {app.can.edit && !creating && (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New chatbot
          </button>
        )}
      </div>
      <p class="lead">The chatbots of {app.org.name}. Each fronts an LLM endpoint and has its own API keys.</p>
      {creating && (
        <section class="card" aria-labelledby="new-chatbot">
          <h2 id="new-chatbot">New chatbot</h2>
          <ChatbotForm
            submitLabel="Create chatbot"
            onCancel={() => setCreating(false)}
            save={async (fields) => {
              const { chatbot } = await api.chatbots.createChatbot({ organizationId: app.org.id, ...fields });
              setCreating(false);
              app.notify(`Chatbot ${chatbot?.name ?? ""} created.`);
              paged.reload();
            }}
          />
        </section>
      )}
      <ProblemNote problem={problem ?? paged.problem} />
      {paged.items === null ? (
        <p>Loading chatbots…</p>
      ) : paged.items.length === 0 ? (
        <p>No chatbots yet{app.can.edit ? ": create one with New chatbot." : "."}</p>
      ) : (
        <Table caption="Chatbots">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">LLM endpoint</th>
              <th scope="col" class="opt">
                Created
              </th>
              {app.can.edit && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {paged.items.map((c) => (
              <tr key={c.id}>
                <th scope="row">
                  <a href={href({ name: "chatbot", id: c.id })}>{c.name}</a>
                </th>
                <td class="url">{c.llmEndpointUrl}</td>
                <td class="opt">{when(c.createTime)}</td>
                {app.can.edit && (
                  <td class="row-actions">
                    <a class="button" href={href({ name: "chatbot", id: c.id })} aria-label={`Edit ${c.name}`}>
                      Edit
                    </a>
                    <button type="button" class="danger" aria-label={`Delete ${c.name}`} onClick={() => remove(c)}>
                      Delete
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <Pager paged={paged} label="Chatbot pages" />
      {confirmDialog}
    </>
  );
}

export interface ChatbotFields {
  name: string;
  llmEndpointUrl: string;
}

/** Name and LLM endpoint. `save` gets the values; what it throws is shown,
 * each field violation ("name", "llm_endpoint_url", also as
 * "chatbot.name" from UpdateChatbot) under its input. */
export function ChatbotForm(props: {
  initial?: ChatbotFields;
  submitLabel: string;
  cancelLabel?: string;
  save(fields: ChatbotFields): Promise<void>;
  onCancel(): void;
}) {
  const form = useForm(["name", "llm_endpoint_url"], ["chatbot"]);
  const [name, setName] = useState(props.initial?.name ?? "");
  const [url, setUrl] = useState(props.initial?.llmEndpointUrl ?? "");
  return (
    <form onSubmit={onSubmit(() => void form.run(() => props.save({ name, llmEndpointUrl: url })))} noValidate>
      <FormProblem form={form} />
      <TextField form={form} name="name" label="Name" hint="1 to 100 characters." required value={name} onValue={setName} />
      <TextField
        form={form}
        name="llm_endpoint_url"
        label="LLM endpoint URL"
        hint="An absolute http(s) URL, e.g. https://api.openai.com/v1/chat/completions."
        type="url"
        required
        value={url}
        onValue={setUrl}
      />
      <div class="actions">
        <Submit form={form}>{props.submitLabel}</Submit>
        <button type="button" onClick={props.onCancel}>
          {props.cancelLabel ?? "Cancel"}
        </button>
      </div>
    </form>
  );
}
