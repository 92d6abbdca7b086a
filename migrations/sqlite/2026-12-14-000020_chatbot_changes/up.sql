-- Announcing chatbot changes to other replicas (issue 28) is PostgreSQL's:
-- one process serves a SQLite file. This keeps both stores at the same
-- schema version.
SELECT 1;
