-- Refresh tokens of logged-in sessions; only digests are stored.

CREATE TABLE refresh_tokens (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id UUID NOT NULL,
    token_hash BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);

COMMENT ON TABLE refresh_tokens IS 'Refresh tokens; one family per login, rotated on every refresh.';
COMMENT ON COLUMN refresh_tokens.id IS 'UUIDv7 assigned by the server.';
COMMENT ON COLUMN refresh_tokens.user_id IS 'User the token signs in.';
COMMENT ON COLUMN refresh_tokens.family_id IS 'Shared by every token rotated from one login; re-use revokes the family.';
COMMENT ON COLUMN refresh_tokens.token_hash IS 'SHA-256 digest of the token; the token itself is never stored.';
COMMENT ON COLUMN refresh_tokens.created_at IS 'Issue time.';
COMMENT ON COLUMN refresh_tokens.expires_at IS 'When the token stops working.';
COMMENT ON COLUMN refresh_tokens.used_at IS 'When it was exchanged for a new token; using it again is re-use.';
COMMENT ON COLUMN refresh_tokens.revoked_at IS 'When it was revoked by logout, re-use or password change.';
