-- A key a rotation replaced spends from its replacement's budget while its
-- grace period lasts (issue 29): one budget, not one per key. NULL for keys
-- not replaced (and for keys replaced before this version, which keep
-- their own balance until their grace period ends).
ALTER TABLE api_keys ADD COLUMN replaced_by BIGINT REFERENCES api_keys (id) ON DELETE SET NULL;
COMMENT ON COLUMN api_keys.replaced_by IS 'The key RotateApiKey issued in its place; its limits and credits are this key''s during the grace period.';
