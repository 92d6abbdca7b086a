-- Key announcements (issue 28) are PostgreSQL's: one process serves a
-- SQLite file and sees every insert itself. This keeps both stores at the
-- same schema version.
SELECT 1;
