-- Metering (issue 29): a VerifyApiKey with `reserve` holds its cost as a
-- reservation, settled later at the call's real cost, released, or charged
-- at the reserved amount once it expires. The reservation id is a bearer
-- capability, so only its SHA-256 digest is kept, like an API key's.
CREATE TABLE credit_reservations (
    token_hash BYTEA PRIMARY KEY,
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    chatbot_id UUID NOT NULL,
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    from_balance BOOLEAN NOT NULL,
    state TEXT NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'settled', 'released', 'expired')),
    charged BIGINT CHECK (charged >= 0),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    CONSTRAINT credit_reservations_finished_whole CHECK (
        (state = 'open') = (charged IS NULL) AND (state = 'open') = (finished_at IS NULL)
    )
);
-- The expiry sweep reads the open ones by expiry; rotation moves a key's
-- open ones; retention deletes finished ones by age.
CREATE INDEX credit_reservations_open_expires_at_idx ON credit_reservations (expires_at) WHERE state = 'open';
CREATE INDEX credit_reservations_api_key_id_idx ON credit_reservations (api_key_id);
CREATE INDEX credit_reservations_finished_at_idx ON credit_reservations (finished_at) WHERE state <> 'open';

COMMENT ON TABLE credit_reservations IS 'Credits held by VerifyApiKey with reserve until settled, released or expired.';
COMMENT ON COLUMN credit_reservations.token_hash IS 'SHA-256 digest of the reservation id; the id itself is never stored.';
COMMENT ON COLUMN credit_reservations.api_key_id IS 'The key whose balance holds it (its replacement after a rotation); deleting the key deletes it.';
COMMENT ON COLUMN credit_reservations.chatbot_id IS 'The key''s chatbot, for usage history.';
COMMENT ON COLUMN credit_reservations.reserved IS 'Credits held.';
COMMENT ON COLUMN credit_reservations.from_balance IS 'Whether the credits were taken from the key''s balance (false: a key without credits, metered only).';
COMMENT ON COLUMN credit_reservations.state IS 'open, settled, released or expired.';
COMMENT ON COLUMN credit_reservations.charged IS 'What it finally cost: the settled cost, 0 when released, the reserved amount when expired; NULL while open.';
COMMENT ON COLUMN credit_reservations.created_at IS 'When VerifyApiKey reserved it.';
COMMENT ON COLUMN credit_reservations.expires_at IS 'After this it is charged at the reserved amount and can no longer be settled.';
COMMENT ON COLUMN credit_reservations.finished_at IS 'When it was settled, released or expired.';

-- A settlement above its reservation takes the balance below zero by its
-- excess; new spends and reservations are refused until a refill or top-up.
ALTER TABLE api_key_limits DROP CONSTRAINT api_key_limits_credits_not_negative;
COMMENT ON COLUMN api_key_limits.credits_remaining IS 'Balance of credits as of the last refill, spend and settlement; NULL: unlimited. Below zero only by settlements above their reservations.';

ALTER TABLE api_key_usage ADD COLUMN credits_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_settled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN credits_expired BIGINT NOT NULL DEFAULT 0;
COMMENT ON COLUMN api_key_usage.credits_reserved IS 'Credits VALID answers with reserve held.';
COMMENT ON COLUMN api_key_usage.credits_settled IS 'Credits reservations were settled at (their real cost).';
COMMENT ON COLUMN api_key_usage.credits_refunded IS 'Credits given back by settlements below their reservation and by releases.';
COMMENT ON COLUMN api_key_usage.credits_expired IS 'Credits of reservations charged at their reserved amount because they expired.';
