-- Webhooks (issue 30): an organization's endpoints its events are delivered
-- to, signed as Standard Webhooks says. Each webhook keeps how far it got in
-- its organization's events (delivered_sequence); a replica takes a webhook
-- for a while (lease_until, lease_owner: a lease, so no connection or
-- transaction stays open while an endpoint answers), delivers its next
-- events in order and moves the number on. The signing secret is not
-- stored: it is derived from the server's SECRET_KEY and secret_salt.
CREATE TABLE webhooks (
    id UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    disabled_reason TEXT NOT NULL,
    secret_salt BYTEA NOT NULL,
    delivered_sequence BIGINT NOT NULL,
    retry_at TIMESTAMPTZ,
    lease_until TIMESTAMPTZ,
    lease_owner UUID,
    created_by UUID REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_organization_id_idx ON webhooks (organization_id, created_at);

COMMENT ON TABLE webhooks IS 'Endpoints an organization''s events are delivered to (WebhookService).';
COMMENT ON COLUMN webhooks.id IS 'Id of the webhook.';
COMMENT ON COLUMN webhooks.organization_id IS 'Its organization; deleting it deletes its webhooks.';
COMMENT ON COLUMN webhooks.url IS 'Where events are POSTed.';
COMMENT ON COLUMN webhooks.event_types IS 'JSON array of the event types delivered; empty: every type.';
COMMENT ON COLUMN webhooks.description IS 'A note for people.';
COMMENT ON COLUMN webhooks.state IS 'active or disabled.';
COMMENT ON COLUMN webhooks.disabled_reason IS 'Why the service disabled it; empty otherwise.';
COMMENT ON COLUMN webhooks.secret_salt IS 'Random bytes the signing secret is derived from, with SECRET_KEY; not a secret alone.';
COMMENT ON COLUMN webhooks.delivered_sequence IS 'The number of the organization''s last event this webhook is done with (delivered, skipped, or given up on).';
COMMENT ON COLUMN webhooks.retry_at IS 'When the next event''s delivery is attempted again after a failure; NULL: as soon as there is one.';
COMMENT ON COLUMN webhooks.lease_until IS 'Until when a replica delivers this webhook''s events; NULL or past: no one.';
COMMENT ON COLUMN webhooks.lease_owner IS 'The replica (a random id per process) holding the lease.';
COMMENT ON COLUMN webhooks.created_by IS 'The user who created it.';
COMMENT ON COLUMN webhooks.created_at IS 'When it was created.';
COMMENT ON COLUMN webhooks.updated_at IS 'When it was last changed.';

CREATE TABLE webhook_deliveries (
    id UUID PRIMARY KEY,
    webhook_id UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_sequence BIGINT NOT NULL,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    state TEXT NOT NULL,
    redelivery BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL,
    last_status_code INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ,
    next_attempt_at TIMESTAMPTZ
);
-- Listing, newest first; the next due redelivery.
CREATE INDEX webhook_deliveries_webhook_id_idx ON webhook_deliveries (webhook_id, created_at);
-- Retention deletes finished ones by age.
CREATE INDEX webhook_deliveries_last_attempt_at_idx ON webhook_deliveries (last_attempt_at);

COMMENT ON TABLE webhook_deliveries IS 'Each event sent to each webhook, with its attempts and the last answer; finished ones purged after SESSION_RETENTION_DAYS.';
COMMENT ON COLUMN webhook_deliveries.id IS 'Id of the delivery.';
COMMENT ON COLUMN webhook_deliveries.webhook_id IS 'The webhook; deleting it deletes its deliveries.';
COMMENT ON COLUMN webhook_deliveries.event_sequence IS 'The event''s number in its organization.';
COMMENT ON COLUMN webhook_deliveries.event_id IS 'The event''s id: the webhook-id header.';
COMMENT ON COLUMN webhook_deliveries.event_type IS 'The event''s type.';
COMMENT ON COLUMN webhook_deliveries.state IS 'pending, delivered or failed.';
COMMENT ON COLUMN webhook_deliveries.redelivery IS 'Sent again on request (RedeliverWebhook), apart from the webhook''s order.';
COMMENT ON COLUMN webhook_deliveries.attempts IS 'Attempts made.';
COMMENT ON COLUMN webhook_deliveries.last_status_code IS 'HTTP status of the last answer; 0: none.';
COMMENT ON COLUMN webhook_deliveries.last_error IS 'What went wrong in the last attempt; empty after a success.';
COMMENT ON COLUMN webhook_deliveries.created_at IS 'When it was first attempted.';
COMMENT ON COLUMN webhook_deliveries.last_attempt_at IS 'When it was last attempted.';
COMMENT ON COLUMN webhook_deliveries.next_attempt_at IS 'When it is attempted next, while pending.';
