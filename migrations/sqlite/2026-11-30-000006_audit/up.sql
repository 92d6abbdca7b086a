-- The audit log: the SQLite twin of migrations/postgres/2026-11-30-000006_audit,
-- whose COMMENT ON statements document every column.

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    occurred_at TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('succeeded', 'denied')),
    actor_user_id TEXT,
    actor_email TEXT,
    actor_command TEXT,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    target_owner_id TEXT,
    request_id TEXT,
    client_address TEXT,
    changes TEXT NOT NULL DEFAULT '[]',
    repeats INTEGER NOT NULL DEFAULT 1,
    last_occurred_at TEXT NOT NULL,
    aggregate_key TEXT UNIQUE
);

CREATE INDEX audit_events_target_owner_id ON audit_events (target_owner_id, id);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
