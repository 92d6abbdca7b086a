DROP TABLE api_keys;
DROP TABLE chatbots;
DROP TABLE users;
