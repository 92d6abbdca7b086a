-- Every change to chatbots or to who belongs to which organization is
-- announced to every replica (issue 28), whichever replica or version made
-- it, on channel chatbot_changes, delivered at commit (PostgreSQL sends a
-- transaction's identical notifications once). Replicas keep ListChatbots'
-- pages in memory and drop them all when they hear one. An UPDATE that
-- changes nothing (the row locks some writes take) announces nothing.
CREATE FUNCTION chatbot_changes_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatbot_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    announced text;
BEGIN
    FOREACH announced IN ARRAY ARRAY['chatbots', 'organization_members'] LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$s_announce_changes AFTER INSERT OR DELETE ON %1$I '
            'FOR EACH ROW EXECUTE FUNCTION chatbot_changes_announce()', announced);
        EXECUTE format(
            'CREATE TRIGGER %1$s_announce_updates AFTER UPDATE ON %1$I '
            'FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) '
            'EXECUTE FUNCTION chatbot_changes_announce()', announced);
    END LOOP;
END
$$;
