//! The `credit_reservations` table: credits VerifyApiKey held (with
//! `reserve`) until the call's real cost is known. A reservation moves out
//! of `open` once, by a statement that names `open` in its filter, so two
//! replicas (or a settlement racing the expiry sweep) cannot both finish it.
//! Its id is a bearer capability, kept only as its SHA-256 digest.

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, Insertable, NullableExpressionMethods, QueryDsl, Queryable, Selectable,
    SelectableHelper,
};
use diesel_async::RunQueryDsl;

use crate::db::schema::credit_reservations;
use crate::db::sql_types::Timestamp;
use crate::db::{db_run, DbConnection};
use crate::domain::{ApiKeyId, ChatbotId, OrganizationId};

/// Where a reservation stands; stored as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Open,
    Settled,
    Released,
    Expired,
}

impl ReservationState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    fn from_stored(text: &str) -> Self {
        // The CHECK constraint admits only these four.
        match text {
            "settled" => Self::Settled,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => Self::Open,
        }
    }
}

/// A row of `credit_reservations`, without its digest.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = credit_reservations, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Reservation {
    pub api_key_id: ApiKeyId,
    pub chatbot_id: ChatbotId,
    pub reserved: i64,
    pub from_balance: bool,
    state: String,
    pub charged: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The organization whose balance also holds it.
    pub organization_id: Option<OrganizationId>,
}

/// A reservation to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = credit_reservations)]
#[diesel(treat_none_as_default_value = false)] // see db::models: prepared once
pub struct NewReservation {
    token_hash: Vec<u8>,
    api_key_id: ApiKeyId,
    chatbot_id: ChatbotId,
    reserved: i64,
    from_balance: bool,
    created_at: Timestamp,
    expires_at: Timestamp,
    organization_id: Option<OrganizationId>,
}

impl NewReservation {
    /// The reservation, also held on `organization`'s balance.
    pub fn held_by_organization(self, organization: Option<OrganizationId>) -> Self {
        Self {
            organization_id: organization,
            ..self
        }
    }

    pub fn new(
        token_hash: [u8; 32],
        api_key_id: ApiKeyId,
        chatbot_id: ChatbotId,
        reserved: i64,
        from_balance: bool,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            token_hash: token_hash.to_vec(),
            api_key_id,
            chatbot_id,
            reserved,
            from_balance,
            created_at: Timestamp(created_at),
            expires_at: Timestamp(expires_at),
            organization_id: None,
        }
    }
}

/// A reservation to finish, as one of a batch.
#[derive(Debug, Clone, Copy)]
pub struct ReservationFinish {
    pub token_hash: [u8; 32],
    pub state: ReservationState,
    pub charged: i64,
}

impl Reservation {
    pub fn state(&self) -> ReservationState {
        ReservationState::from_stored(&self.state)
    }

    /// This reservation after `finish` at `now`.
    fn finished(self, finish: &ReservationFinish, now: DateTime<Utc>) -> Self {
        Self {
            state: finish.state.as_str().to_owned(),
            charged: Some(finish.charged),
            finished_at: Some(now),
            ..self
        }
    }

    /// Finishes those of `finishes` (distinct reservations) that are open
    /// and unexpired at `now`, in the caller's transaction, and returns
    /// them as finished, each with its digest. On PostgreSQL they are locked
    /// in digest order first (batches on any replica lock in one order) and
    /// then written in one statement; on SQLite, whose first write takes the
    /// whole database, one statement each.
    pub async fn finish_many(
        conn: &mut DbConnection,
        finishes: &[ReservationFinish],
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<Vec<([u8; 32], Reservation)>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        match conn {
            DbConnection::Postgres(conn) => {
                let hashes: Vec<Vec<u8>> = finishes.iter().map(|f| f.token_hash.to_vec()).collect();
                // By digest alone, then judged here: with the state and
                // expiry in the filter, the prepared statement's generic
                // plan also scanned the open reservations' expiry index,
                // every unexpired entry of it, which grew with the table.
                let named: Vec<(Vec<u8>, Reservation)> = credit_reservations::table
                    .filter(credit_reservations::token_hash.eq_any(hashes))
                    .order(credit_reservations::token_hash)
                    .select((credit_reservations::token_hash, Reservation::as_select()))
                    .for_update()
                    .load(&mut **conn)
                    .await?;
                let open: Vec<(Vec<u8>, Reservation)> = named
                    .into_iter()
                    .filter(|(_, r)| r.state() == ReservationState::Open && r.expires_at > now)
                    .collect();
                let mut done = Vec::with_capacity(open.len());
                let mut write = FinishReservations {
                    hashes: Vec::with_capacity(open.len()),
                    states: Vec::with_capacity(open.len()),
                    charged: Vec::with_capacity(open.len()),
                    now,
                };
                for (hash, reservation) in open {
                    let Some(finish) = finishes.iter().find(|f| f.token_hash[..] == hash[..])
                    else {
                        continue;
                    };
                    write.hashes.push(hash);
                    write.states.push(finish.state.as_str());
                    write.charged.push(finish.charged);
                    done.push((finish.token_hash, reservation.finished(finish, now)));
                }
                if !done.is_empty() {
                    write.execute(&mut **conn).await?;
                }
                Ok(done)
            }
            DbConnection::Sqlite(_) => {
                let mut done = Vec::new();
                for finish in finishes {
                    let finished =
                        Self::finish(conn, &finish.token_hash, finish.state, finish.charged, now)
                            .await?;
                    if let Some(reservation) = finished {
                        done.push((finish.token_hash, reservation));
                    }
                }
                Ok(done)
            }
        }
    }

    pub async fn insert_many(
        conn: &mut DbConnection,
        reservations: &[NewReservation],
    ) -> diesel::QueryResult<usize> {
        if reservations.is_empty() {
            return Ok(0);
        }
        match conn {
            DbConnection::Postgres(conn) => {
                InsertReservations::new(reservations)
                    .execute(&mut **conn)
                    .await
            }
            // SQLite takes one row per statement here (the caller's
            // transaction still makes them one write).
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                let mut inserted = 0;
                for reservation in reservations {
                    inserted += diesel::insert_into(credit_reservations::table)
                        .values(reservation)
                        .execute(conn)
                        .await?;
                }
                Ok(inserted)
            }
        }
    }

    pub async fn find(
        conn: &mut DbConnection,
        token_hash: &[u8; 32],
    ) -> diesel::QueryResult<Option<Reservation>> {
        first_row!(
            conn,
            credit_reservations::table
                .find(token_hash.to_vec())
                .select(Reservation::as_select())
        )
    }

    /// Moves an open reservation that has not expired by `now` to `state`,
    /// charged `charged`; none if it was not open and unexpired.
    pub async fn finish(
        conn: &mut DbConnection,
        token_hash: &[u8; 32],
        state: ReservationState,
        charged: i64,
        now: DateTime<Utc>,
    ) -> diesel::QueryResult<Option<Reservation>> {
        use diesel::OptionalExtension;
        let open = credit_reservations::table
            .filter(credit_reservations::token_hash.eq(token_hash.to_vec()))
            .filter(credit_reservations::state.eq(ReservationState::Open.as_str()))
            .filter(credit_reservations::expires_at.gt(Timestamp(now)));
        let changes = (
            credit_reservations::state.eq(state.as_str()),
            credit_reservations::charged.eq(Some(charged)),
            credit_reservations::finished_at.eq(Some(Timestamp(now))),
        );
        db_run!(conn => {
            let finish = diesel::update(open)
                .set(changes)
                .returning(Reservation::as_returning());
            crate::db::PreparedOnce(finish).get_result(conn).await.optional()
        })
    }

    /// Expires up to `limit` open reservations whose time passed by `now`,
    /// charging each its reserved amount (already out of the balance, so
    /// nothing else changes); returns them. Rows another replica is
    /// expiring or settling at the same moment are skipped on PostgreSQL,
    /// and the filter on `open` keeps any row from expiring twice.
    pub async fn expire_due(
        conn: &mut DbConnection,
        now: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<Vec<Reservation>> {
        let now = Timestamp(now);
        let due = credit_reservations::table
            .filter(credit_reservations::state.eq(ReservationState::Open.as_str()))
            .filter(credit_reservations::expires_at.le(now))
            .select(credit_reservations::token_hash)
            .order(credit_reservations::expires_at)
            .limit(limit);
        let changes = (
            credit_reservations::state.eq(ReservationState::Expired.as_str()),
            credit_reservations::charged.eq(credit_reservations::reserved.nullable()),
            credit_reservations::finished_at.eq(Some(now)),
        );
        // Only the lock differs: SQLite has no row locks (one writer).
        let hashes: Vec<Vec<u8>> = match conn {
            DbConnection::Postgres(conn) => {
                due.for_update().skip_locked().load(&mut **conn).await?
            }
            DbConnection::Sqlite(conn) => {
                let conn: &mut crate::db::SqliteAsyncConnection = conn;
                due.load(conn).await?
            }
        };
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let expiring = credit_reservations::table
            .filter(credit_reservations::token_hash.eq_any(hashes))
            .filter(credit_reservations::state.eq(ReservationState::Open.as_str()));
        db_run!(conn => {
            let expire = diesel::update(expiring)
                .set(changes)
                .returning(Reservation::as_returning());
            crate::db::PreparedOnce(expire).load(conn).await
        })
    }

    /// Hands the open reservations of key `from` to key `to` (a rotation's
    /// replacement, which takes over the balance they came from).
    pub async fn move_open(
        conn: &mut DbConnection,
        from: ApiKeyId,
        to: ApiKeyId,
    ) -> diesel::QueryResult<usize> {
        update_rows!(
            conn,
            credit_reservations::table
                .filter(credit_reservations::api_key_id.eq(from))
                .filter(credit_reservations::state.eq(ReservationState::Open.as_str())),
            credit_reservations::api_key_id.eq(to)
        )
    }

    /// Deletes up to `limit` reservations finished before `before`; returns
    /// how many.
    pub async fn purge_finished(
        conn: &mut DbConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> diesel::QueryResult<usize> {
        let finished = credit_reservations::table
            .filter(credit_reservations::state.ne(ReservationState::Open.as_str()))
            .filter(credit_reservations::finished_at.lt(Timestamp(before)))
            .select(credit_reservations::token_hash)
            .limit(limit);
        db_run!(conn => {
            let hashes: Vec<Vec<u8>> = finished.load(conn).await?;
            diesel::delete(
                credit_reservations::table.filter(credit_reservations::token_hash.eq_any(hashes)),
            )
            .execute(conn)
            .await
        })
    }
}

/// [`Reservation::finish_many`]'s write on PostgreSQL: every reservation
/// of a batch in one statement, prepared once per connection (a static
/// query id, unlike `sql_query`).
#[derive(diesel::query_builder::QueryId)]
struct FinishReservations {
    hashes: Vec<Vec<u8>>,
    states: Vec<&'static str>,
    charged: Vec<i64>,
    now: DateTime<Utc>,
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for FinishReservations {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Binary, Text, Timestamptz};
        out.push_sql("UPDATE credit_reservations AS r SET state = v.state, charged = v.charged, finished_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<Binary>, _>(&self.hashes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.states)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.charged)?;
        out.push_sql(") AS v(token_hash, state, charged) WHERE r.token_hash = v.token_hash");
        Ok(())
    }
}

/// [`Reservation::insert_many`] on PostgreSQL: one statement of one shape
/// whatever the batch's size, so it stays prepared (a multi-row VALUES
/// would be prepared anew for each size).
#[derive(diesel::query_builder::QueryId)]
struct InsertReservations {
    token_hashes: Vec<Vec<u8>>,
    api_key_ids: Vec<i64>,
    chatbot_ids: Vec<uuid::Uuid>,
    reserved: Vec<i64>,
    from_balance: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    organization_ids: Vec<Option<uuid::Uuid>>,
}

impl InsertReservations {
    fn new(reservations: &[NewReservation]) -> Self {
        Self {
            token_hashes: reservations.iter().map(|r| r.token_hash.clone()).collect(),
            api_key_ids: reservations.iter().map(|r| r.api_key_id.0).collect(),
            chatbot_ids: reservations.iter().map(|r| r.chatbot_id.0).collect(),
            reserved: reservations.iter().map(|r| r.reserved).collect(),
            from_balance: reservations.iter().map(|r| r.from_balance).collect(),
            created_at: reservations.iter().map(|r| r.created_at.0).collect(),
            expires_at: reservations.iter().map(|r| r.expires_at.0).collect(),
            organization_ids: reservations
                .iter()
                .map(|r| r.organization_id.map(|id| id.0))
                .collect(),
        }
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for InsertReservations {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, Timestamptz, Uuid};
        out.push_sql(
            "INSERT INTO credit_reservations \
             (token_hash, api_key_id, chatbot_id, reserved, from_balance, created_at, expires_at, \
              organization_id) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Binary>, _>(&self.token_hashes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.api_key_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Uuid>, _>(&self.chatbot_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.reserved)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.from_balance)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.expires_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Uuid>>, _>(&self.organization_ids)?;
        out.push_sql(")");
        Ok(())
    }
}
