-- Sessions, the login throttle's budgets and a key's single replacement: the
-- SQLite twin of migrations/postgres/2026-11-29-000003_security, whose
-- COMMENT ON statements document every column.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    revoked_at TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

INSERT INTO sessions (id, user_id, created_at, revoked_at)
SELECT family_id,
       user_id,
       min(created_at),
       CASE WHEN count(*) = count(revoked_at) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id, user_id;

CREATE TABLE login_attempts (
    subject BLOB PRIMARY KEY NOT NULL,
    window_start TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX login_attempts_window_start_idx ON login_attempts (window_start);

ALTER TABLE api_keys ADD COLUMN rotated_at TEXT;
