//! `src/db/schema/` is kept by hand (its uuid and timestamp columns use
//! backend-neutral types), so nothing but this test ties it to the
//! migrations. It migrates a fresh database of each backend, reads the
//! tables and columns they really have, and compares them both ways with
//! what schema/ declares: every table, every column, a compatible type and
//! the same nullability. The expected side comes from the `table!` types
//! themselves (column names, SQL types, the backends' own type metadata).

use std::collections::BTreeMap;
use std::fmt::Write;

use chatbot_backend::db::{run_migrations, schema, DatabaseTarget};
use diesel::connection::Connection;
use diesel::pg::{Pg, PgMetadataLookup, PgTypeMetadata};
use diesel::sql_types::{is_nullable, BigInt, HasSqlType, Integer, SqlType, Text};
use diesel::sqlite::{Sqlite, SqliteConnection, SqliteType};
use diesel::{Column, QueryableByName, Table};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::helpers::{Backend, TestDatabase};

/// One column as schema/ declares it.
#[derive(Debug, Clone)]
struct DeclaredColumn {
    sql_type: &'static str,
    postgres_oid: u32,
    sqlite_type: SqliteType,
    nullable: bool,
}

/// One column as a migrated database has it.
#[derive(Debug, Clone)]
struct ActualColumn {
    /// The type as the database names it, for messages.
    declared_type: String,
    /// What makes a type compatible: PostgreSQL's type OID, SQLite's
    /// column affinity.
    kind: ActualKind,
    nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ActualKind {
    PostgresOid(u32),
    SqliteAffinity(Affinity),
}

/// SQLite's column affinities (https://sqlite.org/datatype3.html, 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// SQLite's rules, in its order, for a declared column type.
    fn of(declared: &str) -> Self {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("INT") {
            Self::Integer
        } else if ["CHAR", "CLOB", "TEXT"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Self::Text
        } else if declared.contains("BLOB") || declared.is_empty() {
            Self::Blob
        } else if ["REAL", "FLOA", "DOUB"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Self::Real
        } else {
            Self::Numeric
        }
    }

    /// Whether a column of this affinity stores what diesel binds as `bound`
    /// without converting it. Integers (and diesel's booleans, bound as
    /// integers) keep their value under NUMERIC affinity too, which is what
    /// a `BOOLEAN` column gets.
    fn stores(self, bound: SqliteType) -> bool {
        match bound {
            SqliteType::Binary => self == Self::Blob,
            SqliteType::Text => self == Self::Text,
            SqliteType::Float | SqliteType::Double => self == Self::Real,
            SqliteType::SmallInt | SqliteType::Integer | SqliteType::Long => {
                matches!(self, Self::Integer | Self::Numeric)
            }
        }
    }
}

/// Whether a diesel SQL type admits NULL.
trait Nullability {
    const NULLABLE: bool;
}

impl Nullability for is_nullable::IsNullable {
    const NULLABLE: bool = true;
}

impl Nullability for is_nullable::NotNull {
    const NULLABLE: bool = false;
}

/// Every type schema/ uses has a fixed OID, so no lookup ever happens.
struct NoLookup;

impl PgMetadataLookup for NoLookup {
    fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> PgTypeMetadata {
        panic!("schema/ uses {schema:?}.{type_name}, which has no fixed OID; teach this test")
    }
}

/// What a `table!` column declares.
trait DescribeColumn {
    fn describe() -> (&'static str, DeclaredColumn);
}

impl<C> DescribeColumn for C
where
    C: Column,
    C::SqlType: SqlType,
    <C::SqlType as SqlType>::IsNull: Nullability,
    Pg: HasSqlType<C::SqlType>,
    Sqlite: HasSqlType<C::SqlType>,
{
    fn describe() -> (&'static str, DeclaredColumn) {
        let postgres_oid = <Pg as HasSqlType<C::SqlType>>::metadata(&mut NoLookup)
            .oid()
            .unwrap_or_else(|error| panic!("{}: no OID: {error}", C::NAME));
        let declared = DeclaredColumn {
            sql_type: std::any::type_name::<C::SqlType>(),
            postgres_oid,
            sqlite_type: <Sqlite as HasSqlType<C::SqlType>>::metadata(&mut ()),
            nullable: <<C::SqlType as SqlType>::IsNull as Nullability>::NULLABLE,
        };
        (C::NAME, declared)
    }
}

/// A table's `all_columns` tuple, described column by column.
trait DescribeColumns {
    fn describe() -> Vec<(&'static str, DeclaredColumn)>;
}

macro_rules! describe_tuples {
    ($($column:ident)+) => {
        impl<$($column: DescribeColumn),+> DescribeColumns for ($($column,)+) {
            fn describe() -> Vec<(&'static str, DeclaredColumn)> {
                vec![$($column::describe()),+]
            }
        }
    };
}
describe_tuples!(A);
describe_tuples!(A B);
describe_tuples!(A B C);
describe_tuples!(A B C D);
describe_tuples!(A B C D E);
describe_tuples!(A B C D E F);
describe_tuples!(A B C D E F G);
describe_tuples!(A B C D E F G H);
describe_tuples!(A B C D E F G H I);
describe_tuples!(A B C D E F G H I J);
describe_tuples!(A B C D E F G H I J K);
describe_tuples!(A B C D E F G H I J K L);
describe_tuples!(A B C D E F G H I J K L M);
describe_tuples!(A B C D E F G H I J K L M N);
describe_tuples!(A B C D E F G H I J K L M N O);
describe_tuples!(A B C D E F G H I J K L M N O P);
describe_tuples!(A B C D E F G H I J K L M N O P Q);
describe_tuples!(A B C D E F G H I J K L M N O P Q R);
describe_tuples!(A B C D E F G H I J K L M N O P Q R S);

type Tables<T> = BTreeMap<String, BTreeMap<String, T>>;

fn columns_of<T>() -> BTreeMap<String, DeclaredColumn>
where
    T: Table,
    T::AllColumns: DescribeColumns,
{
    <T::AllColumns as DescribeColumns>::describe()
        .into_iter()
        .map(|(name, column)| (name.to_owned(), column))
        .collect()
}

/// The tables schema/ declares. `table!` names each table's module after
/// the table, so the names come from the schema's own items.
macro_rules! declared_tables {
    ($($table:ident),+ $(,)?) => {{
        let mut tables = Tables::new();
        $(tables.insert(
            stringify!($table).to_owned(),
            columns_of::<schema::$table::table>(),
        );)+
        tables
    }};
}

fn declared_tables() -> Tables<DeclaredColumn> {
    // Grouped by what owns what (order does not matter: `Tables` is sorted).
    let tables = declared_tables![
        users,
        sessions,
        refresh_tokens,
        login_attempts,
        organizations,
        organization_members,
        organization_invitations,
        organization_limits,
        organization_event_counters,
        organization_events,
        organization_event_publications,
        webhooks,
        webhook_deliveries,
        service_accounts,
        chatbots,
        api_keys,
        api_key_limits,
        api_key_usage,
        credit_reservations,
        create_requests,
        audit_events,
    ];
    // A table added to schema/ must be added above too, or it would go
    // unchecked.
    let in_source = [
        include_str!("../../src/db/schema/accounts.rs"),
        include_str!("../../src/db/schema/keys.rs"),
        include_str!("../../src/db/schema/teams.rs"),
        include_str!("../../src/db/schema/records.rs"),
    ]
    .iter()
    .map(|source| source.matches("diesel::table!").count())
    .sum::<usize>();
    assert_eq!(
        tables.len(),
        in_source,
        "schema/ declares {in_source} tables; list every one in declared_tables()"
    );
    tables
}

#[derive(QueryableByName)]
struct PostgresColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = BigInt)]
    type_oid: i64,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

async fn postgres_tables(url: &str) -> Tables<ActualColumn> {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    let rows: Vec<PostgresColumn> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                data_type::text AS data_type, is_nullable::text AS is_nullable, \
                (quote_ident(udt_schema) || '.' || quote_ident(udt_name))::regtype::oid::int8 \
                    AS type_oid \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let mut tables = Tables::new();
    for row in rows {
        tables.entry(row.table_name).or_default().insert(
            row.column_name,
            ActualColumn {
                declared_type: row.data_type,
                kind: ActualKind::PostgresOid(u32::try_from(row.type_oid).unwrap()),
                nullable: row.is_nullable == "YES",
            },
        );
    }
    tables
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    declared_type: String,
    #[diesel(sql_type = Integer)]
    not_null: i32,
    #[diesel(sql_type = Integer)]
    primary_key: i32,
}

fn sqlite_tables(path: &str) -> Tables<ActualColumn> {
    let mut conn = SqliteConnection::establish(path).unwrap();
    let rows: Vec<SqliteColumn> = diesel::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT m.name AS table_name, p.name AS column_name, p.type AS declared_type, \
                    p.\"notnull\" AS not_null, p.pk AS primary_key \
             FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
               AND m.name <> '__diesel_schema_migrations'",
        ),
        &mut conn,
    )
    .unwrap();
    let mut tables = Tables::new();
    for row in rows {
        // An INTEGER PRIMARY KEY is the rowid, never NULL whatever it
        // declares; any other column admits NULL unless it says NOT NULL.
        let rowid = row.primary_key > 0 && row.declared_type.eq_ignore_ascii_case("INTEGER");
        tables.entry(row.table_name).or_default().insert(
            row.column_name,
            ActualColumn {
                kind: ActualKind::SqliteAffinity(Affinity::of(&row.declared_type)),
                declared_type: row.declared_type,
                nullable: row.not_null == 0 && !rowid,
            },
        );
    }
    tables
}

fn compatible(declared: &DeclaredColumn, actual: &ActualKind) -> bool {
    match actual {
        ActualKind::PostgresOid(oid) => *oid == declared.postgres_oid,
        ActualKind::SqliteAffinity(affinity) => affinity.stores(declared.sqlite_type),
    }
}

/// Every difference between schema/ and a migrated database, one a line.
fn differences(
    store: &str,
    declared: &Tables<DeclaredColumn>,
    actual: &Tables<ActualColumn>,
) -> Vec<String> {
    let mut found = Vec::new();
    for table in actual.keys().filter(|t| !declared.contains_key(*t)) {
        found.push(format!("{store}: table {table} exists, schema/ lacks it"));
    }
    for (table, declared_columns) in declared {
        let Some(actual_columns) = actual.get(table) else {
            found.push(format!(
                "{store}: schema/ declares table {table}, the migrations create none"
            ));
            continue;
        };
        for column in actual_columns
            .keys()
            .filter(|c| !declared_columns.contains_key(*c))
        {
            found.push(format!(
                "{store}: column {table}.{column} exists, schema/ lacks it"
            ));
        }
        for (column, declared) in declared_columns {
            let Some(actual) = actual_columns.get(column) else {
                found.push(format!(
                    "{store}: schema/ declares {table}.{column}, the migrations create none"
                ));
                continue;
            };
            if !compatible(declared, &actual.kind) {
                found.push(format!(
                    "{store}: {table}.{column} is {} ({:?}), schema/ says {}",
                    actual.declared_type, actual.kind, declared.sql_type
                ));
            }
            if actual.nullable != declared.nullable
                && !FILLED_BY_TRIGGER.contains(&(table.as_str(), column.as_str()))
            {
                let says = |nullable| if nullable { "nullable" } else { "NOT NULL" };
                found.push(format!(
                    "{store}: {table}.{column} is {}, schema/ says {}",
                    says(actual.nullable),
                    says(declared.nullable)
                ));
            }
        }
    }
    found
}

/// Columns nullable in the database only so that the previous version's
/// inserts (which do not know them) still work, and filled in by a trigger
/// on insert, so schema/ reads them as NOT NULL (see the migrations).
const FILLED_BY_TRIGGER: &[(&str, &str)] = &[("chatbots", "organization_id")];

fn assert_no_differences(found: &[String]) {
    let mut report = String::new();
    for line in found {
        let _ = writeln!(report, "  {line}");
    }
    assert!(
        found.is_empty(),
        "schema/ and the migrations differ:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_rs_matches_the_postgres_migrations() {
    let database = Backend::Postgres.run(TestDatabase::create()).await;
    run_migrations(&DatabaseTarget::parse(&database.url).unwrap())
        .await
        .unwrap();
    let actual = postgres_tables(&database.url).await;
    assert_no_differences(&differences("postgres", &declared_tables(), &actual));
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_rs_matches_the_sqlite_migrations() {
    let database = Backend::Sqlite.run(TestDatabase::create()).await;
    let target = DatabaseTarget::parse(&database.url).unwrap();
    run_migrations(&target).await.unwrap();
    let DatabaseTarget::Sqlite(path) = target else {
        unreachable!("a SQLite test database is a file")
    };
    let actual = sqlite_tables(path.to_str().unwrap());
    assert_no_differences(&differences("sqlite", &declared_tables(), &actual));
}

/// The comparison itself finds each kind of difference, so a passing run
/// above means agreement rather than a blind check.
#[test]
fn every_kind_of_difference_is_reported() {
    let declared = declared_tables();
    let mut actual: Tables<ActualColumn> = declared
        .iter()
        .map(|(table, columns)| {
            let columns = columns
                .iter()
                .map(|(name, column)| {
                    let actual = ActualColumn {
                        declared_type: column.sql_type.to_owned(),
                        kind: ActualKind::PostgresOid(column.postgres_oid),
                        nullable: column.nullable,
                    };
                    (name.clone(), actual)
                })
                .collect();
            (table.clone(), columns)
        })
        .collect();
    assert!(differences("copy", &declared, &actual).is_empty());

    let users = actual.get_mut("users").unwrap();
    let email = users.remove("email").unwrap();
    users.insert("e_mail".into(), email);
    users.get_mut("role").unwrap().nullable = true;
    users.get_mut("created_at").unwrap().kind = ActualKind::PostgresOid(25);
    actual.remove("sessions");
    actual.insert("audit_log".into(), BTreeMap::new());
    let found = differences("copy", &declared, &actual);
    for expected in [
        "column users.e_mail exists, schema/ lacks it",
        "schema/ declares users.email, the migrations create none",
        "users.role is nullable, schema/ says NOT NULL",
        "users.created_at is",
        "schema/ declares table sessions, the migrations create none",
        "table audit_log exists, schema/ lacks it",
    ] {
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "{expected:?} not reported in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
}
