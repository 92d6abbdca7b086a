//! Column types that mean the same on both backends, so `schema/` and
//! every query are written once, and how the domain's values are stored in
//! them. PostgreSQL keeps its native `uuid` and `timestamptz`; SQLite, which
//! has neither, stores text whose byte order is the value order (lowercase
//! hyphenated UUIDs; RFC 3339 UTC timestamps with exactly six fractional
//! digits), so keyset pagination sorts identically.
//!
//! The domain's typed ids ([`UserId`], [`ApiKeyId`], ...) are column values
//! only here: `domain` knows no database, so the diesel traits its derives
//! would have written are written below by hand.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, Queryable};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::query_builder::QueryId;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{self, Nullable, SingleValue, SqlType};
use diesel::sqlite::{Sqlite, SqliteValue};
use uuid::Uuid;

use crate::domain::{
    ApiKeyId, ChatbotId, CreateRequestUuid, EventId, InvitationId, OrganizationId, RefreshTokenId,
    ReplicaId, ServiceAccountId, SessionId, UserId, WebhookDeliveryId, WebhookId,
};

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

impl ToSql<DbUuid, Pg> for Uuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Uuid as ToSql<sql_types::Uuid, Pg>>::to_sql(self, out)
    }
}

impl FromSql<DbUuid, Pg> for Uuid {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <Uuid as FromSql<sql_types::Uuid, Pg>>::from_sql(value)
    }
}

impl ToSql<DbUuid, Sqlite> for Uuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<DbUuid, Sqlite> for Uuid {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(value)?;
        Ok(Uuid::parse_str(&text)?)
    }
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

/// A UUID bound as a [`DbUuid`] parameter. The typed ids bind through it:
/// its derived `AsExpression` gives them an expression type without naming
/// diesel's internal one. `pub` inside a private module: the ids' public
/// impls name it, which a private type may not be (E0446), yet no other
/// module can reach it.
mod bind {
    use diesel::expression::AsExpression;
    use uuid::Uuid;

    use super::DbUuid;

    #[derive(Debug, Clone, Copy, AsExpression)]
    #[diesel(sql_type = DbUuid)]
    pub struct SqlUuid(pub Uuid);

    impl From<Uuid> for SqlUuid {
        fn from(value: Uuid) -> Self {
            Self(value)
        }
    }
}

use bind::SqlUuid;

impl<DB: Backend> ToSql<DbUuid, DB> for SqlUuid
where
    Uuid: ToSql<DbUuid, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.0.to_sql(out)
    }
}

/// Makes each typed id `$id($inner)` a value of columns of SQL type `$sql`,
/// bound as `$bind`: what `#[derive(AsExpression, FromSqlRow)]` would
/// generate on the type, which a derive can only do where the type is
/// defined. A macro because the impls are the same for each id, and ten
/// per id.
macro_rules! id_columns {
    ($($id:ident($inner:ty) as $sql:ty, bound as $bind:ty;)*) => {$(
        impl<DB: Backend> ToSql<$sql, DB> for $id
        where
            $inner: ToSql<$sql, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.0.to_sql(out)
            }
        }

        impl<DB: Backend> ToSql<Nullable<$sql>, DB> for $id
        where
            Self: ToSql<$sql, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                <Self as ToSql<$sql, DB>>::to_sql(self, out)
            }
        }

        impl<DB: Backend> FromSql<$sql, DB> for $id
        where
            $inner: FromSql<$sql, DB>,
        {
            fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
                <$inner as FromSql<$sql, DB>>::from_sql(value).map(Self)
            }
        }

        impl<DB, ST> Queryable<ST, DB> for $id
        where
            DB: Backend,
            ST: SingleValue,
            Self: FromSql<ST, DB>,
        {
            type Row = Self;

            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }

        id_columns!(@bind $id, $sql, $bind);
        id_columns!(@bind $id, Nullable<$sql>, $bind);
    )*};
    (@bind $id:ident, $sql:ty, $bind:ty) => {
        impl AsExpression<$sql> for $id {
            type Expression = <$bind as AsExpression<$sql>>::Expression;

            fn as_expression(self) -> Self::Expression {
                <$bind as AsExpression<$sql>>::as_expression(<$bind>::from(self.0))
            }
        }

        id_columns!(@by_ref $id, $sql, &$id);
        id_columns!(@by_ref $id, $sql, &&$id);
    };
    (@by_ref $id:ident, $sql:ty, $by_ref:ty) => {
        impl AsExpression<$sql> for $by_ref {
            type Expression = <$id as AsExpression<$sql>>::Expression;

            fn as_expression(self) -> Self::Expression {
                // `self` coerces to `&$id`.
                <$id as AsExpression<$sql>>::as_expression(<$id as Clone>::clone(self))
            }
        }
    };
}

id_columns! {
    UserId(Uuid) as DbUuid, bound as SqlUuid;
    ChatbotId(Uuid) as DbUuid, bound as SqlUuid;
    RefreshTokenId(Uuid) as DbUuid, bound as SqlUuid;
    SessionId(Uuid) as DbUuid, bound as SqlUuid;
    OrganizationId(Uuid) as DbUuid, bound as SqlUuid;
    InvitationId(Uuid) as DbUuid, bound as SqlUuid;
    ServiceAccountId(Uuid) as DbUuid, bound as SqlUuid;
    EventId(Uuid) as DbUuid, bound as SqlUuid;
    WebhookId(Uuid) as DbUuid, bound as SqlUuid;
    WebhookDeliveryId(Uuid) as DbUuid, bound as SqlUuid;
    ReplicaId(Uuid) as DbUuid, bound as SqlUuid;
    CreateRequestUuid(Uuid) as DbUuid, bound as SqlUuid;
    ApiKeyId(i64) as sql_types::BigInt, bound as i64;
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
