-- The SQLite twin of migrations/postgres/2026-12-09-000015_organization_events.
CREATE TABLE organization_event_counters (
    organization_id TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    last_sequence INTEGER NOT NULL
);

CREATE TABLE organization_events (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    changes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, sequence)
);
CREATE INDEX organization_events_created_at_idx ON organization_events (created_at);
