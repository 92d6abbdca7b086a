//! Updates prepared once per PostgreSQL connection.
//!
//! diesel keeps a connection's prepared statements by the statement's type
//! when that fixes its text (most selects; inserts, see `db::models`), else
//! by its text and bind types, when the statement says caching is safe.
//! Every UPDATE, every upsert (`ON CONFLICT ... DO UPDATE`) and every
//! `sql_query` says it is not, whatever its text, so each was prepared
//! anew: a Parse round trip more per statement on PostgreSQL. A statement
//! kept by its exact text and bind types is the same statement whenever it
//! is used again, so [`PreparedOnce`] says caching is safe. What it wraps
//! must not build unboundedly many texts: each update wrapped renders a
//! fixed text per set of columns changed (`eq_any` is `= ANY($n)` on
//! PostgreSQL), each upsert one row's, and the webhooks' lease is one
//! fixed text. (A multi-row insert is not wrapped: its text grows with its
//! rows.)
//!
//! diesel keeps `is_safe_to_cache_prepared` out of its documented API (for
//! connection implementations, as diesel-async's own statement helper
//! overrides it). If a diesel release hides it for good, this fails to
//! compile; if one stops asking it, updates are prepared anew again.
//!
//! On SQLite a statement is prepared in process, with no round trip, and
//! an `IN (...)` list's text varies with its length, so there it changes
//! nothing.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

/// A statement whose prepared form PostgreSQL connections keep.
#[derive(Debug, Clone, Copy)]
pub struct PreparedOnce<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for PreparedOnce<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: QueryFragment<Sqlite>> QueryFragment<Sqlite> for PreparedOnce<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

/// Kept by text, never by type: one type may render several texts.
impl<Q> QueryId for PreparedOnce<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for PreparedOnce<Q> {
    type SqlType = Q::SqlType;
}
