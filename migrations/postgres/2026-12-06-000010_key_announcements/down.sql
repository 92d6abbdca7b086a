DROP TRIGGER api_keys_announce ON api_keys;
DROP FUNCTION api_keys_announce();
