//! The `api_keys` table. Keys are found by the SHA-256 digest of the
//! presented secret; the secret itself is never stored.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

use chrono::{DateTime, Utc};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, Insertable, JoinOnDsl, NullableExpressionMethods,
    QueryDsl, Queryable, Selectable, SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::{api_key_limits, api_keys, chatbots, organization_limits};
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{
    permissions_json, ApiKeyDigest, ApiKeyFilter, ApiKeyId, ApiKeySecret, ChatbotId, KeyGrants,
    KeyRateLimit, OrganizationId, PageRequest, UserId,
};

diesel::define_sql_function! {
    /// SQL's COALESCE of a nullable key id and a key id.
    fn coalesce(x: diesel::sql_types::Nullable<diesel::sql_types::BigInt>, y: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt;
}

/// A row of `api_keys`, without the digest (which no reader needs).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub chatbot_id: ChatbotId,
    pub display_name: String,
    pub key_prefix: String,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    allowed_networks: String,
    permissions: String,
    metadata: String,
    pub external_id: Option<String>,
}

/// A key to insert.
#[derive(Insertable)]
#[diesel(table_name = api_keys)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewApiKey<'a> {
    pub chatbot_id: ChatbotId,
    pub display_name: &'a str,
    pub key_prefix: &'a str,
    pub key_hash: Vec<u8>,
    pub expires_at: Option<Timestamp>,
    pub allowed_networks: String,
    pub permissions: String,
    pub metadata: String,
    pub external_id: Option<&'a str>,
}

impl<'a> NewApiKey<'a> {
    /// A key of `chatbot_id` for `secret`, with nothing beyond being valid.
    pub fn new(
        chatbot_id: ChatbotId,
        display_name: &'a str,
        secret: &'a ApiKeySecret,
        expires_at: Option<Timestamp>,
    ) -> Self {
        Self {
            chatbot_id,
            display_name,
            key_prefix: secret.display_prefix(),
            key_hash: secret.digest().0.to_vec(),
            expires_at,
            allowed_networks: "[]".into(),
            permissions: "[]".into(),
            metadata: "{}".into(),
            external_id: None,
        }
    }

    /// `grants` as the key's columns store them.
    pub fn with_grants(mut self, grants: &'a KeyGrants) -> Self {
        self.allowed_networks = grants.networks.to_json();
        self.permissions = permissions_json(&grants.permissions);
        self.metadata = grants.metadata.to_json();
        self.external_id = grants.external_id.as_deref();
        self
    }
}

/// A key's networks, permissions, metadata and external id, as written.
#[derive(Debug, diesel::AsChangeset)]
#[diesel(table_name = api_keys)]
pub struct StoredGrants<'a> {
    pub allowed_networks: Option<String>,
    pub permissions: Option<String>,
    pub metadata: Option<String>,
    pub external_id: Option<Option<&'a str>>,
}

impl fmt::Debug for NewApiKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("chatbot_id", &self.chatbot_id)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// What VerifyApiKey needs, read in one indexed lookup. The balance read
/// here goes stale with the first spend (this is cached): it says only
/// whether the key has credits; spends read the current one. What the key
/// carries beyond that is parsed once, when the row is read, into
/// `grants` (`None` for a key with none).
#[derive(Debug, Clone)]
pub struct VerificationRecord {
    pub id: ApiKeyId,
    /// The key whose limits and credits apply: its replacement while a
    /// rotation's grace period lasts, else itself.
    pub limits_key_id: ApiKeyId,
    pub chatbot_id: ChatbotId,
    pub revoked: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub owner_id: UserId,
    pub organization_id: OrganizationId,
    pub llm_endpoint_url: String,
    pub rate_limit: Option<KeyRateLimit>,
    pub credits_remaining: Option<i64>,
    /// The organization's rate limit, shared by all its keys.
    pub organization_rate_limit: Option<KeyRateLimit>,
    /// Whether the organization has credits (stale as the key's balance).
    pub organization_has_credits: bool,
    pub grants: Option<std::sync::Arc<KeyGrants>>,
    /// This record's answers, encoded once while it is cached.
    pub encoded: EncodedAnswers,
}

/// A cached key's part of its answers, encoded once by the services that
/// word them (`services::encoded`) instead of at every call. They live and
/// die with the record: a change to the key replaces the record, and so
/// them.
#[derive(Debug, Clone, Default)]
pub struct EncodedAnswers {
    /// VerifyApiKey's VALID answer, but for what each call adds.
    pub verify: OnceLock<Bytes>,
    /// Check's allowed answer: the upstream's part (`OkHttpResponse`'s
    /// fields) and the dynamic metadata's (`Struct`'s), but for what each
    /// call adds.
    pub check: OnceLock<[Bytes; 2]>,
}

/// The row [`VerificationRecord`] is made from.
#[derive(Queryable)]
struct VerificationRow {
    id: ApiKeyId,
    limits_key_id: ApiKeyId,
    chatbot_id: ChatbotId,
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
    owner_id: UserId,
    organization_id: OrganizationId,
    llm_endpoint_url: String,
    rate_limit_calls: Option<i64>,
    rate_limit_window_ms: Option<i64>,
    rate_limit_unit: Option<String>,
    credits_remaining: Option<i64>,
    organization_rate_limit_calls: Option<i64>,
    organization_rate_limit_window_ms: Option<i64>,
    organization_rate_limit_unit: Option<String>,
    organization_credits_remaining: Option<i64>,
    allowed_networks: String,
    permissions: String,
    metadata: String,
    external_id: Option<String>,
}

impl From<VerificationRow> for VerificationRecord {
    fn from(row: VerificationRow) -> Self {
        let grants = KeyGrants::from_stored(
            &row.allowed_networks,
            &row.permissions,
            &row.metadata,
            row.external_id,
        );
        Self {
            id: row.id,
            limits_key_id: row.limits_key_id,
            chatbot_id: row.chatbot_id,
            revoked: row.revoked,
            expires_at: row.expires_at,
            owner_id: row.owner_id,
            organization_id: row.organization_id,
            llm_endpoint_url: row.llm_endpoint_url,
            rate_limit: KeyRateLimit::from_stored(
                row.rate_limit_calls.unwrap_or_default(),
                row.rate_limit_window_ms.unwrap_or_default(),
                row.rate_limit_unit.as_deref().unwrap_or_default(),
            ),
            credits_remaining: row.credits_remaining,
            organization_rate_limit: KeyRateLimit::from_stored(
                row.organization_rate_limit_calls.unwrap_or_default(),
                row.organization_rate_limit_window_ms.unwrap_or_default(),
                row.organization_rate_limit_unit
                    .as_deref()
                    .unwrap_or_default(),
            ),
            organization_has_credits: row.organization_credits_remaining.is_some(),
            grants: grants.map(std::sync::Arc::new),
            encoded: EncodedAnswers::default(),
        }
    }
}

impl VerificationRecord {
    pub fn rate_limit(&self) -> Option<KeyRateLimit> {
        self.rate_limit
    }

    /// Whether verifying spends credits, the key's or its organization's
    /// (the balances read here are stale and never used).
    pub fn has_credits(&self) -> bool {
        self.credits_remaining.is_some() || self.organization_has_credits
    }
}

resource_table!(ApiKey in api_keys, id ApiKeyId);

impl ApiKey {
    /// What the key carries beyond being valid, as stored.
    pub fn grants(&self) -> KeyGrants {
        KeyGrants::from_stored(
            &self.allowed_networks,
            &self.permissions,
            &self.metadata,
            self.external_id.clone(),
        )
        .unwrap_or_default()
    }

    /// Changes the key's grants named in `changes` (the key must be locked).
    pub async fn set_grants(
        conn: &mut DbConnection,
        id: ApiKeyId,
        changes: &StoredGrants<'_>,
    ) -> diesel::QueryResult<()> {
        if changes.allowed_networks.is_none()
            && changes.permissions.is_none()
            && changes.metadata.is_none()
            && changes.external_id.is_none()
        {
            return Ok(());
        }
        update_rows!(conn, api_keys::table.find(id), changes)?;
        Ok(())
    }

    pub async fn insert(
        conn: &mut DbConnection,
        new: NewApiKey<'_>,
    ) -> diesel::QueryResult<ApiKey> {
        db_run!(conn => {
            diesel::insert_into(api_keys::table)
                .values((new, api_keys::created_at.eq(Timestamp::now())))
                .returning(ApiKey::as_returning())
                .get_result(conn)
                .await
        })
    }

    /// The key with its chatbot's organization and owner, for
    /// authorization.
    pub async fn find_with_organization(
        conn: &mut DbConnection,
        id: ApiKeyId,
    ) -> diesel::QueryResult<Option<(ApiKey, OrganizationId, UserId)>> {
        first_row!(
            conn,
            api_keys::table
                .inner_join(chatbots::table)
                .filter(api_keys::id.eq(id))
                .select((
                    ApiKey::as_select(),
                    chatbots::organization_id,
                    chatbots::owner_id
                ))
        )
    }

    /// Whether the key's stored digest is `digest`: whether a secret is
    /// this key's.
    pub async fn digest_is(
        conn: &mut DbConnection,
        id: ApiKeyId,
        digest: &crate::domain::ApiKeyDigest,
    ) -> diesel::QueryResult<bool> {
        let matching: i64 = db_run!(conn => {
            api_keys::table
                .filter(api_keys::id.eq(id))
                .filter(api_keys::key_hash.eq(&digest.0[..]))
                .count()
                .get_result(conn)
                .await
        })?;
        Ok(matching == 1)
    }

    /// Locks the key's row until the transaction ends (a no-op write, which
    /// SQLite can also lock), serialising changes to its limits. Whether the
    /// key exists.
    pub async fn lock(conn: &mut DbConnection, id: ApiKeyId) -> diesel::QueryResult<bool> {
        let touch = api_keys::display_name.eq(api_keys::display_name);
        Ok(update_rows!(conn, api_keys::table.find(id), touch)? == 1)
    }

    /// Those of `ids` that exist, locked against deletion until the
    /// transaction ends (FOR KEY SHARE, which changes to the key's other
    /// columns do not wait for; on SQLite the transaction holds the whole
    /// database already).
    pub async fn lock_existing(
        conn: &mut DbConnection,
        ids: &[ApiKeyId],
    ) -> diesel::QueryResult<Vec<ApiKeyId>> {
        let rows = api_keys::table
            .filter(api_keys::id.eq_any(ids))
            .select(api_keys::id);
        match conn {
            DbConnection::Postgres(conn) => rows.for_key_share().load(&mut **conn).await,
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                rows.load(conn).await
            }
        }
    }

    /// Changes the label or the expiry.
    pub async fn set_label_and_expiry(
        conn: &mut DbConnection,
        id: ApiKeyId,
        display_name: Option<&str>,
        expires_at: Option<Option<DateTime<Utc>>>,
    ) -> diesel::QueryResult<()> {
        if let Some(display_name) = display_name {
            update_rows!(
                conn,
                api_keys::table.find(id),
                api_keys::display_name.eq(display_name)
            )?;
        }
        if let Some(expires_at) = expires_at {
            let expires_at = api_keys::expires_at.eq(expires_at.map(Timestamp));
            update_rows!(conn, api_keys::table.find(id), expires_at)?;
        }
        Ok(())
    }

    /// What VerifyApiKey needs about the key whose digest is `digest` (its
    /// state, its chatbot's owner and LLM endpoint, its limits), or `None`
    /// for an unknown key. One statement, read on a key-cache miss: a probe
    /// of the unique digest index, joined with the chatbot and (left) the
    /// limits by their primary keys: the replacement's limits for a key a
    /// rotation replaced.
    pub async fn find_for_verification(
        conn: &mut DbConnection,
        digest: &ApiKeyDigest,
    ) -> diesel::QueryResult<Option<VerificationRecord>> {
        let limits_key = coalesce(api_keys::replaced_by, api_keys::id);
        let row: Option<VerificationRow> = first_row!(
            conn,
            api_keys::table
                .inner_join(chatbots::table)
                .left_join(api_key_limits::table.on(api_key_limits::api_key_id.eq(limits_key)))
                .left_join(
                    organization_limits::table
                        .on(organization_limits::organization_id.eq(chatbots::organization_id)),
                )
                .filter(api_keys::key_hash.eq(&digest.0[..]))
                .select((
                    api_keys::id,
                    limits_key,
                    api_keys::chatbot_id,
                    api_keys::revoked,
                    api_keys::expires_at,
                    chatbots::owner_id,
                    chatbots::organization_id,
                    chatbots::llm_endpoint_url,
                    api_key_limits::rate_limit_calls.nullable(),
                    api_key_limits::rate_limit_window_ms.nullable(),
                    api_key_limits::rate_limit_unit.nullable(),
                    api_key_limits::credits_remaining.nullable(),
                    organization_limits::rate_limit_calls.nullable(),
                    organization_limits::rate_limit_window_ms.nullable(),
                    organization_limits::rate_limit_unit.nullable(),
                    organization_limits::credits_remaining.nullable(),
                    api_keys::allowed_networks,
                    api_keys::permissions,
                    api_keys::metadata,
                    api_keys::external_id,
                ))
        )?;
        Ok(row.map(VerificationRecord::from))
    }

    /// The first 8 bytes of every key's digest, as a big-endian integer:
    /// what [`crate::hot_path::known_keys`] loads. PostgreSQL only (its
    /// replicas are what the set serves); on SQLite, none.
    pub async fn digest_fingerprints(conn: &mut DbConnection) -> diesel::QueryResult<Vec<i64>> {
        #[derive(diesel::QueryableByName)]
        struct Fingerprint {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            fingerprint: i64,
        }
        match conn {
            DbConnection::Postgres(conn) => {
                let rows: Vec<Fingerprint> = diesel::sql_query(
                    "SELECT ('x' || encode(substring(key_hash from 1 for 8), 'hex'))::bit(64)::bigint \
                     AS fingerprint FROM api_keys",
                )
                .load(&mut **conn)
                .await?;
                Ok(rows.into_iter().map(|row| row.fingerprint).collect())
            }
            DbConnection::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// One page of a chatbot's keys in (created_at, id) order, plus one extra
    /// row if more follow.
    pub async fn list(
        conn: &mut DbConnection,
        filter: &ApiKeyFilter,
        page: &PageRequest<ApiKeyId>,
    ) -> diesel::QueryResult<Vec<ApiKey>> {
        db_run!(conn => {
            let mut query = keyset_page!(api_keys, ApiKey, page)
                .filter(api_keys::chatbot_id.eq(filter.chatbot_id));
            if !filter.show_revoked {
                query = query.filter(api_keys::revoked.eq(false));
            }
            if let Some(before) = filter.expire_before {
                query = query.filter(api_keys::expires_at.lt(Timestamp(before)));
            }
            if let Some(external_id) = &filter.external_id {
                query = query.filter(api_keys::external_id.eq(external_id.clone()));
            }
            query.load(conn).await
        })
    }

    /// Keys of a chatbot that still work: not revoked and not expired.
    pub async fn count_active(
        conn: &mut DbConnection,
        chatbot_id: ChatbotId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<i64> {
        db_run!(conn => {
            api_keys::table
                .filter(api_keys::chatbot_id.eq(chatbot_id))
                .filter(api_keys::revoked.eq(false))
                .filter(
                    api_keys::expires_at
                        .is_null()
                        .or(api_keys::expires_at.gt(Timestamp(now))),
                )
                .count()
                .get_result(conn)
                .await
        })
    }

    /// Revokes the key if it is not yet (a second call keeps the first
    /// revoke time); whether this call revoked it.
    pub async fn revoke(
        conn: &mut DbConnection,
        id: ApiKeyId,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<bool> {
        let active = api_keys::table.find(id).filter(api_keys::revoked.eq(false));
        let revoke = (
            api_keys::revoked.eq(true),
            api_keys::revoked_at.eq(Timestamp(now)),
        );
        Ok(update_rows!(conn, active, revoke)? == 1)
    }

    /// Marks a key replaced by a rotation at `now`, letting it work only
    /// until `until` unless it already ends sooner.
    /// Marks key `id` replaced by `replacement` at `now`, ending no later
    /// than `until`.
    pub async fn mark_rotated(
        conn: &mut DbConnection,
        id: ApiKeyId,
        replacement: ApiKeyId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<Option<ApiKey>> {
        let key = api_keys::table.find(id);
        update_rows!(
            conn,
            key,
            (
                api_keys::rotated_at.eq(Timestamp(now)),
                api_keys::replaced_by.eq(Some(replacement.0)),
            )
        )?;
        let ends_later = api_keys::expires_at
            .is_null()
            .or(api_keys::expires_at.gt(Timestamp(until)));
        update_rows!(
            conn,
            key.filter(ends_later),
            api_keys::expires_at.eq(Timestamp(until))
        )?;
        Self::find(conn, id).await
    }

    /// Records keys' last use; never moves a time back. On PostgreSQL one
    /// statement for them all, locking the rows in id order (replicas
    /// flushing overlapping keys at once wait instead of deadlocking); on
    /// SQLite one statement per key, which the caller batches into one
    /// transaction.
    pub async fn record_last_used(
        conn: &mut DbConnection,
        uses: &[(ApiKeyId, DateTime<Utc>)],
    ) -> diesel::QueryResult<usize> {
        if let DbConnection::Postgres(conn) = conn {
            use diesel_async::RunQueryDsl;
            let statement = RecordLastUsed {
                ids: uses.iter().map(|(id, _)| id.0).collect(),
                times: uses.iter().map(|&(_, at)| at).collect(),
            };
            return statement.execute(&mut **conn).await;
        }
        let mut updated = 0;
        for &(id, at) in uses {
            let used_earlier = api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(Timestamp(at)));
            let key = api_keys::table.find(id).filter(used_earlier);
            updated += update_rows!(conn, key, api_keys::last_used_at.eq(Timestamp(at)))?;
        }
        Ok(updated)
    }
}

/// [`ApiKey::record_last_used`] on PostgreSQL: one statement, prepared once
/// per connection (diesel prepares each of its UPDATEs anew), where one per
/// key took two round trips each.
#[derive(diesel::query_builder::QueryId)]
struct RecordLastUsed {
    ids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for RecordLastUsed {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Timestamptz};
        out.push_sql("WITH used AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.times)?;
        out.push_sql(
            ") AS u(id, at)), \
             locked AS (SELECT k.id, used.at FROM api_keys k JOIN used ON k.id = used.id \
                 WHERE k.last_used_at IS NULL OR k.last_used_at < used.at \
                 ORDER BY k.id FOR UPDATE OF k) \
             UPDATE api_keys SET last_used_at = locked.at FROM locked \
             WHERE api_keys.id = locked.id",
        );
        Ok(())
    }
}
