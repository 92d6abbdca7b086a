// The shell: signing in and out, the current organization and the
// caller's role in it, the header and the routes. Nothing here outlives the
// tab: the organization chosen, like the tokens, is forgotten on reload.

import type { ComponentChild } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "./api/client";
import { problemOf } from "./api/errors";
import * as session from "./api/session";
import type { TokenPair } from "./api/session";
import { Context, useApp, type AppContext } from "./context";
import type { Organization, OrganizationRole } from "./gen/chatbot/v1/organization_pb";
import type { User } from "./gen/chatbot/v1/user_pb";
import { capabilities, roleIn, ROLE_LABELS } from "./lib/roles";
import { href, navigate, useRoute, type Route } from "./lib/router";
import { Select } from "./components/forms";
import { SignIn, SignUp } from "./views/auth";
import { ChatbotsView } from "./views/chatbots";
import { ChatbotView } from "./views/chatbot";
import { KeyView } from "./views/key";
import { AuditView } from "./views/audit";
import { MembersView } from "./views/members";
import { OrganizationsView } from "./views/organizations";

interface Signed {
  user: User;
  orgs: Organization[];
  org: Organization;
  role: OrganizationRole;
}

async function allOrganizations(): Promise<Organization[]> {
  const orgs: Organization[] = [];
  let pageToken = "";
  do {
    const page = await api.orgs.listOrganizations({ pageSize: 1000, pageToken });
    orgs.push(...page.organizations);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return orgs;
}

export function App() {
  const route = useRoute();
  const [signed, setSigned] = useState<Signed | null>(null);
  const [ended, setEnded] = useState("");
  const [notice, setNotice] = useState("");
  const noticeTimer = useRef<number | undefined>(undefined);

  useEffect(
    () =>
      session.onEnd((reason) => {
        setSigned(null);
        setEnded(reason);
      }),
    [],
  );

  const notify = (message: string) => {
    setNotice(message);
    window.clearTimeout(noticeTimer.current);
    noticeTimer.current = window.setTimeout(() => setNotice(""), 8000);
  };

  /** After Login: who we are, our organizations, our role in the first. */
  const enter = async (pair: TokenPair) => {
    session.start(pair);
    try {
      const { user } = await api.auth.getCurrentUser({});
      if (!user) throw new Error("no user");
      const orgs = await allOrganizations();
      // The personal organization (its id is the user's) first, if listed.
      const org = orgs.find((o) => o.id === user.id) ?? orgs[0];
      if (!org) throw new Error("You belong to no organization.");
      const role = await roleIn(api.orgs, org.id, user);
      setEnded("");
      setSigned({ user, orgs, org, role });
      if (route.name === "signin" || route.name === "signup") navigate({ name: "chatbots" });
    } catch (error) {
      session.end();
      throw error;
    }
  };

  const signOut = async () => {
    const refreshToken = session.refreshToken();
    try {
      // Revokes the refresh token (and every token of this login) on the
      // server; the page forgets both whatever the answer.
      if (refreshToken) await api.auth.logout({ refreshToken });
    } catch {
      // Signed out here all the same; the refresh token expires anyway.
    }
    session.end();
    setSigned(null);
    navigate({ name: "signin" });
    notify("Signed out.");
  };

  if (!signed) {
    return (
      <>
        <Notice text={notice} />
        <main id="main" class="narrow">
          {route.name === "signup" ? <SignUp onSignedIn={enter} /> : <SignIn onSignedIn={enter} ended={ended} />}
        </main>
      </>
    );
  }

  const switchOrg = async (id: string, orgs = signed.orgs, keepPage = false) => {
    const org = orgs.find((o) => o.id === id);
    if (!org) return;
    let role: OrganizationRole;
    try {
      role = await roleIn(api.orgs, org.id, signed.user);
    } catch (error) {
      notify(`Could not switch to ${org.name}: ${problemOf(error).message}`);
      return;
    }
    setSigned((now) => now && { ...now, orgs, org, role });
    // A chatbot's page belongs to the organization left behind.
    if (!keepPage && (route.name === "chatbot" || route.name === "key")) navigate({ name: "chatbots" });
    notify(`Switched to ${org.name}.`);
  };

  const context: AppContext = {
    ...signed,
    can: capabilities(signed.role),
    switchOrg: (id, keepPage) => switchOrg(id, signed.orgs, keepPage),
    async reloadOrgs(select) {
      const orgs = await allOrganizations();
      if (select) {
        await switchOrg(select, orgs);
      } else {
        setSigned((now) => now && { ...now, orgs, org: orgs.find((o) => o.id === now.org.id) ?? orgs[0]! });
      }
    },
    notify,
  };

  return (
    <Context.Provider value={context}>
      <Header route={route} onSignOut={signOut} />
      <Notice text={notice} />
      <Main route={route} />
    </Context.Provider>
  );
}

function Notice({ text }: { text: string }) {
  return (
    <div class={`notice${text ? " shown" : ""}`} role="status">
      {text}
    </div>
  );
}

function Header({ route, onSignOut }: { route: Route; onSignOut(): void }) {
  const app = useApp();
  const links: { route: Route; label: string; current: boolean }[] = [
    { route: { name: "chatbots" }, label: "Chatbots", current: ["chatbots", "chatbot", "key"].includes(route.name) },
    { route: { name: "members" }, label: "Members", current: route.name === "members" },
    { route: { name: "audit" }, label: "Audit log", current: route.name === "audit" },
    { route: { name: "organizations" }, label: "Organizations", current: route.name === "organizations" },
  ];
  return (
    <header class="top">
      <button type="button" class="skip" onClick={() => document.querySelector<HTMLElement>("main h1")?.focus()}>
        Skip to content
      </button>
      <div class="brand">chatbot-backend</div>
      <div class="org-switch">
        <label for="org-select">Organization</label>
        <Select
          id="org-select"
          value={app.org.id}
          options={app.orgs.map((o) => ({ value: o.id, label: o.personal && o.name !== "Personal" ? `${o.name} (personal)` : o.name }))}
          onValue={(id) => void app.switchOrg(id)}
        />
        <span class="role-badge" title="Your role here">
          {ROLE_LABELS[app.role]}
        </span>
      </div>
      <nav aria-label="Main">
        <ul>
          {links.map((l) => (
            <li key={l.label}>
              <a href={href(l.route)} aria-current={l.current ? "page" : undefined}>
                {l.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <div class="account">
        <span class="email">{app.user.email}</span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </header>
  );
}

function Main({ route }: { route: Route }) {
  const app = useApp();
  const key = `${route.name}:${"id" in route ? String(route.id) : ""}:${app.org.id}`;
  // A new page: move the keyboard (and a screen reader) to its heading.
  useEffect(() => {
    document.querySelector<HTMLElement>("main h1")?.focus();
  }, [key]);
  let view: ComponentChild;
  switch (route.name) {
    case "chatbots":
    case "signin":
    case "signup":
      view = <ChatbotsView />;
      break;
    case "chatbot":
      view = <ChatbotView id={route.id} />;
      break;
    case "key":
      view = <KeyView chatbotId={route.chatbotId} id={route.id} />;
      break;
    case "audit":
      view = <AuditView />;
      break;
    case "members":
      view = <MembersView />;
      break;
    case "organizations":
      view = <OrganizationsView />;
      break;
    case "notfound":
      view = (
        <>
          <h1 tabIndex={-1}>Page not found</h1>
          <p>
            <a href="#/chatbots">Go to the chatbots</a>
          </p>
        </>
      );
      break;
  }
  return (
    <main id="main" key={key}>
      {view}
    </main>
  );
}
