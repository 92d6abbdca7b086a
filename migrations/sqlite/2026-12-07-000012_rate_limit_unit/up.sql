-- The SQLite twin of migrations/postgres/2026-12-07-000012_rate_limit_unit.
ALTER TABLE api_key_limits ADD COLUMN rate_limit_unit TEXT NOT NULL DEFAULT 'calls'
    CHECK (rate_limit_unit IN ('calls', 'credits'));
