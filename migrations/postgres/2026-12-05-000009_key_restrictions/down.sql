ALTER TABLE api_key_usage DROP COLUMN insufficient_permissions;
ALTER TABLE api_key_usage DROP COLUMN address_not_allowed;
DROP INDEX api_keys_chatbot_id_external_id_idx;
ALTER TABLE api_keys DROP COLUMN external_id;
ALTER TABLE api_keys DROP COLUMN metadata;
ALTER TABLE api_keys DROP COLUMN permissions;
ALTER TABLE api_keys DROP COLUMN allowed_networks;
