-- Events for other services (issue 30): each event carries the resource as
-- the change left it, and with NATS_URL set every event is published to
-- NATS JetStream. The outbox keeps an organization's events until they are
-- published: a replica takes an organization's publication row with
-- FOR UPDATE SKIP LOCKED, publishes the events after its number in order and
-- moves the number on, so one replica at a time publishes an organization's
-- events and none is skipped.
ALTER TABLE organization_events ADD COLUMN resource_state BYTEA;
COMMENT ON COLUMN organization_events.resource_state IS 'The resource as the change left it, encoded as the public contract''s chatbot.v1.Event with only its resource set; NULL when the change deleted it. Never a secret.';

CREATE TABLE organization_event_publications (
    organization_id UUID PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    published_sequence BIGINT NOT NULL
);
COMMENT ON TABLE organization_event_publications IS 'How far each organization''s events are published to NATS JetStream; no row: none yet.';
COMMENT ON COLUMN organization_event_publications.organization_id IS 'The organization; deleting it deletes its row.';
COMMENT ON COLUMN organization_event_publications.published_sequence IS 'The number of the organization''s newest event JetStream has acknowledged; every earlier one was acknowledged before it.';
