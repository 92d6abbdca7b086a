-- Users, their chatbots and the chatbots' API keys: the SQLite twin of
-- migrations/postgres/2026-11-28-000001_core_schema, whose COMMENT ON
-- statements document every column. SQLite has no uuid or timestamptz:
-- UUIDs are lowercase hyphenated text and instants RFC 3339 UTC text with six
-- fractional digits (src/db/sql_types.rs), so text order is value order. The
-- server always supplies the times; the defaults only serve hand-written SQL.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    -- Stored lowercased (CHECK), hence unique case-insensitively.
    email TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    hashed_password TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
-- Keyset pagination order of ListUsers.
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

CREATE TABLE chatbots (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    llm_endpoint_url TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
-- Serves the foreign key and ListChatbots filtered by owner, in list order.
CREATE INDEX chatbots_owner_id_created_at_id_idx ON chatbots (owner_id, created_at, id);
-- ListChatbots without a filter (admins).
CREATE INDEX chatbots_created_at_id_idx ON chatbots (created_at, id);

CREATE TABLE api_keys (
    -- AUTOINCREMENT: like BIGSERIAL, an id is never handed out twice.
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    chatbot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL DEFAULT '',
    key_prefix TEXT NOT NULL,
    -- SHA-256 digest of the whole key; the key itself is never stored.
    key_hash BLOB NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);
-- VerifyApiKey looks keys up by digest: one index probe.
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
-- Serves the foreign key and ListApiKeys in list order.
CREATE INDEX api_keys_chatbot_id_created_at_id_idx ON api_keys (chatbot_id, created_at, id);
