-- The SQLite twin of migrations/postgres/2026-12-07-000013_replaced_by.
ALTER TABLE api_keys ADD COLUMN replaced_by INTEGER REFERENCES api_keys (id) ON DELETE SET NULL;
