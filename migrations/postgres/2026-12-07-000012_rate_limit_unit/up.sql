-- A key's rate limit may count credits instead of calls (issue 29): tokens
-- per minute, say. The default keeps every existing limit counting calls,
-- and the previous version's inserts working.
ALTER TABLE api_key_limits ADD COLUMN rate_limit_unit TEXT NOT NULL DEFAULT 'calls'
    CONSTRAINT api_key_limits_rate_limit_unit_known CHECK (rate_limit_unit IN ('calls', 'credits'));
COMMENT ON COLUMN api_key_limits.rate_limit_unit IS 'What rate_limit_calls counts: calls, or credits (each call its cost).';
