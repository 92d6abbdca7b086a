-- Events for other services (issue 30, first step): every change the audit
-- log records in an organization is also an event of that organization,
-- written in the change's own transaction (an outbox). Each organization
-- numbers its events: the number is taken by incrementing the
-- organization's counter row, whose lock the transaction then holds until
-- it commits, so an organization's events commit in the order of their
-- numbers and a reader resuming after number N never misses one committed
-- later with a lower number. A row of its own, not a column of
-- organizations: a change that already holds a key-share lock on the
-- organization (a chatbot's foreign key) must not upgrade it while a
-- DeleteOrganization waits for the row.
CREATE TABLE organization_event_counters (
    organization_id UUID PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    last_sequence BIGINT NOT NULL
);
COMMENT ON TABLE organization_event_counters IS 'Each organization''s newest event number; no row: no event yet.';
COMMENT ON COLUMN organization_event_counters.organization_id IS 'The organization; deleting it deletes its counter.';
COMMENT ON COLUMN organization_event_counters.last_sequence IS 'The number of the organization''s newest event.';

CREATE TABLE organization_events (
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    sequence BIGINT NOT NULL,
    id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    changes TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (organization_id, sequence)
);
-- Retention deletes by age.
CREATE INDEX organization_events_created_at_idx ON organization_events (created_at);

COMMENT ON TABLE organization_events IS 'Every change in an organization, in commit order, for WatchEvents; purged after AUDIT_RETENTION_DAYS.';
COMMENT ON COLUMN organization_events.organization_id IS 'The organization the change was in; deleting it deletes its events.';
COMMENT ON COLUMN organization_events.sequence IS 'The event''s number within its organization, in commit order from 1.';
COMMENT ON COLUMN organization_events.id IS 'Stable id of the event, the same wherever it is delivered.';
COMMENT ON COLUMN organization_events.event_type IS 'What happened, as the audit log names it (api_key.revoke, chatbot.update, ...).';
COMMENT ON COLUMN organization_events.resource_type IS 'The kind of resource changed (chatbot, api_key, organization, ...).';
COMMENT ON COLUMN organization_events.resource_id IS 'Its id.';
COMMENT ON COLUMN organization_events.changes IS 'JSON array of the changed fields (field, and old and new values where the audit log keeps them); never a secret.';
COMMENT ON COLUMN organization_events.created_at IS 'When the change was made.';
