-- The audit log (issue 16): one row per change, written in the change's own
-- transaction, so neither commits without the other. Append-only, except
-- that a refused attempt (a failed login, a PERMISSION_DENIED) repeated
-- within the hour adds to its row (repeats, last_occurred_at) rather than
-- adding a row, so that nobody can grow the table without bound. Rows past
-- retention are deleted.

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor_user_id UUID,
    actor_email TEXT,
    actor_command TEXT,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    target_owner_id UUID,
    request_id TEXT,
    client_address TEXT,
    changes TEXT NOT NULL DEFAULT '[]',
    repeats BIGINT NOT NULL DEFAULT 1,
    last_occurred_at TIMESTAMPTZ NOT NULL,
    aggregate_key TEXT UNIQUE,
    CONSTRAINT audit_events_outcome_known CHECK (outcome IN ('succeeded', 'denied'))
);

CREATE INDEX audit_events_target_owner_id ON audit_events (target_owner_id, id);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);

COMMENT ON TABLE audit_events IS 'Every change, recorded in the change''s own transaction.';
COMMENT ON COLUMN audit_events.id IS 'Increasing id; the list order.';
COMMENT ON COLUMN audit_events.occurred_at IS 'When it happened.';
COMMENT ON COLUMN audit_events.action IS 'What happened, e.g. api_key.revoke.';
COMMENT ON COLUMN audit_events.outcome IS 'succeeded or denied.';
COMMENT ON COLUMN audit_events.actor_user_id IS 'The signed-in user who did it; NULL for a command.';
COMMENT ON COLUMN audit_events.actor_email IS 'That user''s email at the time.';
COMMENT ON COLUMN audit_events.actor_command IS 'The operator command that did it; NULL for an RPC.';
COMMENT ON COLUMN audit_events.target_type IS 'user, chatbot or api_key.';
COMMENT ON COLUMN audit_events.target_id IS 'The target''s id (UUID, or an API key''s number).';
COMMENT ON COLUMN audit_events.target_owner_id IS 'The user who owns the target (for a user, the user); who may see the event.';
COMMENT ON COLUMN audit_events.request_id IS 'The request''s x-request-id.';
COMMENT ON COLUMN audit_events.client_address IS 'The client''s IP address.';
COMMENT ON COLUMN audit_events.changes IS 'JSON array of {field, old, new}; never a secret.';
COMMENT ON COLUMN audit_events.repeats IS 'How many times it happened (refused attempts repeated within the hour share a row).';
COMMENT ON COLUMN audit_events.last_occurred_at IS 'When it last happened.';
COMMENT ON COLUMN audit_events.aggregate_key IS 'For refused attempts: what repeats share (action, actor, target, address, hour); NULL otherwise.';
