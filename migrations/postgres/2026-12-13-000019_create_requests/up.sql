-- Creates safe to retry (issue 34, AIP-155): a create that names a
-- request_id records it, in its own transaction, with a digest of the
-- request and what it created. A retry by the same caller finds the row
-- (waiting, on PostgreSQL, for a first attempt still in flight to commit
-- or roll back) and returns the first result instead of creating again.
-- Rows are purged after a day.
CREATE TABLE create_requests (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id UUID NOT NULL,
    request_digest BYTEA NOT NULL,
    resource_id TEXT NOT NULL,
    secret_salt BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX create_requests_created_at_idx ON create_requests (created_at);
COMMENT ON TABLE create_requests IS 'The request ids creates were made with, for a day, so a retried create returns the first result.';
COMMENT ON COLUMN create_requests.caller IS 'Who made the request: user:<id> or service_account:<id>.';
COMMENT ON COLUMN create_requests.method IS 'The RPC, e.g. CreateApiKey.';
COMMENT ON COLUMN create_requests.request_id IS 'The caller''s id for the request.';
COMMENT ON COLUMN create_requests.request_digest IS 'SHA-256 of the request without its request_id: a reuse for another request is refused.';
COMMENT ON COLUMN create_requests.resource_id IS 'What the first request created.';
COMMENT ON COLUMN create_requests.secret_salt IS 'CreateApiKey: the random salt its secret was derived from with SECRET_KEY (useless alone), so a retry shows the same secret; NULL without SECRET_KEY.';
COMMENT ON COLUMN create_requests.created_at IS 'When the first request was made; purged a day later.';
