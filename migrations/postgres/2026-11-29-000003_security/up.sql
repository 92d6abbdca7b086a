-- Protections that must hold across replicas live in the database they share:
-- sessions (so signing out, losing a role or being deleted takes effect at
-- once), the login throttle's budgets, and a key's single replacement.

CREATE TABLE sessions (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

COMMENT ON TABLE sessions IS 'One per login; access tokens name theirs (claim sid) and die with it.';
COMMENT ON COLUMN sessions.id IS 'The refresh-token family id of the login.';
COMMENT ON COLUMN sessions.user_id IS 'User signed in; deleting the user deletes the session.';
COMMENT ON COLUMN sessions.created_at IS 'Login time.';
COMMENT ON COLUMN sessions.revoked_at IS 'When logout, refresh-token re-use or a password change ended it.';

-- Every existing login becomes a session; a family whose tokens are all
-- revoked is a revoked session.
INSERT INTO sessions (id, user_id, created_at, revoked_at)
SELECT family_id,
       user_id,
       min(created_at),
       CASE WHEN count(*) = count(revoked_at) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id, user_id;

CREATE TABLE login_attempts (
    subject BYTEA PRIMARY KEY,
    window_start TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL
);
-- The periodic purge of ended windows.
CREATE INDEX login_attempts_window_start_idx ON login_attempts (window_start);

COMMENT ON TABLE login_attempts IS 'Login throttle: password checks per email and per client address in the current window.';
COMMENT ON COLUMN login_attempts.subject IS 'SHA-256 of "email:<address>" or "address:<client address or IPv6 /64>".';
COMMENT ON COLUMN login_attempts.window_start IS 'Start of the current window.';
COMMENT ON COLUMN login_attempts.attempts IS 'Password checks in the window that did not succeed, in flight ones included.';

ALTER TABLE api_keys ADD COLUMN rotated_at TIMESTAMPTZ;
COMMENT ON COLUMN api_keys.rotated_at IS 'When RotateApiKey replaced the key; a key is replaced at most once.';
