-- Users, their chatbots and the chatbots' API keys.

CREATE TABLE users (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    hashed_password TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Keyset pagination order of ListUsers.
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

COMMENT ON TABLE users IS 'People who own chatbots.';
COMMENT ON COLUMN users.id IS 'UUIDv7 assigned by the server.';
COMMENT ON COLUMN users.email IS 'Email address, stored lowercased (CHECK), hence unique case-insensitively.';
COMMENT ON COLUMN users.hashed_password IS 'argon2id PHC string; never the password itself.';
COMMENT ON COLUMN users.role IS 'user or admin.';
COMMENT ON COLUMN users.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN users.updated_at IS 'Time of the last change.';

CREATE TABLE chatbots (
    id UUID PRIMARY KEY,
    owner_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    llm_endpoint_url TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Serves the foreign key and ListChatbots filtered by owner, in list order.
CREATE INDEX chatbots_owner_id_created_at_id_idx ON chatbots (owner_id, created_at, id);
-- ListChatbots without a filter (admins).
CREATE INDEX chatbots_created_at_id_idx ON chatbots (created_at, id);

COMMENT ON TABLE chatbots IS 'Chatbots, each owned by one user.';
COMMENT ON COLUMN chatbots.id IS 'UUIDv7 assigned by the server.';
COMMENT ON COLUMN chatbots.owner_id IS 'Owning user; deleting the user deletes the chatbot.';
COMMENT ON COLUMN chatbots.name IS 'Display name, 1 to 100 characters.';
COMMENT ON COLUMN chatbots.llm_endpoint_url IS 'Absolute http(s) URL of the LLM endpoint.';
COMMENT ON COLUMN chatbots.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN chatbots.updated_at IS 'Time of the last change.';

CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    chatbot_id UUID NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL DEFAULT '',
    key_prefix TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
-- VerifyApiKey looks keys up by digest: one index probe.
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
-- Serves the foreign key and ListApiKeys in list order.
CREATE INDEX api_keys_chatbot_id_created_at_id_idx ON api_keys (chatbot_id, created_at, id);

COMMENT ON TABLE api_keys IS 'Credentials for calling a chatbot; only digests are stored.';
COMMENT ON COLUMN api_keys.id IS 'Increasing identifier.';
COMMENT ON COLUMN api_keys.chatbot_id IS 'Chatbot the key belongs to; deleting it deletes the key.';
COMMENT ON COLUMN api_keys.display_name IS 'Human-readable label.';
COMMENT ON COLUMN api_keys.key_prefix IS 'First characters of the key, shown in lists; not secret.';
COMMENT ON COLUMN api_keys.key_hash IS 'SHA-256 digest of the whole key; the key itself is never stored.';
COMMENT ON COLUMN api_keys.revoked IS 'Whether the key was revoked.';
COMMENT ON COLUMN api_keys.created_at IS 'Creation time; first key of the list order.';
COMMENT ON COLUMN api_keys.expires_at IS 'When the key stops working; NULL means never.';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked.';
COMMENT ON COLUMN api_keys.last_used_at IS 'Last successful verification, recorded in batches.';
