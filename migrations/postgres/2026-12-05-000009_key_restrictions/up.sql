-- Key restrictions (issue 27): where a key may be used from, what it may
-- do, what its owner attaches to it, and the owner's id for its customer.
-- Kept on the key's row (the verification lookup reads it already) as JSON
-- text, written and read only by the service; defaults keep the previous
-- version's inserts working and mean "no restriction".

ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN external_id TEXT;
-- ListApiKeys filtered by external_id, in list order.
CREATE INDEX api_keys_chatbot_id_external_id_idx ON api_keys (chatbot_id, external_id, created_at, id);

COMMENT ON COLUMN api_keys.allowed_networks IS 'JSON array of CIDR networks the key may be used from; [] means anywhere.';
COMMENT ON COLUMN api_keys.permissions IS 'JSON array of the permissions the key grants; a trailing * grants a prefix.';
COMMENT ON COLUMN api_keys.metadata IS 'JSON object of string values the owner attaches; returned by VerifyApiKey.';
COMMENT ON COLUMN api_keys.external_id IS 'The owner''s own id for the customer the key was issued to.';

ALTER TABLE api_key_usage ADD COLUMN address_not_allowed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_key_usage ADD COLUMN insufficient_permissions BIGINT NOT NULL DEFAULT 0;
COMMENT ON COLUMN api_key_usage.address_not_allowed IS 'Answers ADDRESS_NOT_ALLOWED.';
COMMENT ON COLUMN api_key_usage.insufficient_permissions IS 'Answers INSUFFICIENT_PERMISSIONS.';
