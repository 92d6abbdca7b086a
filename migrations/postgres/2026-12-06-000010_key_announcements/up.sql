-- Every key inserted is announced to every replica (issue 28), whichever
-- replica or version inserted it: the first 8 bytes of its digest, in hex,
-- on channel chatbot_api_keys, delivered at commit. Replicas keep the set
-- of keys that exist in memory and answer a made-up key without a query.
CREATE FUNCTION api_keys_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatbot_api_keys', encode(substring(NEW.key_hash FROM 1 FOR 8), 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_announce
    AFTER INSERT OR UPDATE OF key_hash ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_announce();
