-- The SQLite twin of migrations/postgres/2026-12-12-000018_lifecycle_notices.
ALTER TABLE api_key_limits ADD COLUMN credits_low_threshold INTEGER;
ALTER TABLE api_key_limits ADD COLUMN credits_low_noticed BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE api_key_limits ADD COLUMN credits_exhausted_noticed BOOLEAN NOT NULL DEFAULT 0;

ALTER TABLE organization_limits ADD COLUMN credits_low_threshold INTEGER;
ALTER TABLE organization_limits ADD COLUMN credits_low_noticed BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE organization_limits ADD COLUMN credits_exhausted_noticed BOOLEAN NOT NULL DEFAULT 0;

ALTER TABLE api_keys ADD COLUMN expiry_noticed_for TEXT;
CREATE INDEX api_keys_live_expiry_idx ON api_keys (expires_at)
    WHERE expires_at IS NOT NULL AND NOT revoked AND rotated_at IS NULL;
