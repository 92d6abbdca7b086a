-- Credit reservations: the SQLite twin of
-- migrations/postgres/2026-12-07-000011_credit_reservations, whose COMMENT ON
-- statements document every column.

CREATE TABLE credit_reservations (
    token_hash BLOB PRIMARY KEY NOT NULL,
    api_key_id INTEGER NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    chatbot_id TEXT NOT NULL,
    reserved INTEGER NOT NULL CHECK (reserved >= 0),
    from_balance BOOLEAN NOT NULL,
    state TEXT NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'settled', 'released', 'expired')),
    charged INTEGER CHECK (charged >= 0),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    finished_at TEXT,
    CHECK ((state = 'open') = (charged IS NULL) AND (state = 'open') = (finished_at IS NULL))
);
CREATE INDEX credit_reservations_open_expires_at_idx ON credit_reservations (expires_at) WHERE state = 'open';
CREATE INDEX credit_reservations_api_key_id_idx ON credit_reservations (api_key_id);
CREATE INDEX credit_reservations_finished_at_idx ON credit_reservations (finished_at) WHERE state <> 'open';

-- SQLite cannot drop a CHECK: the limits table is rebuilt without the one
-- that kept balances at or above zero (nothing references it).
CREATE TABLE api_key_limits_new (
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
    CHECK (
        (credits_refill_amount IS NULL) = (credits_refill_interval_ms IS NULL)
        AND (credits_refill_amount IS NULL) = (credits_refilled_at IS NULL)
        AND (credits_refill_amount IS NULL OR credits_remaining IS NOT NULL)
        AND (credits_refill_amount IS NULL OR (credits_refill_amount > 0 AND credits_refill_interval_ms > 0))
    )
);
INSERT INTO api_key_limits_new SELECT api_key_id, rate_limit_calls, rate_limit_window_ms,
    credits_remaining, credits_refill_amount, credits_refill_interval_ms, credits_refilled_at
    FROM api_key_limits;
DROP TABLE api_key_limits;
ALTER TABLE api_key_limits_new RENAME TO api_key_limits;

ALTER TABLE api_key_usage ADD COLUMN credits_reserved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_settled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_expired INTEGER NOT NULL DEFAULT 0;
