ALTER TABLE api_keys DROP COLUMN rotated_at;
DROP TABLE login_attempts;
DROP TABLE sessions;
