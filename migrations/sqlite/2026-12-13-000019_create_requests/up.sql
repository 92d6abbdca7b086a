-- The SQLite twin of migrations/postgres/2026-12-13-000019_create_requests.
CREATE TABLE create_requests (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    resource_id TEXT NOT NULL,
    secret_salt BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX create_requests_created_at_idx ON create_requests (created_at);
