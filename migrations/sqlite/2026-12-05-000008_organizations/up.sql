-- Organizations: the SQLite twin of migrations/postgres/2026-12-05-000008_organizations,
-- whose comments explain the tables, the personal organizations and the
-- triggers. One difference: SQLite cannot drop a column that a foreign key
-- names (and so could not revert this), so chatbots.organization_id is kept
-- true by two triggers instead, SQLite's idiom from before foreign keys: a
-- chatbot names an organization that exists, and an organization that owns
-- chatbots is not deleted (a personal one goes with its user, and its
-- chatbots with him by their owner_id).

CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    personal_user_id TEXT UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX organizations_created_at_id_idx ON organizations (created_at, id);

CREATE TABLE organization_members (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id, organization_id);

CREATE TABLE organization_invitations (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email TEXT NOT NULL CHECK (email = lower(email)),
    role TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    token_hash BLOB NOT NULL UNIQUE,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    expires_at TEXT NOT NULL,
    accepted_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    accepted_at TEXT
);
CREATE INDEX organization_invitations_organization_id_idx ON organization_invitations (organization_id, created_at, id);
CREATE INDEX organization_invitations_expires_at_idx ON organization_invitations (expires_at);

CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
    token_prefix TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE INDEX service_accounts_organization_id_idx ON service_accounts (organization_id, created_at, id);

INSERT INTO organizations (id, name, personal_user_id, created_at, updated_at)
SELECT id, 'Personal', id, created_at, created_at FROM users;
INSERT INTO organization_members (organization_id, user_id, role, created_at, updated_at)
SELECT id, id, 'owner', created_at, created_at FROM users;

CREATE TRIGGER users_personal_organization AFTER INSERT ON users
BEGIN
    INSERT INTO organizations (id, name, personal_user_id, created_at, updated_at)
    VALUES (NEW.id, 'Personal', NEW.id, NEW.created_at, NEW.created_at);
    INSERT INTO organization_members (organization_id, user_id, role, created_at, updated_at)
    VALUES (NEW.id, NEW.id, 'owner', NEW.created_at, NEW.created_at);
END;

ALTER TABLE chatbots ADD COLUMN organization_id TEXT;
UPDATE chatbots SET organization_id = owner_id;
CREATE INDEX chatbots_organization_id_created_at_id_idx ON chatbots (organization_id, created_at, id);

CREATE TRIGGER chatbots_organization_exists BEFORE INSERT ON chatbots
WHEN NEW.organization_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM organizations WHERE id = NEW.organization_id)
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed');
END;

CREATE TRIGGER organizations_keep_chatbots BEFORE DELETE ON organizations
WHEN EXISTS (
    SELECT 1 FROM chatbots
    WHERE organization_id = OLD.id AND owner_id IS NOT OLD.personal_user_id
)
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed');
END;

CREATE TRIGGER chatbots_default_organization AFTER INSERT ON chatbots
WHEN NEW.organization_id IS NULL
BEGIN
    UPDATE chatbots SET organization_id = NEW.owner_id WHERE id = NEW.id;
END;

ALTER TABLE audit_events ADD COLUMN organization_id TEXT;
UPDATE audit_events SET organization_id = target_owner_id WHERE target_type IN ('chatbot', 'api_key');
CREATE INDEX audit_events_organization_id ON audit_events (organization_id, id);
ALTER TABLE audit_events ADD COLUMN actor_service_account_id TEXT;
ALTER TABLE audit_events ADD COLUMN actor_service_account_name TEXT;
