//! SettleReservation and ReleaseReservation: what becomes of credits
//! VerifyApiKey held with `reserve`. Public like VerifyApiKey: the
//! reservation id is the credential, looked up by its digest. A reservation
//! is finished once, in one transaction with its balance's correction; an
//! identical second call finds it finished the same way and answers the
//! same, anything else is FAILED_PRECONDITION. The expiry of reservations
//! nobody finished is [`expire_due_reservations`], run by every replica.

use chrono::{DateTime, Utc};
use diesel_async::scoped_futures::ScopedFutureExt;

use super::super::{convert, AppState, Origin};
use crate::db::models::{Reservation, ReservationState};
use crate::db::Database;
use crate::domain::{ReleaseReservation, ReservationEvent, ReservationToken, SettleReservation};
use crate::error::{AppError, AppResult};
use crate::hot_path::{self, UsageRecorder};
use crate::proto;

/// Reservations expired per statement by the sweep.
const EXPIRY_BATCH: i64 = 1000;

/// How a caller finishes a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Charged what the call cost.
    Settle(i64),
    /// Given back whole.
    Release,
}

impl Finish {
    fn state(self) -> ReservationState {
        match self {
            Self::Settle(_) => ReservationState::Settled,
            Self::Release => ReservationState::Released,
        }
    }

    fn charged(self) -> i64 {
        match self {
            Self::Settle(cost) => cost,
            Self::Release => 0,
        }
    }
}

pub async fn settle_reservation(
    state: &AppState,
    _: &Origin,
    cmd: SettleReservation,
) -> AppResult<Reservation> {
    finish(state, cmd.reservation, Finish::Settle(cmd.actual_cost)).await
}

pub async fn release_reservation(
    state: &AppState,
    _: &Origin,
    cmd: ReleaseReservation,
) -> AppResult<Reservation> {
    finish(state, cmd.reservation, Finish::Release).await
}

async fn finish(
    state: &AppState,
    token: Option<ReservationToken>,
    how: Finish,
) -> AppResult<Reservation> {
    // A malformed id is as unknown as a well-formed one nobody issued.
    let token = token.ok_or(AppError::NotFound("reservation"))?;
    let token_hash = token.digest();
    let finished = state
        .verifier
        .finish_reservation(hot_path::Finish {
            token_hash,
            state: how.state(),
            charged: how.charged(),
        })
        .await?;
    if let Some(reservation) = finished {
        return Ok(reservation);
    }
    let mut conn = state.db.conn().await?;
    let reservation = Reservation::find(&mut conn, &token_hash)
        .await?
        .ok_or(AppError::NotFound("reservation"))?;
    already_finished(reservation, how, Utc::now())
}

/// The answer for a reservation that was not open (or had expired) when
/// `how` came: the same answer again for the same call, else why not.
fn already_finished(
    reservation: Reservation,
    how: Finish,
    now: DateTime<Utc>,
) -> AppResult<Reservation> {
    let refused = |why: String| Err(AppError::FailedPrecondition(why));
    match (reservation.state(), how) {
        (ReservationState::Settled, Finish::Settle(cost)) if reservation.charged == Some(cost) => {
            Ok(reservation)
        }
        (ReservationState::Released, Finish::Release) => Ok(reservation),
        (ReservationState::Settled, _) => refused(format!(
            "the reservation was already settled at {}",
            reservation.charged.unwrap_or_default()
        )),
        (ReservationState::Released, _) => refused("the reservation was released".into()),
        // Open here means its time passed before the sweep came to it.
        (ReservationState::Expired | ReservationState::Open, _) => {
            debug_assert!(
                reservation.state() == ReservationState::Expired || reservation.expires_at <= now
            );
            refused(format!(
                "the reservation expired at {} and was charged its reserved {}",
                reservation.expires_at.to_rfc3339(),
                reservation.reserved
            ))
        }
    }
}

/// Charges every reservation whose time has passed at its reserved amount
/// (the credits left the balance when it was made, so only its state
/// changes), counting each in usage history; returns how many. Safe on
/// every replica at once: a reservation leaves `open` only once.
pub async fn expire_due_reservations(db: &Database, usage: &UsageRecorder) -> AppResult<usize> {
    let mut total = 0;
    loop {
        let now = Utc::now();
        let mut conn = db.conn().await?;
        let expired = conn
            .transaction(|conn| {
                async move { Reservation::expire_due(conn, now, EXPIRY_BATCH).await }.scope_boxed()
            })
            .await?;
        for reservation in &expired {
            usage.record_reservation(
                reservation.api_key_id,
                reservation.chatbot_id,
                now,
                ReservationEvent::Expired {
                    charged: reservation.reserved,
                },
            );
        }
        total += expired.len();
        if (expired.len() as i64) < EXPIRY_BATCH {
            return Ok(total);
        }
    }
}

impl From<Reservation> for proto::CreditReservation {
    fn from(reservation: Reservation) -> Self {
        let state = match reservation.state() {
            ReservationState::Open => proto::CreditReservationState::Open,
            ReservationState::Settled => proto::CreditReservationState::Settled,
            ReservationState::Released => proto::CreditReservationState::Released,
            ReservationState::Expired => proto::CreditReservationState::Expired,
        };
        Self {
            api_key_id: reservation.api_key_id.0,
            reserved_cost: reservation.reserved,
            charged_cost: reservation.charged.unwrap_or_default(),
            state: state.into(),
            create_time: Some(convert::timestamp(reservation.created_at)),
            expire_time: Some(convert::timestamp(reservation.expires_at)),
            finish_time: reservation.finished_at.map(convert::timestamp),
        }
    }
}

impl From<Reservation> for proto::SettleReservationResponse {
    fn from(reservation: Reservation) -> Self {
        Self {
            reservation: Some(reservation.into()),
        }
    }
}

impl From<Reservation> for proto::ReleaseReservationResponse {
    fn from(reservation: Reservation) -> Self {
        Self {
            reservation: Some(reservation.into()),
        }
    }
}
