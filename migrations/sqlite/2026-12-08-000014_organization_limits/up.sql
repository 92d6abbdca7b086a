-- The SQLite twin of migrations/postgres/2026-12-08-000014_organization_limits.
CREATE TABLE organization_limits (
    organization_id TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    rate_limit_calls INTEGER,
    rate_limit_window_ms INTEGER,
    rate_limit_unit TEXT NOT NULL DEFAULT 'calls' CHECK (rate_limit_unit IN ('calls', 'credits')),
    credits_remaining INTEGER,
    credits_refill_amount INTEGER,
    credits_refill_interval_ms INTEGER,
    credits_refilled_at TEXT,
    CHECK (
        (rate_limit_calls IS NULL) = (rate_limit_window_ms IS NULL)
        AND (rate_limit_calls IS NULL OR (rate_limit_calls > 0 AND rate_limit_window_ms > 0))
    ),
    CHECK (
        (credits_refill_amount IS NULL) = (credits_refill_interval_ms IS NULL)
        AND (credits_refill_amount IS NULL) = (credits_refilled_at IS NULL)
        AND (credits_refill_amount IS NULL OR credits_remaining IS NOT NULL)
        AND (credits_refill_amount IS NULL OR (credits_refill_amount > 0 AND credits_refill_interval_ms > 0))
    )
);

ALTER TABLE credit_reservations ADD COLUMN organization_id TEXT;
