-- The SQLite twin of migrations/postgres/2026-12-10-000016_event_publishing.
ALTER TABLE organization_events ADD COLUMN resource_state BLOB;

CREATE TABLE organization_event_publications (
    organization_id TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    published_sequence INTEGER NOT NULL
);
