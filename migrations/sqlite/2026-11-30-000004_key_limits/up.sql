-- A key's own rate limit and its budget of credits: the SQLite twin of
-- migrations/postgres/2026-11-30-000004_key_limits, whose COMMENT ON
-- statements document every column.

CREATE TABLE api_key_limits (
    api_key_id INTEGER PRIMARY KEY NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    rate_limit_calls INTEGER,
    rate_limit_window_ms INTEGER,
    credits_remaining INTEGER,
    credits_refill_amount INTEGER,
    credits_refill_interval_ms INTEGER,
    credits_refilled_at TEXT,
    CHECK (
        (rate_limit_calls IS NULL) = (rate_limit_window_ms IS NULL)
        AND (rate_limit_calls IS NULL OR (rate_limit_calls > 0 AND rate_limit_window_ms > 0))
    ),
    CHECK (credits_remaining >= 0),
    CHECK (
        (credits_refill_amount IS NULL) = (credits_refill_interval_ms IS NULL)
        AND (credits_refill_amount IS NULL) = (credits_refilled_at IS NULL)
        AND (credits_refill_amount IS NULL OR credits_remaining IS NOT NULL)
        AND (credits_refill_amount IS NULL OR (credits_refill_amount > 0 AND credits_refill_interval_ms > 0))
    )
);
