//! Reservations across replicas and faults (a killed replica, concurrent
//! settlements, PostgreSQL cut mid-load, two sweeping replicas), and with a
//! rotation's grace period or a refill in the same period.

use super::*;

/// A reservation or settlement answered by a replica is committed: killing
/// it (SIGKILL) loses none, and the other replica settles what it reserved.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_loses_no_reservation_or_settlement_it_answered_postgres() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let (key, id) = key_with_credits(&app, &owner, Some(1_000)).await;
    let replica = app.spawn_replica_process(&[]).await;
    let mut charged = 0;
    for actual in 0..10 {
        let answer = reserve(&replica, &key, 20).await;
        charged += settle(&replica, &answer.reservation_id, actual)
            .await
            .unwrap()
            .charged_cost;
    }
    let open = reserve(&replica, &key, 20).await;
    assert!(open.valid);
    drop(replica); // kill_on_drop: SIGKILL
    assert_eq!(balance(&app, &owner, id).await, 1_000 - charged - 20);
    settle(&app, &open.reservation_id, 7)
        .await
        .expect("the other replica settles it");
    assert_eq!(balance(&app, &owner, id).await, 1_000 - charged - 7);
}

/// Ten settlements of one reservation at once, at ten different costs and
/// through two processes: exactly one is applied, and the balance shows
/// that one only.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_settlements_of_one_reservation_apply_once_postgres() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let (key, id) = key_with_credits(&app, &owner, Some(1_000)).await;
    let replica = app.spawn_replica_process(&[]).await;
    let reserved = reserve(&app, &key, 100).await;
    let settlements = (0..10).map(|cost| {
        let clients: &Clients = if cost % 2 == 0 { &app } else { &replica };
        settle(clients, &reserved.reservation_id, cost * 10)
    });
    let answers = futures_util::future::join_all(settlements).await;
    let applied: Vec<&proto::CreditReservation> = answers.iter().flatten().collect();
    assert_eq!(applied.len(), 1, "{answers:?}");
    for refused in answers.iter().filter(|answer| answer.is_err()) {
        assert_eq!(
            refused.as_ref().unwrap_err().code(),
            Code::FailedPrecondition
        );
    }
    assert_eq!(
        balance(&app, &owner, id).await,
        1_000 - applied[0].charged_cost
    );
}

/// PostgreSQL cut, then garbled, under a load of reserve/settle pairs:
/// calls fail with UNAVAILABLE (never INTERNAL) while it is out, every
/// reservation answered VALID is there afterwards and settles (a retried
/// settlement whose first answer was lost gets the same answer), and the
/// balance is exactly the start minus what was settled and what is still
/// held by reservations whose answers were lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_fault_mid_load_loses_no_answered_reservation_or_settlement() {
    reserve_and_settle_through_postgres_faults(Budget::Key).await;
}

/// The same for reservations held on an organization's balance (the key has
/// none of its own), which take the locked path over both.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_fault_mid_load_loses_no_reservation_or_settlement_of_an_organization() {
    reserve_and_settle_through_postgres_faults(Budget::Organization).await;
}

backend_test! {
    async fn during_a_grace_period_both_keys_spend_one_budget() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let (old_key, old_id) = key_with_credits(&app, &owner, Some(100)).await;
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest {
                id: old_id,
                grace_period: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                ..Default::default()
            })
            .await
            .expect("rotate with a grace period")
            .into_inner();
        let new_key = rotated.key;
        let new_id = rotated.api_key.unwrap().id;
        assert_eq!(balance(&app, &owner, old_id).await, 0, "the old key keeps nothing of its own");
        assert_eq!(balance(&app, &owner, new_id).await, 100);

        // The old key, still working, spends and reserves from the one budget.
        let spent = crate::helpers::verify_costing(&app, &old_key, 30).await;
        assert!(spent.valid, "{spent:?}");
        assert_eq!(spent.credits_remaining, Some(70));
        let held = reserve(&app, &old_key, 20).await;
        assert_eq!(held.credits_remaining, Some(50));
        assert_eq!(balance(&app, &owner, new_id).await, 50);
        let settled = settle(&app, &held.reservation_id, 5).await.unwrap();
        assert_eq!(settled.api_key_id, new_id);
        assert_eq!(balance(&app, &owner, new_id).await, 65);

        assert!(crate::helpers::verify_costing(&app, &new_key, 65).await.valid);
        let refused = crate::helpers::verify_costing(&app, &old_key, 1).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded, "spent through either key");
        assert_eq!(refused.credits_remaining, Some(0));

        // A top-up of the replacement reaches the old key at once.
        app.api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey {
                    id: new_id,
                    credits: Some(proto::Credits { remaining: 10, ..Default::default() }),
                    ..Default::default()
                },
                &["credits.remaining"],
            ))
            .await
            .expect("top up the replacement");
        assert!(crate::helpers::verify_costing(&app, &old_key, 10).await.valid);
    }
}

backend_test! {
    async fn a_settlement_refunds_a_key_with_a_refill_in_the_same_period() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "refilled").await;
        let created = app
            .create_api_key_with(&owner, &chatbot.id, proto::CreateApiKeyRequest {
                credits: Some(proto::Credits {
                    remaining: 1000,
                    refill: Some(proto::Refill {
                        amount: 1000,
                        interval: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let id = created.api_key.unwrap().id;
        assert!(crate::helpers::verify_costing(&app, &created.key, 250).await.valid);
        let reserved = reserve(&app, &created.key, 300).await;
        assert_eq!(reserved.credits_remaining, Some(450));
        settle(&app, &reserved.reservation_id, 100).await.unwrap();
        assert_eq!(balance(&app, &owner, id).await, 650, "200 back in the same period");
    }
}

/// Fifty reservations expire while two server processes sweep them at
/// once: each is charged once (the balance stays as held) and counted once
/// in usage, whichever replica found it.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sweeping_the_same_expired_reservations_charge_each_once_postgres() {
    let fast = [
        "--reservation-ttl-secs",
        "1",
        "--usage-flush-interval-secs",
        "1",
    ];
    let app = spawn_app_with(&fast).await;
    let owner = app.new_user().await;
    let (key, id) = key_with_credits(&app, &owner, Some(10_000)).await;
    let replica = app
        .spawn_replica_process(&[
            ("RESERVATION_TTL_SECS", "1"),
            ("USAGE_FLUSH_INTERVAL_SECS", "1"),
        ])
        .await;
    let held = (0..50).map(|call| {
        let clients: &Clients = if call % 2 == 0 { &app } else { &replica };
        reserve(clients, &key, 7)
    });
    let answers = futures_util::future::join_all(held).await;
    assert!(answers.iter().all(|answer| answer.valid));
    assert_eq!(balance(&app, &owner, id).await, 10_000 - 50 * 7);
    eventually((350, 0, 0, 350), || metered(&app, &owner, id)).await;
    // Another round of sweeps finds nothing more to charge or count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metered(&app, &owner, id).await, (350, 0, 0, 350));
    assert_eq!(balance(&app, &owner, id).await, 10_000 - 50 * 7);
    for answer in &answers {
        assert_code(
            release(&app, &answer.reservation_id).await,
            Code::FailedPrecondition,
        );
    }
}
