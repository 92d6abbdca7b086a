//! Metering (issue 29): VerifyApiKey with `reserve` holds a call's cost,
//! SettleReservation charges what the call really cost and
//! ReleaseReservation gives it back; unsettled reservations expire charged
//! at the reserved amount. Exact whatever the concurrency and however many
//! replicas, and durable once answered.

use std::time::Duration;

use chatbot_backend::proto::{self, CreditReservationState, VerifyApiKeyReason};
use tonic::{Code, Status};

use crate::helpers::{
    api_key_update, assert_code, backend_test, eventually, reserve, reserve_and_settle_across,
    settle, spawn_app, spawn_app_with, violated_fields, Clients, TestApp, TestUser,
};
use crate::organization_limits::{give_credits, key_on, organization_balance, team_with_chatbot};
use crate::usage::key_usage;

mod replicas_and_faults;

/// A key with `credits` (none: unlimited) on a new chatbot of `owner`:
/// its secret and id.
async fn key_with_credits(app: &TestApp, owner: &TestUser, credits: Option<i64>) -> (String, i64) {
    let chatbot = app.create_chatbot(owner, "metered").await;
    let request = proto::CreateApiKeyRequest {
        credits: credits.map(|remaining| proto::Credits {
            remaining,
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.create_api_key_with(owner, &chatbot.id, request).await;
    (created.key, created.api_key.unwrap().id)
}

async fn release(
    clients: &Clients,
    reservation_id: &str,
) -> Result<proto::CreditReservation, Status> {
    clients
        .api_keys(None)
        .release_reservation(proto::ReleaseReservationRequest {
            reservation_id: reservation_id.into(),
        })
        .await
        .map(|response| response.into_inner().reservation.unwrap())
}

async fn balance(clients: &Clients, owner: &TestUser, id: i64) -> i64 {
    clients
        .get_api_key(owner, id)
        .await
        .credits
        .expect("the key has credits")
        .remaining
}

/// (reserved, settled, refunded, expired) of a key's usage.
async fn metered(clients: &Clients, owner: &TestUser, id: i64) -> (i64, i64, i64, i64) {
    let total = key_usage(clients, owner, id)
        .await
        .total
        .unwrap_or_default();
    (
        total.credits_reserved,
        total.credits_settled,
        total.credits_refunded,
        total.credits_expired,
    )
}

backend_test! {
    async fn a_reservation_holds_its_cost_and_its_settlement_refunds_the_rest_once() {
        let app = spawn_app_with(&["--usage-flush-interval-secs", "1"]).await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(100)).await;

        let reserved = reserve(&app, &key, 30).await;
        assert!(reserved.valid, "{reserved:?}");
        assert_eq!(reserved.credits_remaining, Some(70), "held at once");
        assert!(reserved.reservation_id.starts_with("cbr_"), "{}", reserved.reservation_id);
        let expires = reserved.reservation_expire_time.expect("an expiry");
        let in_ten_minutes = chrono::Utc::now().timestamp() + 600;
        assert!((expires.seconds - in_ten_minutes).abs() < 30, "{expires:?}");
        // A plain spend sees the held credits gone.
        assert_eq!(balance(&app, &owner, id).await, 70);

        let settled = settle(&app, &reserved.reservation_id, 10).await.expect("settle");
        assert_eq!(settled.state(), CreditReservationState::Settled);
        assert_eq!((settled.reserved_cost, settled.charged_cost, settled.api_key_id), (30, 10, id));
        assert!(settled.finish_time.is_some());
        assert_eq!(balance(&app, &owner, id).await, 90, "20 refunded");

        // The same call again changes nothing and answers the same.
        let again = settle(&app, &reserved.reservation_id, 10).await.expect("settle again");
        assert_eq!(again, settled);
        assert_eq!(balance(&app, &owner, id).await, 90);
        // Anything else is refused.
        let other_cost = assert_code(settle(&app, &reserved.reservation_id, 11).await, Code::FailedPrecondition);
        assert!(other_cost.message().contains("settled at 10"), "{}", other_cost.message());
        assert_code(release(&app, &reserved.reservation_id).await, Code::FailedPrecondition);
        assert_eq!(balance(&app, &owner, id).await, 90);

        // The reserved amount is not also counted as spent.
        eventually((30, 10, 20, 0), || metered(&app, &owner, id)).await;
        assert_eq!(key_usage(&app, &owner, id).await.total.unwrap().credits_spent, 0);
    }
}

backend_test! {
    async fn a_settlement_above_its_reservation_goes_below_zero_by_its_excess_and_refuses_until_a_top_up() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(10)).await;
        let reserved = reserve(&app, &key, 10).await;
        assert_eq!(reserved.credits_remaining, Some(0));
        let short = reserve(&app, &key, 1).await;
        assert_eq!(short.reason(), VerifyApiKeyReason::UsageExceeded, "nothing left to hold");
        assert!(short.reservation_id.is_empty());

        let settled = settle(&app, &reserved.reservation_id, 25).await.expect("settle");
        assert_eq!(settled.charged_cost, 25);
        assert_eq!(balance(&app, &owner, id).await, -15, "below zero by the excess");
        for refused in [reserve(&app, &key, 1).await, crate::helpers::verify_costing(&app, &key, 1).await] {
            assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
            assert_eq!(refused.credits_remaining, Some(-15));
        }

        app.api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey {
                    id,
                    credits: Some(proto::Credits { remaining: 5, ..Default::default() }),
                    ..Default::default()
                },
                &["credits.remaining"],
            ))
            .await
            .expect("top up");
        assert!(reserve(&app, &key, 5).await.valid, "a top-up ends the refusal");
    }
}

backend_test! {
    async fn a_release_gives_the_reservation_back_whole_once() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(50)).await;
        let reserved = reserve(&app, &key, 20).await;
        assert_eq!(balance(&app, &owner, id).await, 30);
        let released = release(&app, &reserved.reservation_id).await.expect("release");
        assert_eq!(released.state(), CreditReservationState::Released);
        assert_eq!(released.charged_cost, 0);
        assert_eq!(balance(&app, &owner, id).await, 50);
        assert_eq!(release(&app, &reserved.reservation_id).await.expect("again"), released);
        assert_eq!(balance(&app, &owner, id).await, 50, "given back once");
        assert_code(settle(&app, &reserved.reservation_id, 1).await, Code::FailedPrecondition);
    }
}

backend_test! {
    async fn unknown_or_malformed_ids_are_not_found_and_bad_costs_name_the_field() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(50)).await;
        let made_up = format!("cbr_{}", "x".repeat(43));
        for id in ["", "nonsense", "cbr_short", made_up.as_str()] {
            let status = assert_code(settle(&app, id, 1).await, Code::NotFound);
            assert!(!status.message().contains("key"), "says nothing of a key: {}", status.message());
            assert_code(release(&app, id).await, Code::NotFound);
        }
        let reserved = reserve(&app, &key, 5).await;
        for cost in [-1, 1_000_000_001, i64::MAX, i64::MIN] {
            let status = assert_code(settle(&app, &reserved.reservation_id, cost).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["actual_cost"]);
        }
        // Nothing was settled by the refused calls.
        assert_eq!(balance(&app, &owner, id).await, 45);
        assert_eq!(settle(&app, &reserved.reservation_id, 0).await.unwrap().charged_cost, 0);
        assert_eq!(balance(&app, &owner, id).await, 50);
    }
}

backend_test! {
    async fn an_unsettled_reservation_expires_charged_at_its_reserved_amount() {
        let app = spawn_app_with(&["--reservation-ttl-secs", "1", "--usage-flush-interval-secs", "1"]).await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(100)).await;
        let late = reserve(&app, &key, 30).await;
        let swept = reserve(&app, &key, 5).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Settled after its time, before or after the sweep came to it.
        let status = assert_code(settle(&app, &late.reservation_id, 1).await, Code::FailedPrecondition);
        assert!(status.message().contains("expired"), "{}", status.message());
        assert_code(release(&app, &late.reservation_id).await, Code::FailedPrecondition);
        assert_eq!(balance(&app, &owner, id).await, 65, "charged as reserved");
        // The sweep charges both exactly once, whoever asks meanwhile.
        eventually((35, 0, 0, 35), || metered(&app, &owner, id)).await;
        assert_code(release(&app, &swept.reservation_id).await, Code::FailedPrecondition);
        assert_eq!(balance(&app, &owner, id).await, 65);
    }
}

backend_test! {
    async fn a_key_without_credits_gets_a_reservation_that_holds_nothing_but_is_metered() {
        let app = spawn_app_with(&["--usage-flush-interval-secs", "1"]).await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, None).await;
        let reserved = reserve(&app, &key, 40).await;
        assert!(reserved.valid);
        assert_eq!(reserved.credits_remaining, None);
        let settled = settle(&app, &reserved.reservation_id, 55).await.expect("settle");
        assert_eq!((settled.reserved_cost, settled.charged_cost), (40, 55));
        eventually((40, 55, 0, 0), || metered(&app, &owner, id)).await;
    }
}

backend_test! {
    async fn a_rotation_hands_open_reservations_to_the_replacement() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let (key, id) = key_with_credits(&app, &owner, Some(100)).await;
        let reserved = reserve(&app, &key, 40).await;
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest { id, ..Default::default() })
            .await
            .expect("rotate")
            .into_inner();
        let new_id = rotated.api_key.unwrap().id;
        assert_eq!(balance(&app, &owner, new_id).await, 60, "the budget, not a reset");
        let settled = settle(&app, &reserved.reservation_id, 10).await.expect("settle");
        assert_eq!(settled.api_key_id, new_id);
        assert_eq!(balance(&app, &owner, new_id).await, 90, "refunded to the replacement");
    }
}

/// 200 reserve/settle pairs at once, half through each of two server
/// processes on one database (each settled through the other), with random
/// real costs: no reservation is granted that the balance did not cover
/// when it was made, and the final balance is the start minus what was
/// settled, exactly.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reservations_over_two_replicas_never_overrun_postgres() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let (key, id) = key_with_credits(&app, &owner, Some(5_000)).await;
    let replica = app.spawn_replica_process(&[]).await;
    // 5,000 holds 100 reservations of 50, fewer once settlements above
    // their reservation take more; 200 never fit.
    let charged =
        reserve_and_settle_across(&app, &replica, &[key], |answer| answer.credits_remaining).await;
    assert_eq!(balance(&app, &owner, id).await, 5_000 - charged);
}

/// Sums over the reservations as stored: the credits still held by open
/// ones, and what settled ones were charged.
async fn stored_reservations(app: &TestApp) -> (i64, i64) {
    #[derive(diesel::QueryableByName)]
    struct Sums {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        held: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        charged: i64,
    }
    let mut conn = app.sql().await;
    let sums: Sums = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT COALESCE(SUM(reserved) FILTER (WHERE state = 'open'), 0)::int8 AS held, \
             COALESCE(SUM(charged) FILTER (WHERE state = 'settled'), 0)::int8 AS charged \
             FROM credit_reservations",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    (sums.held, sums.charged)
}

/// Whose balance the fault test's reservations hold on.
#[derive(Clone, Copy)]
enum Budget {
    Key,
    Organization,
}

/// The balance a fault test funded: a key's id, or an organization's.
enum Funded {
    Key(i64),
    Organization(String),
}

async fn reserve_and_settle_through_postgres_faults(budget: Budget) {
    let database = crate::helpers::TestDatabase::create().await;
    let proxy = crate::helpers::TcpProxy::start(database.postgres_addr()).await;
    let via_proxy = database.url_via(proxy.addr);
    let app = crate::helpers::spawn_app_on(
        database,
        &via_proxy,
        &[
            "--database-acquire-timeout-ms",
            "1000",
            "--database-connect-timeout-ms",
            "1000",
        ],
    )
    .await;
    let owner;
    let key;
    let funded = match budget {
        Budget::Key => {
            owner = app.new_user().await;
            let (secret, id) = key_with_credits(&app, &owner, Some(1_000_000)).await;
            key = secret;
            Funded::Key(id)
        }
        Budget::Organization => {
            let (team_owner, team, chatbot) = team_with_chatbot(&app).await;
            owner = team_owner;
            key = key_on(&app, &owner, &chatbot, None, None).await;
            give_credits(&app, &owner, &team, 1_000_000).await;
            Funded::Organization(team)
        }
    };

    for fault in [
        crate::helpers::TcpProxy::cut,
        crate::helpers::TcpProxy::garble,
    ] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let mut api_keys = app.api_keys(None);
                let key = key.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    // (reservation id, its cost, whether its settlement was answered)
                    let mut held: Vec<(String, i64, bool)> = Vec::new();
                    let mut call = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        call += 1;
                        let mut request = tonic::Request::new(proto::VerifyApiKeyRequest {
                            key: key.clone(),
                            cost: 10,
                            reserve: true,
                            ..Default::default()
                        });
                        request.set_timeout(Duration::from_secs(3));
                        let answer = match api_keys.verify_api_key(request).await {
                            Ok(answer) => answer.into_inner(),
                            Err(status) => {
                                assert_ne!(status.code(), Code::Internal, "{status:?}");
                                continue;
                            }
                        };
                        assert!(answer.valid, "{answer:?}");
                        let cost = (worker * 7 + call) % 21;
                        let mut request = tonic::Request::new(proto::SettleReservationRequest {
                            reservation_id: answer.reservation_id.clone(),
                            actual_cost: cost,
                        });
                        request.set_timeout(Duration::from_secs(3));
                        let settled = api_keys.settle_reservation(request).await;
                        if let Err(status) = &settled {
                            assert_ne!(status.code(), Code::Internal, "{status:?}");
                        }
                        held.push((answer.reservation_id, cost, settled.is_ok()));
                    }
                    held
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        fault(&proxy);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.restore();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut held = Vec::new();
        for worker in workers {
            held.extend(worker.await.unwrap());
        }
        assert!(
            held.len() > 20,
            "the load went on around the fault: {}",
            held.len()
        );
        // Every reservation answered VALID settles now, at its cost, the
        // same whether its first settlement committed or not.
        for (reservation_id, cost, _) in &held {
            let settled = eventually_ok(|| settle(&app, reservation_id, *cost)).await;
            assert_eq!(
                (settled.state(), settled.charged_cost),
                (CreditReservationState::Settled, *cost)
            );
        }
        let unanswered = held.iter().filter(|(_, _, answered)| !answered).count();
        eprintln!(
            "{} pairs around the fault, {unanswered} settlements unanswered",
            held.len()
        );
    }
    let (held_open, charged) = stored_reservations(&app).await;
    let left = match &funded {
        Funded::Key(id) => balance(&app, &owner, *id).await,
        Funded::Organization(team) => organization_balance(&app, &owner, team).await.unwrap(),
    };
    assert_eq!(left, 1_000_000 - charged - held_open);
}

/// Retries `call` until the store answers (the pool reconnects after a
/// fault), for at most ten seconds.
async fn eventually_ok<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Ok(value) => return value,
            Err(status)
                if status.code() == Code::Unavailable
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}
