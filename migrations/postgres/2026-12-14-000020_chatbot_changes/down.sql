DROP TRIGGER organization_members_announce_updates ON organization_members;
DROP TRIGGER organization_members_announce_changes ON organization_members;
DROP TRIGGER chatbots_announce_updates ON chatbots;
DROP TRIGGER chatbots_announce_changes ON chatbots;
DROP FUNCTION chatbot_changes_announce();
