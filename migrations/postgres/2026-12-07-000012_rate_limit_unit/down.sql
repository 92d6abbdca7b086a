ALTER TABLE api_key_limits DROP COLUMN rate_limit_unit;
