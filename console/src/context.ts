// What every signed-in view knows: who is signed in, the current
// organization and what their role there allows.

import { createContext } from "preact";
import { useContext, useEffect } from "preact/hooks";
import type { Organization, OrganizationRole } from "./gen/chatbot/v1/organization_pb";
import type { User } from "./gen/chatbot/v1/user_pb";
import type { Capabilities } from "./lib/roles";

export interface AppContext {
  user: User;
  orgs: Organization[];
  org: Organization;
  role: OrganizationRole;
  can: Capabilities;
  /** Makes `id` the current organization (and leaves a chatbot's page,
   * which belongs to the one before, unless `keepPage`). */
  switchOrg(id: string, keepPage?: boolean): Promise<void>;
  /** Lists the organizations again, and switches to `select` if given. */
  reloadOrgs(select?: string): Promise<void>;
  /** A short message in the status line ("Chatbot deleted."). */
  notify(message: string): void;
}

export const Context = createContext<AppContext | null>(null);

export function useApp(): AppContext {
  const app = useContext(Context);
  if (!app) throw new Error("useApp outside the signed-in shell");
  return app;
}

/** Sets the document's title for a page. */
export function useTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · chatbot-backend console`;
  }, [title]);
}
