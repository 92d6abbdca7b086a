-- Organizations get a rate limit and credits of their own (issue 29),
-- shared by every key of every chatbot they own: a verification must fit
-- both the key's and its organization's. The same columns as
-- api_key_limits, one row per organization that has either; organizations
-- without a row keep the verification path that writes nothing.
CREATE TABLE organization_limits (
    organization_id UUID PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    rate_limit_calls BIGINT,
    rate_limit_window_ms BIGINT,
    rate_limit_unit TEXT NOT NULL DEFAULT 'calls'
        CONSTRAINT organization_limits_rate_limit_unit_known CHECK (rate_limit_unit IN ('calls', 'credits')),
    credits_remaining BIGINT,
    credits_refill_amount BIGINT,
    credits_refill_interval_ms BIGINT,
    credits_refilled_at TIMESTAMPTZ,
    CONSTRAINT organization_limits_rate_limit_whole CHECK (
        (rate_limit_calls IS NULL) = (rate_limit_window_ms IS NULL)
        AND (rate_limit_calls IS NULL OR (rate_limit_calls > 0 AND rate_limit_window_ms > 0))
    ),
    CONSTRAINT organization_limits_refill_whole CHECK (
        (credits_refill_amount IS NULL) = (credits_refill_interval_ms IS NULL)
        AND (credits_refill_amount IS NULL) = (credits_refilled_at IS NULL)
        AND (credits_refill_amount IS NULL OR credits_remaining IS NOT NULL)
        AND (credits_refill_amount IS NULL OR (credits_refill_amount > 0 AND credits_refill_interval_ms > 0))
    )
);

COMMENT ON TABLE organization_limits IS 'An organization''s rate limit and credits, shared by all its keys; no row: neither.';
COMMENT ON COLUMN organization_limits.organization_id IS 'The organization; deleting it deletes its limits.';
COMMENT ON COLUMN organization_limits.rate_limit_calls IS 'Calls allowed per rate_limit_window_ms to all the organization''s keys together; NULL: no limit.';
COMMENT ON COLUMN organization_limits.rate_limit_window_ms IS 'The rate limit''s window in milliseconds.';
COMMENT ON COLUMN organization_limits.rate_limit_unit IS 'What rate_limit_calls counts: calls, or credits (each call its cost).';
COMMENT ON COLUMN organization_limits.credits_remaining IS 'Balance shared by all the organization''s keys; NULL: unlimited. Below zero only by settlements above their reservations.';
COMMENT ON COLUMN organization_limits.credits_refill_amount IS 'The balance after each refill; NULL: no refill.';
COMMENT ON COLUMN organization_limits.credits_refill_interval_ms IS 'Time between refills in milliseconds.';
COMMENT ON COLUMN organization_limits.credits_refilled_at IS 'The last refill (or when the refill was set); the next is one interval later.';

-- A reservation also holds its cost on the organization's balance when the
-- organization has credits; settling or releasing it gives back there too.
-- No foreign key: an organization can only be deleted without chatbots, so
-- without keys and their open reservations.
ALTER TABLE credit_reservations ADD COLUMN organization_id UUID;
COMMENT ON COLUMN credit_reservations.organization_id IS 'The organization whose balance also holds it; NULL: none.';
