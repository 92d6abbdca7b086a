-- The SQLite twin of migrations/postgres/2026-12-11-000017_webhooks.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    secret_salt BLOB NOT NULL,
    delivered_sequence INTEGER NOT NULL,
    retry_at TEXT,
    lease_until TEXT,
    lease_owner TEXT,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_organization_id_idx ON webhooks (organization_id, created_at);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_sequence INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state TEXT NOT NULL,
    redelivery BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    last_status_code INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_attempt_at TEXT,
    next_attempt_at TEXT
);
CREATE INDEX webhook_deliveries_webhook_id_idx ON webhook_deliveries (webhook_id, created_at);
CREATE INDEX webhook_deliveries_last_attempt_at_idx ON webhook_deliveries (last_attempt_at);
