//! Typed identifiers, so a chatbot id can never be passed where a user id is
//! expected.

use std::fmt;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, ToSql};
use diesel::sql_types;
use diesel::sqlite::{Sqlite, SqliteValue};
use uuid::Uuid;

use super::FieldViolation;
use crate::sql_types::{self as db_types, DbUuid};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, AsExpression, FromSqlRow)]
        #[diesel(sql_type = DbUuid)]
        pub struct $name(pub Uuid);

        impl ToSql<DbUuid, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
                db_types::uuid_to_pg(&self.0, out)
            }
        }

        impl FromSql<DbUuid, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
                db_types::uuid_from_pg(bytes).map(Self)
            }
        }

        impl ToSql<DbUuid, Sqlite> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> diesel::serialize::Result {
                db_types::uuid_to_sqlite(&self.0, out)
            }
        }

        impl FromSql<DbUuid, Sqlite> for $name {
            fn from_sql(bytes: SqliteValue<'_, '_, '_>) -> diesel::deserialize::Result<Self> {
                db_types::uuid_from_sqlite(bytes).map(Self)
            }
        }

        impl $name {
            /// A new, time-ordered id (UUIDv7 keeps index inserts local).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses a UUID string from request field `field`.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
                if value.is_empty() {
                    return Err(FieldViolation::new(field, "is required"));
                }
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| FieldViolation::new(field, "must be a UUID"))
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(value).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Id of a user.
    UserId
);
uuid_id!(
    /// Id of a chatbot.
    ChatbotId
);
uuid_id!(
    /// Id of one refresh token.
    RefreshTokenId
);
uuid_id!(
    /// Id of a login session: every refresh token rotated from one login
    /// shares it (the refresh-token family), and every access token issued
    /// in it names it.
    SessionId
);

/// Id of an API key (auto-increment, as in the original data model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql_types::BigInt)]
pub struct ApiKeyId(pub i64);

impl ToSql<sql_types::BigInt, Pg> for ApiKeyId {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
        <i64 as ToSql<sql_types::BigInt, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<sql_types::BigInt, Pg> for ApiKeyId {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        <i64 as FromSql<sql_types::BigInt, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<sql_types::BigInt, Sqlite> for ApiKeyId {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> diesel::serialize::Result {
        <i64 as ToSql<sql_types::BigInt, Sqlite>>::to_sql(&self.0, out)
    }
}

impl FromSql<sql_types::BigInt, Sqlite> for ApiKeyId {
    fn from_sql(bytes: SqliteValue<'_, '_, '_>) -> diesel::deserialize::Result<Self> {
        <i64 as FromSql<sql_types::BigInt, Sqlite>>::from_sql(bytes).map(Self)
    }
}

impl ApiKeyId {
    pub fn parse(field: &str, value: i64) -> Result<Self, FieldViolation> {
        if value <= 0 {
            return Err(FieldViolation::new(field, "must be a positive API key id"));
        }
        Ok(Self(value))
    }
}

impl std::str::FromStr for ApiKeyId {
    type Err = std::num::ParseIntError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        value.parse().map(Self)
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
