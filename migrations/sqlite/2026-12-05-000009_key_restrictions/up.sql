-- Key restrictions: the SQLite twin of migrations/postgres/2026-12-05-000009_key_restrictions,
-- whose COMMENT ON statements document every column.

ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN external_id TEXT;
CREATE INDEX api_keys_chatbot_id_external_id_idx ON api_keys (chatbot_id, external_id, created_at, id);

ALTER TABLE api_key_usage ADD COLUMN address_not_allowed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN insufficient_permissions INTEGER NOT NULL DEFAULT 0;
