-- The retention purges find the oldest rows by these columns, a batch at a
-- time; without them every batch would scan its table. Adding an index
-- changes nothing an older replica reads or writes.
CREATE INDEX api_key_usage_hour ON api_key_usage (hour);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
CREATE INDEX sessions_created_at ON sessions (created_at);
