ALTER TABLE api_key_usage DROP COLUMN credits_expired;
ALTER TABLE api_key_usage DROP COLUMN credits_refunded;
ALTER TABLE api_key_usage DROP COLUMN credits_settled;
ALTER TABLE api_key_usage DROP COLUMN credits_reserved;
UPDATE api_key_limits SET credits_remaining = 0 WHERE credits_remaining < 0;
DROP TABLE credit_reservations;
