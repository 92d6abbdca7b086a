-- Organizations (issue 26): teams own chatbots, and people belong to them
-- with a role. Every user has a personal organization whose id is the
-- user's own id, so existing rows map to it without a lookup: each user's
-- chatbots move into it, and their audit events with them.
--
-- Two triggers keep a replica of the previous version working while this
-- one rolls out (README, Upgrades): a user it inserts still gets a personal
-- organization, and a chatbot it inserts without an organization lands in
-- its owner's. This version relies on the first too: it is the one place a
-- personal organization is made.

CREATE TABLE organizations (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    personal_user_id UUID UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- ListOrganizations for admins, in list order.
CREATE INDEX organizations_created_at_id_idx ON organizations (created_at, id);

COMMENT ON TABLE organizations IS 'Teams that own chatbots; every user also has a personal one.';
COMMENT ON COLUMN organizations.id IS 'UUIDv7 assigned by the server; a personal organization''s is its user''s id.';
COMMENT ON COLUMN organizations.name IS 'Display name, 1 to 100 characters.';
COMMENT ON COLUMN organizations.personal_user_id IS 'For a personal organization, its one member; deleting the user deletes it. NULL for a team.';
COMMENT ON COLUMN organizations.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN organizations.updated_at IS 'Time of the last change.';

CREATE TABLE organization_members (
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id)
);
-- The organizations a user belongs to (ListOrganizations, the list filters).
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id, organization_id);

COMMENT ON TABLE organization_members IS 'Who belongs to an organization, with which role.';
COMMENT ON COLUMN organization_members.organization_id IS 'The organization; deleting it deletes its memberships.';
COMMENT ON COLUMN organization_members.user_id IS 'The member; deleting the user deletes the membership.';
COMMENT ON COLUMN organization_members.role IS 'owner, editor or viewer.';
COMMENT ON COLUMN organization_members.created_at IS 'When the user joined; first key of the list order.';
COMMENT ON COLUMN organization_members.updated_at IS 'Time of the last role change.';

CREATE TABLE organization_invitations (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email TEXT NOT NULL CHECK (email = lower(email)),
    role TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    token_hash BYTEA NOT NULL UNIQUE,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    accepted_by UUID REFERENCES users (id) ON DELETE SET NULL,
    accepted_at TIMESTAMPTZ
);
-- ListInvitations in list order; the retention purge by expiry.
CREATE INDEX organization_invitations_organization_id_idx ON organization_invitations (organization_id, created_at, id);
CREATE INDEX organization_invitations_expires_at_idx ON organization_invitations (expires_at);

COMMENT ON TABLE organization_invitations IS 'Invitations to join an organization; only digests of their tokens are stored.';
COMMENT ON COLUMN organization_invitations.id IS 'UUIDv7 assigned by the server.';
COMMENT ON COLUMN organization_invitations.organization_id IS 'The organization to join; deleting it deletes its invitations.';
COMMENT ON COLUMN organization_invitations.email IS 'Lowercased email of the one user who may accept it.';
COMMENT ON COLUMN organization_invitations.role IS 'The role the member gets: owner, editor or viewer.';
COMMENT ON COLUMN organization_invitations.token_hash IS 'SHA-256 digest of the invitation token; the token itself is never stored.';
COMMENT ON COLUMN organization_invitations.created_by IS 'The member who invited; NULL once that user is deleted.';
COMMENT ON COLUMN organization_invitations.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN organization_invitations.expires_at IS 'After this it can no longer be accepted.';
COMMENT ON COLUMN organization_invitations.accepted_by IS 'The user who accepted it.';
COMMENT ON COLUMN organization_invitations.accepted_at IS 'When it was accepted; an invitation is accepted once.';

CREATE TABLE service_accounts (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
    token_prefix TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
-- ListServiceAccounts in list order.
CREATE INDEX service_accounts_organization_id_idx ON service_accounts (organization_id, created_at, id);

COMMENT ON TABLE service_accounts IS 'Credentials of other services, acting in one organization with a role; only digests of their tokens are stored.';
COMMENT ON COLUMN service_accounts.id IS 'UUIDv7 assigned by the server.';
COMMENT ON COLUMN service_accounts.organization_id IS 'The organization it acts in; deleting it deletes the service account.';
COMMENT ON COLUMN service_accounts.name IS 'Display name, 1 to 100 characters.';
COMMENT ON COLUMN service_accounts.role IS 'editor or viewer.';
COMMENT ON COLUMN service_accounts.token_prefix IS 'First characters of the token, shown in lists; not secret.';
COMMENT ON COLUMN service_accounts.token_hash IS 'SHA-256 digest of the token; the token itself is never stored.';
COMMENT ON COLUMN service_accounts.created_by IS 'The owner who created it; NULL once that user is deleted.';
COMMENT ON COLUMN service_accounts.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN service_accounts.expires_at IS 'When the token stops working; NULL means never.';
COMMENT ON COLUMN service_accounts.revoked_at IS 'When the token was revoked.';
COMMENT ON COLUMN service_accounts.last_used_at IS 'Last authenticated call, recorded at most once a minute per replica.';

-- Every existing user's personal organization, with them as its owner.
INSERT INTO organizations (id, name, personal_user_id, created_at, updated_at)
SELECT id, 'Personal', id, created_at, created_at FROM users;
INSERT INTO organization_members (organization_id, user_id, role, created_at, updated_at)
SELECT id, id, 'owner', created_at, created_at FROM users;

CREATE FUNCTION create_personal_organization() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO organizations (id, name, personal_user_id, created_at, updated_at)
    VALUES (NEW.id, 'Personal', NEW.id, NEW.created_at, NEW.created_at);
    INSERT INTO organization_members (organization_id, user_id, role, created_at, updated_at)
    VALUES (NEW.id, NEW.id, 'owner', NEW.created_at, NEW.created_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_personal_organization AFTER INSERT ON users
FOR EACH ROW EXECUTE FUNCTION create_personal_organization();

-- NO ACTION, not CASCADE: an organization that still owns a chatbot cannot
-- be deleted, also by a delete racing the chatbot's creation.
ALTER TABLE chatbots ADD COLUMN organization_id UUID REFERENCES organizations (id);
UPDATE chatbots SET organization_id = owner_id;
CREATE INDEX chatbots_organization_id_created_at_id_idx ON chatbots (organization_id, created_at, id);
COMMENT ON COLUMN chatbots.organization_id IS 'The organization that owns the chatbot; never NULL once inserted (see the trigger).';
COMMENT ON COLUMN chatbots.owner_id IS 'The person accountable: for a personal organization its user; otherwise who created it, or an owner it passed to when that user was deleted.';

CREATE FUNCTION chatbot_default_organization() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.organization_id := NEW.owner_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER chatbots_default_organization BEFORE INSERT ON chatbots
FOR EACH ROW WHEN (NEW.organization_id IS NULL) EXECUTE FUNCTION chatbot_default_organization();

-- Who may see an event: the members of the organization it happened in.
-- No foreign key: the log outlives the organization.
ALTER TABLE audit_events ADD COLUMN organization_id UUID;
UPDATE audit_events SET organization_id = target_owner_id WHERE target_type IN ('chatbot', 'api_key');
CREATE INDEX audit_events_organization_id ON audit_events (organization_id, id);
ALTER TABLE audit_events ADD COLUMN actor_service_account_id UUID;
ALTER TABLE audit_events ADD COLUMN actor_service_account_name TEXT;
COMMENT ON COLUMN audit_events.actor_service_account_id IS 'The service account that did it; NULL otherwise.';
COMMENT ON COLUMN audit_events.actor_service_account_name IS 'That service account''s name at the time.';
COMMENT ON COLUMN audit_events.organization_id IS 'The organization the target belongs to; its members may see the event. NULL for users and RPCs.';
