DROP TABLE organization_events;
DROP TABLE organization_event_counters;
