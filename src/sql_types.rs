//! Column types that mean the same on both backends, so `schema.rs` and
//! every query are written once. A leaf module: `domain`'s typed ids and
//! `db`'s tables both use it, so it imports neither. PostgreSQL keeps its
//! native `uuid` and `timestamptz`; SQLite, which has neither, stores text
//! whose byte order is the value order (lowercase hyphenated UUIDs; RFC 3339 UTC timestamps with
//! exactly six fractional digits), so keyset pagination sorts identically.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::query_builder::QueryId;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{self, SqlType};
use diesel::sqlite::{Sqlite, SqliteValue};
use uuid::Uuid;

/// A UUID: `uuid` on PostgreSQL, lowercase hyphenated `TEXT` on SQLite.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[diesel(postgres_type(oid = 2950, array_oid = 2951))]
#[diesel(sqlite_type(name = "Text"))]
pub struct DbUuid;

/// An instant: `timestamptz` on PostgreSQL, RFC 3339 UTC `TEXT` with
/// microseconds (PostgreSQL's precision) on SQLite.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[diesel(postgres_type(oid = 1184, array_oid = 1185))]
#[diesel(sqlite_type(name = "Text"))]
pub struct DbTimestamp;

/// Serialises a UUID for either backend; the typed ids delegate here.
pub fn uuid_to_pg<'b>(value: &'b Uuid, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
    <Uuid as ToSql<sql_types::Uuid, Pg>>::to_sql(value, out)
}

pub fn uuid_from_pg(value: PgValue<'_>) -> deserialize::Result<Uuid> {
    <Uuid as FromSql<sql_types::Uuid, Pg>>::from_sql(value)
}

pub fn uuid_to_sqlite(value: &Uuid, out: &mut Output<'_, '_, Sqlite>) -> serialize::Result {
    out.set_value(value.hyphenated().to_string());
    Ok(IsNull::No)
}

pub fn uuid_from_sqlite(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Uuid> {
    let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(value)?;
    Ok(Uuid::parse_str(&text)?)
}

/// The SQLite text form of an instant. Fixed width, so text order is time
/// order; truncated to microseconds as PostgreSQL stores them.
pub fn sqlite_timestamp(value: &DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl ToSql<DbTimestamp, Pg> for DateTime<Utc> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<sql_types::Timestamptz, Pg>>::to_sql(self, out)
    }
}

impl FromSql<DbTimestamp, Pg> for DateTime<Utc> {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <DateTime<Utc> as FromSql<sql_types::Timestamptz, Pg>>::from_sql(value)
    }
}

impl ToSql<DbTimestamp, Sqlite> for DateTime<Utc> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_timestamp(self));
        Ok(IsNull::No)
    }
}

impl FromSql<DbTimestamp, Sqlite> for DateTime<Utc> {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(value)?;
        Ok(DateTime::parse_from_rfc3339(&text)?.with_timezone(&Utc))
    }
}

/// An instant written to a [`DbTimestamp`] column or compared with one.
/// Rows read back as plain `DateTime<Utc>`; this wrapper exists because
/// diesel's blanket impls leave no room to make the foreign `DateTime` an
/// expression of a custom SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, AsExpression)]
#[diesel(sql_type = DbTimestamp)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now())
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl ToSql<DbTimestamp, Pg> for Timestamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<DbTimestamp, Pg>>::to_sql(&self.0, out)
    }
}

impl ToSql<DbTimestamp, Sqlite> for Timestamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_timestamp(&self.0));
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamps_sort_as_text_in_time_order() {
        let earlier = DateTime::parse_from_rfc3339("2026-11-28T09:59:59.999999Z")
            .unwrap()
            .with_timezone(&Utc);
        let later = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sqlite_timestamp(&later), "2026-11-28T10:00:00.000000Z");
        assert!(sqlite_timestamp(&earlier) < sqlite_timestamp(&later));
    }

    #[test]
    fn sqlite_timestamps_keep_microseconds_and_drop_nanoseconds() {
        let precise = DateTime::parse_from_rfc3339("2026-11-28T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sqlite_timestamp(&precise), "2026-11-28T10:00:00.123456Z");
    }
}
