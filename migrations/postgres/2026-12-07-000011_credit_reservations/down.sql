ALTER TABLE api_key_usage DROP COLUMN credits_expired;
ALTER TABLE api_key_usage DROP COLUMN credits_refunded;
ALTER TABLE api_key_usage DROP COLUMN credits_settled;
ALTER TABLE api_key_usage DROP COLUMN credits_reserved;
UPDATE api_key_limits SET credits_remaining = 0 WHERE credits_remaining < 0;
ALTER TABLE api_key_limits ADD CONSTRAINT api_key_limits_credits_not_negative CHECK (credits_remaining >= 0);
COMMENT ON COLUMN api_key_limits.credits_remaining IS 'Balance of credits as of the last refill and spend; NULL: unlimited. Never below zero.';
DROP TABLE credit_reservations;
