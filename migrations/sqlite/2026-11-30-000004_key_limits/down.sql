DROP TABLE api_key_limits;
