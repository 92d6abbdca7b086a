//! Credit reservations as tests make and settle them, alone or 200 at once
//! through two servers.

use chatbot_backend::proto::{self, VerifyApiKeyReason};
use rand::Rng;
use tonic::Status;

use super::Clients;

/// VerifyApiKey of `key` reserving `cost`; panics unless it answers OK.
pub async fn reserve(clients: &Clients, key: &str, cost: i64) -> proto::VerifyApiKeyResponse {
    clients
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: key.into(),
            cost,
            reserve: true,
            ..Default::default()
        })
        .await
        .expect("VerifyApiKey answers OK")
        .into_inner()
}

/// SettleReservation of `reservation_id` at `actual_cost`.
pub async fn settle(
    clients: &Clients,
    reservation_id: &str,
    actual_cost: i64,
) -> Result<proto::CreditReservation, Status> {
    clients
        .api_keys(None)
        .settle_reservation(proto::SettleReservationRequest {
            reservation_id: reservation_id.into(),
            actual_cost,
        })
        .await
        .map(|response| response.into_inner().reservation.unwrap())
}

/// 200 reservations of 50 at once, alternately through `first` and `second`
/// (each settled through the other) with random actual costs of 0 to 100,
/// on `keys` in turn. A refusal must be USAGE_EXCEEDED with less than 50
/// left, a grant must leave nothing below zero, as `remaining` reads the
/// balance that limits from an answer; most fit, not all. Returns what the
/// settled ones were charged in all.
pub async fn reserve_and_settle_across(
    first: &Clients,
    second: &Clients,
    keys: &[String],
    remaining: impl Fn(&proto::VerifyApiKeyResponse) -> Option<i64> + Copy,
) -> i64 {
    let costs: Vec<i64> = {
        let mut rng = rand::thread_rng();
        (0..200).map(|_| rng.gen_range(0..=100)).collect()
    };
    let pairs = costs.iter().enumerate().map(|(call, &actual)| {
        let (reserving, settling) = match call % 2 {
            0 => (first, second),
            _ => (second, first),
        };
        let key = keys[call % keys.len()].clone();
        async move {
            let answer = reserve(reserving, &key, 50).await;
            let left = remaining(&answer).expect("the answer says what is left");
            if !answer.valid {
                assert_eq!(answer.reason(), VerifyApiKeyReason::UsageExceeded);
                assert!(left < 50, "refused with enough: {answer:?}");
                return None;
            }
            assert!(left >= 0, "held more than there was: {answer:?}");
            let settled = settle(settling, &answer.reservation_id, actual)
                .await
                .expect("settle");
            Some(settled.charged_cost)
        }
    });
    let settled: Vec<Option<i64>> = futures_util::future::join_all(pairs).await;
    let granted = settled.iter().flatten().count();
    assert!(granted > 50, "most reservations fit: {granted}");
    assert!(granted < 200, "the balance ran out: {granted}");
    settled.iter().flatten().sum()
}
