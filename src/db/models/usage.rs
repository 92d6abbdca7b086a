//! The `api_key_usage` table: VerifyApiKey's answers per key and hour.
//! Every replica adds its counts (an upsert that adds, never overwrites),
//! so the rows are the sum of all replicas' counts.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::upsert::excluded;
use diesel::{ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable};

use crate::db::schema::{api_key_usage, chatbots};
use crate::db::sql_types::Timestamp;
use crate::db::DbConnection;
use crate::domain::{ApiKeyId, ChatbotId, OrganizationId, UsageCounter, UsageCounts, UsageRange};

/// One key's counts of one hour, to add to the store.
#[derive(Debug, Clone, Copy)]
pub struct UsageRow {
    pub api_key_id: ApiKeyId,
    pub hour: DateTime<Utc>,
    pub chatbot_id: ChatbotId,
    pub counts: UsageCounts,
}

/// The counter columns of a row, written and read together.
#[derive(Debug, Clone, Copy, Default, Insertable, Queryable, Selectable)]
#[diesel(table_name = api_key_usage, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
struct CounterColumns {
    valid: i64,
    revoked: i64,
    expired: i64,
    rate_limited: i64,
    usage_exceeded: i64,
    credits_spent: i64,
    address_not_allowed: i64,
    insufficient_permissions: i64,
    credits_reserved: i64,
    credits_settled: i64,
    credits_refunded: i64,
    credits_expired: i64,
}

impl CounterColumns {
    /// The column that stores `counter`: the one map from the domain's
    /// counters to the table's columns (the upsert in [`KeyUsage::add`]
    /// adds each column too).
    fn column(&mut self, counter: UsageCounter) -> &mut i64 {
        match counter {
            UsageCounter::Valid => &mut self.valid,
            UsageCounter::Revoked => &mut self.revoked,
            UsageCounter::Expired => &mut self.expired,
            UsageCounter::RateLimited => &mut self.rate_limited,
            UsageCounter::UsageExceeded => &mut self.usage_exceeded,
            UsageCounter::CreditsSpent => &mut self.credits_spent,
            UsageCounter::AddressNotAllowed => &mut self.address_not_allowed,
            UsageCounter::InsufficientPermissions => &mut self.insufficient_permissions,
            UsageCounter::CreditsReserved => &mut self.credits_reserved,
            UsageCounter::CreditsSettled => &mut self.credits_settled,
            UsageCounter::CreditsRefunded => &mut self.credits_refunded,
            UsageCounter::CreditsExpired => &mut self.credits_expired,
        }
    }
}

impl From<UsageCounts> for CounterColumns {
    fn from(counts: UsageCounts) -> Self {
        let mut columns = Self::default();
        for (counter, value) in counts.iter() {
            *columns.column(counter) = value;
        }
        columns
    }
}

impl From<CounterColumns> for UsageCounts {
    fn from(mut columns: CounterColumns) -> Self {
        UsageCounts::from_fn(|counter| *columns.column(counter))
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_key_usage)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
struct NewUsage {
    api_key_id: ApiKeyId,
    hour: Timestamp,
    chatbot_id: ChatbotId,
    #[diesel(embed)]
    counts: CounterColumns,
}

impl From<&UsageRow> for NewUsage {
    fn from(row: &UsageRow) -> Self {
        Self {
            api_key_id: row.api_key_id,
            hour: Timestamp(row.hour),
            chatbot_id: row.chatbot_id,
            counts: row.counts.into(),
        }
    }
}

/// A stored hour of one key.
#[derive(Debug, Clone, Copy, Queryable, Selectable)]
#[diesel(table_name = api_key_usage, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct StoredHour {
    hour: DateTime<Utc>,
    #[diesel(embed)]
    counts: CounterColumns,
}

/// Hours with their counts, oldest first.
pub type HourlyUsage = Vec<(DateTime<Utc>, UsageCounts)>;

/// Queries of `api_key_usage`.
pub struct KeyUsage;

impl KeyUsage {
    /// Deletes up to `limit` rows of the oldest hour before `before`;
    /// returns how many (0: nothing older is left). One hour at a time, by
    /// the hour index, so a batch never scans the table.
    pub async fn purge(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        use diesel::OptionalExtension;
        use diesel_async::RunQueryDsl;
        let oldest_hour = api_key_usage::table
            .filter(api_key_usage::hour.lt(Timestamp(before)))
            .select(api_key_usage::hour)
            .order(api_key_usage::hour.asc());
        crate::db::db_run!(conn => {
            let hour: Option<DateTime<Utc>> = oldest_hour.first(conn).await.optional()?;
            let Some(hour) = hour.map(Timestamp) else {
                return Ok(0);
            };
            let keys: Vec<i64> = api_key_usage::table
                .filter(api_key_usage::hour.eq(hour))
                .select(api_key_usage::api_key_id)
                .limit(limit)
                .load(conn)
                .await?;
            diesel::delete(
                api_key_usage::table
                    .filter(api_key_usage::hour.eq(hour))
                    .filter(api_key_usage::api_key_id.eq_any(keys)),
            )
            .execute(conn)
            .await
        })
    }

    /// Adds `rows` to the stored counts (rows of chatbots deleted since
    /// are dropped); the caller's transaction makes it all or nothing.
    /// Returns the rows written.
    pub async fn add(conn: &mut DbConnection, rows: &[UsageRow]) -> diesel::QueryResult<usize> {
        let mut chatbot_ids: Vec<ChatbotId> = rows.iter().map(|row| row.chatbot_id).collect();
        chatbot_ids.sort_unstable();
        chatbot_ids.dedup();
        let existing: HashSet<ChatbotId> = all_rows!(
            conn,
            chatbots::table
                .filter(chatbots::id.eq_any(&chatbot_ids))
                .select(chatbots::id)
        )?
        .into_iter()
        .collect();
        let new: Vec<NewUsage> = rows
            .iter()
            .filter(|row| existing.contains(&row.chatbot_id))
            .map(NewUsage::from)
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        // Each replica's counts are added to the stored ones, never
        // written over them: every column of `CounterColumns`.
        macro_rules! add_rows {
            ($conn:expr, $rows:expr) => {{
                use api_key_usage::dsl as usage;
                diesel_async::RunQueryDsl::execute(
                    diesel::insert_into(usage::api_key_usage)
                        .values($rows)
                        .on_conflict((usage::api_key_id, usage::hour))
                        .do_update()
                        .set((
                            usage::valid.eq(usage::valid + excluded(usage::valid)),
                            usage::revoked.eq(usage::revoked + excluded(usage::revoked)),
                            usage::expired.eq(usage::expired + excluded(usage::expired)),
                            usage::rate_limited
                                .eq(usage::rate_limited + excluded(usage::rate_limited)),
                            usage::usage_exceeded
                                .eq(usage::usage_exceeded + excluded(usage::usage_exceeded)),
                            usage::credits_spent
                                .eq(usage::credits_spent + excluded(usage::credits_spent)),
                            usage::address_not_allowed
                                .eq(usage::address_not_allowed
                                    + excluded(usage::address_not_allowed)),
                            usage::insufficient_permissions.eq(usage::insufficient_permissions
                                + excluded(usage::insufficient_permissions)),
                            usage::credits_reserved
                                .eq(usage::credits_reserved + excluded(usage::credits_reserved)),
                            usage::credits_settled
                                .eq(usage::credits_settled + excluded(usage::credits_settled)),
                            usage::credits_refunded
                                .eq(usage::credits_refunded + excluded(usage::credits_refunded)),
                            usage::credits_expired
                                .eq(usage::credits_expired + excluded(usage::credits_expired)),
                        )),
                    $conn,
                )
                .await
            }};
        }
        let mut written = 0;
        match conn {
            // Bounded statements (65,535 parameters at most).
            DbConnection::Postgres(conn) => {
                for chunk in new.chunks(1000) {
                    written += add_rows!(&mut **conn, chunk)?;
                }
            }
            // SQLite's multi-row insert takes no ON CONFLICT in diesel; one
            // transaction still makes it one write.
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                for row in &new {
                    written += add_rows!(&mut *conn, row)?;
                }
            }
        }
        Ok(written)
    }

    /// Key `id`'s hours in `range`.
    pub async fn of_key(
        conn: &mut DbConnection,
        id: ApiKeyId,
        range: UsageRange,
    ) -> diesel::QueryResult<HourlyUsage> {
        Self::hours(conn, UsageOf::Key(id), range).await
    }

    /// The hours in `range` of all of chatbot `id`'s keys, added up per
    /// hour.
    pub async fn of_chatbot(
        conn: &mut DbConnection,
        id: ChatbotId,
        range: UsageRange,
    ) -> diesel::QueryResult<HourlyUsage> {
        Self::hours(conn, UsageOf::Chatbot(id), range).await
    }

    /// The usage of every key of the organization's chatbots, per hour:
    /// its chatbots' rows, by the usage table's (chatbot_id, hour) index.
    pub async fn of_organization(
        conn: &mut DbConnection,
        id: OrganizationId,
        range: UsageRange,
    ) -> diesel::QueryResult<HourlyUsage> {
        Self::hours(conn, UsageOf::Organization(id), range).await
    }

    /// The stored hours of `of` in `range`, added up per hour (here rather
    /// than by SQL's SUM, whose type differs between the backends; a range
    /// is at most 744 hours per key).
    async fn hours(
        conn: &mut DbConnection,
        of: UsageOf,
        range: UsageRange,
    ) -> diesel::QueryResult<HourlyUsage> {
        use diesel::SelectableHelper;
        use diesel_async::RunQueryDsl;
        let hours: Vec<StoredHour> = crate::db::db_run!(conn => {
            let mut query = api_key_usage::table
                .filter(api_key_usage::hour.ge(Timestamp(range.start)))
                .filter(api_key_usage::hour.lt(Timestamp(range.end)))
                .select(StoredHour::as_select())
                .into_boxed();
            query = match of {
                UsageOf::Key(id) => query.filter(api_key_usage::api_key_id.eq(id)),
                UsageOf::Chatbot(id) => query.filter(api_key_usage::chatbot_id.eq(id)),
                UsageOf::Organization(id) => {
                    let its_chatbots = chatbots::table
                        .filter(chatbots::organization_id.eq(id))
                        .select(chatbots::id);
                    query.filter(api_key_usage::chatbot_id.eq_any(its_chatbots))
                }
            };
            query.load(conn).await
        })?;
        let mut by_hour: BTreeMap<DateTime<Utc>, UsageCounts> = BTreeMap::new();
        for stored in &hours {
            by_hour
                .entry(stored.hour)
                .or_default()
                .add(&stored.counts.into());
        }
        Ok(by_hour.into_iter().collect())
    }
}

/// Whose usage a query reads.
#[derive(Debug, Clone, Copy)]
enum UsageOf {
    Key(ApiKeyId),
    Chatbot(ChatbotId),
    Organization(OrganizationId),
}
