-- Usage history: the SQLite twin of migrations/postgres/2026-11-30-000005_usage,
-- whose COMMENT ON statements document every column.

CREATE TABLE api_key_usage (
    api_key_id INTEGER NOT NULL,
    hour TEXT NOT NULL,
    chatbot_id TEXT NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    valid INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    usage_exceeded INTEGER NOT NULL DEFAULT 0,
    credits_spent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour),
    CHECK (
        valid >= 0 AND revoked >= 0 AND expired >= 0 AND rate_limited >= 0
        AND usage_exceeded >= 0 AND credits_spent >= 0
    )
);

CREATE INDEX api_key_usage_chatbot_hour ON api_key_usage (chatbot_id, hour);
