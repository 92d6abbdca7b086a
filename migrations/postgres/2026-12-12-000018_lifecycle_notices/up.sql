-- Key lifecycle events (issue 30): a key expiring within
-- KEY_EXPIRY_NOTICE_HOURS, and a key's or an organization's credits falling
-- to the low threshold its owner sets or running out, each become an event
-- once. A background sweep on every replica flips a row's notice column and
-- records the event in one transaction (so two replicas cannot both send
-- it); the credit notices clear when the balance rises again, so the next
-- fall is told too. The spend path writes none of these columns.
ALTER TABLE api_key_limits ADD COLUMN credits_low_threshold BIGINT;
ALTER TABLE api_key_limits ADD COLUMN credits_low_noticed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE api_key_limits ADD COLUMN credits_exhausted_noticed BOOLEAN NOT NULL DEFAULT false;
COMMENT ON COLUMN api_key_limits.credits_low_threshold IS 'A balance at or below it is low (an api_key.credits_low event); NULL: no threshold.';
COMMENT ON COLUMN api_key_limits.credits_low_noticed IS 'Whether the api_key.credits_low event of the balance''s present fall was recorded; cleared when it rises above the threshold.';
COMMENT ON COLUMN api_key_limits.credits_exhausted_noticed IS 'Whether the api_key.credits_exhausted event of the balance''s present fall to zero was recorded; cleared when it rises above zero.';

ALTER TABLE organization_limits ADD COLUMN credits_low_threshold BIGINT;
ALTER TABLE organization_limits ADD COLUMN credits_low_noticed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE organization_limits ADD COLUMN credits_exhausted_noticed BOOLEAN NOT NULL DEFAULT false;
COMMENT ON COLUMN organization_limits.credits_low_threshold IS 'A balance at or below it is low (an organization.credits_low event); NULL: no threshold.';
COMMENT ON COLUMN organization_limits.credits_low_noticed IS 'Whether the organization.credits_low event of the balance''s present fall was recorded; cleared when it rises above the threshold.';
COMMENT ON COLUMN organization_limits.credits_exhausted_noticed IS 'Whether the organization.credits_exhausted event of the balance''s present fall to zero was recorded; cleared when it rises above zero.';

ALTER TABLE api_keys ADD COLUMN expiry_noticed_for TIMESTAMPTZ;
COMMENT ON COLUMN api_keys.expiry_noticed_for IS 'The expiry an api_key.expiring event was recorded for; a moved expiry is told again.';
-- The sweep's range scan: live keys by expiry.
CREATE INDEX api_keys_live_expiry_idx ON api_keys (expires_at)
    WHERE expires_at IS NOT NULL AND NOT revoked AND rotated_at IS NULL;
