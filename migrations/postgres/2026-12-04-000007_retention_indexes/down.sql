DROP INDEX sessions_created_at;
DROP INDEX refresh_tokens_expires_at;
DROP INDEX api_key_usage_hour;
