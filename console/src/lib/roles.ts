// What the caller may do in the current organization, from their role
// (organization.proto, OrganizationRole). The console offers only what the
// role allows; the server refuses the rest anyway, so this is about not
// showing controls that can only fail, never about security.

import type { Client } from "@connectrpc/connect";
import { OrganizationRole } from "../gen/chatbot/v1/organization_pb";
import type { OrganizationService } from "../gen/chatbot/v1/organization_service_pb";
import { UserRole, type User } from "../gen/chatbot/v1/user_pb";

export interface Capabilities {
  /** Create, change, rotate, revoke and delete chatbots and keys. */
  edit: boolean;
  /** Manage members, invitations and service accounts. */
  manage: boolean;
}

export function capabilities(role: OrganizationRole): Capabilities {
  return {
    edit: role === OrganizationRole.OWNER || role === OrganizationRole.EDITOR,
    manage: role === OrganizationRole.OWNER,
  };
}

export const ROLE_LABELS: Record<OrganizationRole, string> = {
  [OrganizationRole.UNSPECIFIED]: "None",
  [OrganizationRole.OWNER]: "Owner",
  [OrganizationRole.EDITOR]: "Editor",
  [OrganizationRole.VIEWER]: "Viewer",
};

/**
 * The caller's role in an organization: their membership's (the member of
 * ListMembers whose user_id is theirs), or owner for a platform admin, who
 * may do everything everywhere.
 */
export async function roleIn(
  orgs: Client<typeof OrganizationService>,
  organizationId: string,
  user: User,
): Promise<OrganizationRole> {
  if (user.role === UserRole.ADMIN) return OrganizationRole.OWNER;
  let pageToken = "";
  do {
    const page = await orgs.listMembers({ organizationId, pageSize: 1000, pageToken });
    const me = page.members.find((m) => m.userId === user.id);
    if (me) return me.role;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return OrganizationRole.UNSPECIFIED;
}
