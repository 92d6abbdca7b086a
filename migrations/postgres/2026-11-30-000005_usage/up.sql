-- Usage history (issue 16): how many VerifyApiKey answers each key got per
-- hour, by reason, and the credits it spent. Replicas count in memory and
-- add their counts here in batches (an upsert adding to the hour's row), so
-- every replica's counts add up and no verification writes on its own.
-- Rows stay when their key is deleted (the chatbot's totals keep its
-- history) and go with the chatbot.

CREATE TABLE api_key_usage (
    api_key_id BIGINT NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    chatbot_id UUID NOT NULL REFERENCES chatbots (id) ON DELETE CASCADE,
    valid BIGINT NOT NULL DEFAULT 0,
    revoked BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    rate_limited BIGINT NOT NULL DEFAULT 0,
    usage_exceeded BIGINT NOT NULL DEFAULT 0,
    credits_spent BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour),
    CONSTRAINT api_key_usage_counts_not_negative CHECK (
        valid >= 0 AND revoked >= 0 AND expired >= 0 AND rate_limited >= 0
        AND usage_exceeded >= 0 AND credits_spent >= 0
    )
);

CREATE INDEX api_key_usage_chatbot_hour ON api_key_usage (chatbot_id, hour);

COMMENT ON TABLE api_key_usage IS 'VerifyApiKey answers per key per hour, added up from every replica''s counts.';
COMMENT ON COLUMN api_key_usage.api_key_id IS 'The key (no foreign key: the history outlives a deleted key).';
COMMENT ON COLUMN api_key_usage.hour IS 'Start of the hour (UTC) the answers were given in.';
COMMENT ON COLUMN api_key_usage.chatbot_id IS 'The key''s chatbot; deleting it deletes its keys'' history.';
COMMENT ON COLUMN api_key_usage.valid IS 'Answers VALID.';
COMMENT ON COLUMN api_key_usage.revoked IS 'Answers REVOKED.';
COMMENT ON COLUMN api_key_usage.expired IS 'Answers EXPIRED.';
COMMENT ON COLUMN api_key_usage.rate_limited IS 'Answers RATE_LIMITED.';
COMMENT ON COLUMN api_key_usage.usage_exceeded IS 'Answers USAGE_EXCEEDED.';
COMMENT ON COLUMN api_key_usage.credits_spent IS 'Credits the VALID answers spent.';
