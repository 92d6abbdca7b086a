DROP INDEX api_keys_live_expiry_idx;
ALTER TABLE api_keys DROP COLUMN expiry_noticed_for;
ALTER TABLE organization_limits DROP COLUMN credits_exhausted_noticed;
ALTER TABLE organization_limits DROP COLUMN credits_low_noticed;
ALTER TABLE organization_limits DROP COLUMN credits_low_threshold;
ALTER TABLE api_key_limits DROP COLUMN credits_exhausted_noticed;
ALTER TABLE api_key_limits DROP COLUMN credits_low_noticed;
ALTER TABLE api_key_limits DROP COLUMN credits_low_threshold;
