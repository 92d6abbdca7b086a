// One chatbot: its settings (UpdateChatbot with an update_mask of what
// changed), its keys and its usage.

import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import { problemOf, type Problem } from "../api/errors";
import { useConfirm } from "../components/dialog";
import { ProblemNote } from "../components/forms";
import { UsagePanel, type UsageLoader } from "../components/usage";
import { useApp, useTitle } from "../context";
import type { Chatbot } from "../gen/chatbot/v1/chatbot_pb";
import { when } from "../lib/format";
import { navigate } from "../lib/router";
import { ChatbotForm, type ChatbotFields } from "./chatbots";
import { KeysSection } from "./keys";

/**
 * A page of another of the caller's organizations (a link from elsewhere):
 * switch to it, so that the role (and the controls it offers) is the one
 * that applies there.
 */
export function useFollowOrganization(organizationId: string | undefined) {
  const app = useApp();
  useEffect(() => {
    if (organizationId && organizationId !== app.org.id && app.orgs.some((o) => o.id === organizationId)) {
      void app.switchOrg(organizationId, true);
    }
  }, [organizationId]);
}

export function ChatbotView({ id }: { id: string }) {
  const app = useApp();
  const [chatbot, setChatbot] = useState<Chatbot | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [formVersion, setFormVersion] = useState(0);
  const [confirmDialog, ask] = useConfirm();
  useTitle(chatbot?.name ?? "Chatbot");

  useEffect(() => {
    api.chatbots.getChatbot({ id }).then(
      (r) => setChatbot(r.chatbot ?? null),
      (e) => setProblem(problemOf(e)),
    );
  }, [id]);

  useFollowOrganization(chatbot?.organizationId);

  const loadUsage: UsageLoader = useCallback((startTime, endTime) => api.keys.getChatbotUsage({ chatbotId: id, startTime, endTime }), [id]);

  const save = async (fields: ChatbotFields) => {
    if (!chatbot) return;
    const paths: string[] = [];
    if (fields.name !== chatbot.name) paths.push("name");
    if (fields.llmEndpointUrl !== chatbot.llmEndpointUrl) paths.push("llm_endpoint_url");
    if (paths.length === 0) {
      app.notify("Nothing changed.");
      return;
    }
    const r = await api.chatbots.updateChatbot({ chatbot: { id: chatbot.id, ...fields }, updateMask: { paths } });
    setChatbot(r.chatbot ?? null);
    app.notify("Chatbot saved.");
  };

  const remove = async () => {
    if (!chatbot) return;
    const yes = await ask({
      title: `Delete ${chatbot.name}?`,
      body: <p>The chatbot and all its API keys are deleted; services using those keys are refused at once.</p>,
      confirm: "Delete chatbot",
      danger: true,
    });
    if (!yes) return;
    try {
      await api.chatbots.deleteChatbot({ id: chatbot.id });
      app.notify(`Chatbot ${chatbot.name} deleted.`);
      navigate({ name: "chatbots" });
    } catch (error) {
      setProblem(problemOf(error));
    }
  };

  return (
    <>
      <p class="crumbs">
        <a href="#/chatbots">Chatbots</a> /
      </p>
      <div class="page-head">
        <h1 tabIndex={-1}>{chatbot?.name ?? "Chatbot"}</h1>
        {chatbot && app.can.edit && (
          <button type="button" class="danger" onClick={remove}>
            Delete chatbot
          </button>
        )}
      </div>
      <ProblemNote problem={problem} />
      {chatbot && (
        <>
          <dl class="facts">
            <dt>LLM endpoint</dt>
            <dd class="url">{chatbot.llmEndpointUrl}</dd>
            <dt>Created</dt>
            <dd>{when(chatbot.createTime)}</dd>
            <dt>Changed</dt>
            <dd>{when(chatbot.updateTime)}</dd>
            <dt>Id</dt>
            <dd>
              <code>{chatbot.id}</code>
            </dd>
          </dl>
          {app.can.edit && (
            <section class="card" aria-labelledby="settings-heading">
              <h2 id="settings-heading">Settings</h2>
              <ChatbotForm
                key={formVersion}
                initial={{ name: chatbot.name, llmEndpointUrl: chatbot.llmEndpointUrl }}
                submitLabel="Save changes"
                cancelLabel="Discard changes"
                save={save}
                onCancel={() => setFormVersion((v) => v + 1)}
              />
            </section>
          )}
          <KeysSection chatbot={chatbot} />
          <UsagePanel load={loadUsage} source={`chatbot:${id}`} subject={`chatbot ${chatbot.name}`} />
        </>
      )}
      {confirmDialog}
    </>
  );
}
