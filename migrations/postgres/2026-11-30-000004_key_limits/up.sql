-- A key's own rate limit and its budget of credits (issue 15), one row per
-- key that has either. Apart from api_keys, so that the spends' frequent
-- updates churn this narrow table, not the one every verification reads;
-- keys without a row keep the verification path that writes nothing.

CREATE TABLE api_key_limits (
    api_key_id BIGINT PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    rate_limit_calls BIGINT,
    rate_limit_window_ms BIGINT,
    credits_remaining BIGINT,
    credits_refill_amount BIGINT,
    credits_refill_interval_ms BIGINT,
    credits_refilled_at TIMESTAMPTZ,
    CONSTRAINT api_key_limits_rate_limit_whole CHECK (
        (rate_limit_calls IS NULL) = (rate_limit_window_ms IS NULL)
        AND (rate_limit_calls IS NULL OR (rate_limit_calls > 0 AND rate_limit_window_ms > 0))
    ),
    CONSTRAINT api_key_limits_credits_not_negative CHECK (credits_remaining >= 0),
    CONSTRAINT api_key_limits_refill_whole CHECK (
        (credits_refill_amount IS NULL) = (credits_refill_interval_ms IS NULL)
        AND (credits_refill_amount IS NULL) = (credits_refilled_at IS NULL)
        AND (credits_refill_amount IS NULL OR credits_remaining IS NOT NULL)
        AND (credits_refill_amount IS NULL OR (credits_refill_amount > 0 AND credits_refill_interval_ms > 0))
    )
);

COMMENT ON TABLE api_key_limits IS 'A key''s own rate limit and credits; no row: neither.';
COMMENT ON COLUMN api_key_limits.api_key_id IS 'The key; deleting it deletes its limits.';
COMMENT ON COLUMN api_key_limits.rate_limit_calls IS 'Calls allowed per rate_limit_window_ms (a bucket refilling evenly); NULL: no limit of its own.';
COMMENT ON COLUMN api_key_limits.rate_limit_window_ms IS 'The rate limit''s window in milliseconds.';
COMMENT ON COLUMN api_key_limits.credits_remaining IS 'Balance of credits as of the last refill and spend; NULL: unlimited. Never below zero.';
COMMENT ON COLUMN api_key_limits.credits_refill_amount IS 'The balance after each refill; NULL: no refill.';
COMMENT ON COLUMN api_key_limits.credits_refill_interval_ms IS 'Time between refills in milliseconds.';
COMMENT ON COLUMN api_key_limits.credits_refilled_at IS 'The last refill (or when the refill was set); the next is one interval later.';
