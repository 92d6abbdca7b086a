DROP TABLE organization_event_publications;
ALTER TABLE organization_events DROP COLUMN resource_state;
