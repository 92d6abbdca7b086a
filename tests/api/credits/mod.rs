//! A key's own limits (issue 15): its rate limit and its credits, set on
//! CreateApiKey and UpdateApiKey, shown by Get/List, and enforced by
//! VerifyApiKey exactly, whatever the concurrency and however many replicas.

use std::collections::HashMap;
use std::time::Duration;

use chatbot_backend::db::models::{ApiKey, KeyLimitChanges, KeyLimits};
use chatbot_backend::domain::{ApiKeyId, Refill};
use chatbot_backend::proto::{self, VerifyApiKeyReason};
use tonic::Code;

use crate::helpers::{
    api_key_update, assert_code, backend_test, spawn_app, spawn_app_with, verify_costing,
    violated_fields, Clients, TestApp, TestUser,
};

mod rotation_and_cost;

fn window(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn credits(remaining: i64) -> proto::Credits {
    proto::Credits {
        remaining,
        ..Default::default()
    }
}

/// A key with these limits on a new chatbot of `owner`.
async fn key_with(
    app: &TestApp,
    owner: &TestUser,
    rate_limit: Option<proto::RateLimit>,
    credits: Option<proto::Credits>,
) -> proto::CreateApiKeyResponse {
    let chatbot = app.create_chatbot(owner, "limited").await;
    let limits = proto::CreateApiKeyRequest {
        rate_limit,
        credits,
        ..Default::default()
    };
    app.create_api_key_with(owner, &chatbot.id, limits).await
}

/// An ApiKey naming only its id: with a mask, an update that clears the
/// fields it names.
fn key_id(id: i64) -> proto::ApiKey {
    proto::ApiKey {
        id,
        ..Default::default()
    }
}

backend_test! {
    async fn a_key_is_created_with_limits_and_shows_them_on_get_and_list() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let refill = proto::Refill {
            amount: 500,
            interval: window(3600),
        };
        let created = key_with(
            &app,
            &owner,
            Some(proto::RateLimit { limit: 5, window: window(60), ..Default::default() }),
            Some(proto::Credits {
                remaining: 100,
                refill: Some(refill),
                next_refill_time: None,
                low_threshold: 0,
            }),
        )
        .await;
        let key = created.api_key.unwrap();
        let rate_limit = key.rate_limit.unwrap();
        assert_eq!((rate_limit.limit, rate_limit.window), (5, window(60)));
        let shown = key.credits.unwrap();
        assert_eq!(shown.remaining, 100);
        assert_eq!(shown.refill, Some(refill));
        let next = shown.next_refill_time.expect("a refill has a next time");
        let create = key.create_time.unwrap();
        assert!((3590..=3610).contains(&(next.seconds - create.seconds)), "{next:?} vs {create:?}");

        assert_eq!(app.get_api_key(&owner, key.id).await.credits, key.credits);
        let listed = app
            .api_keys(Some(&owner.token))
            .list_api_keys(proto::ListApiKeysRequest {
                chatbot_id: key.chatbot_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .api_keys;
        assert_eq!(listed, vec![key]);

        // A key without limits shows none, and verifies without any.
        let plain = app.create_api_key(&owner, &app.create_chatbot(&owner, "plain").await.id).await;
        let plain_key = plain.api_key.unwrap();
        assert_eq!((plain_key.rate_limit, plain_key.credits), (None, None));
        assert_eq!(app.verify(&plain.key).await.credits_remaining, None);
    }
}

backend_test! {
    async fn limits_outside_their_bounds_are_invalid_argument_naming_each_field() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "bounds").await;
        let status = assert_code(
            app.api_keys(Some(&owner.token))
                .create_api_key(proto::CreateApiKeyRequest {
                    chatbot_id: chatbot.id,
                    rate_limit: Some(proto::RateLimit { limit: 0, window: None, ..Default::default() }),
                    credits: Some(proto::Credits {
                        remaining: -1,
                        refill: Some(proto::Refill { amount: 10, interval: window(1) }),
                        next_refill_time: None,
                        low_threshold: 0,
                    }),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        let fields = violated_fields(&status);
        assert!(fields.contains(&"rate_limit.window".to_owned()), "{fields:?}");
        assert!(fields.contains(&"credits.remaining".to_owned()), "{fields:?}");

        let key = app.create_api_key(&owner, &app.create_chatbot(&owner, "c").await.id).await;
        let status = assert_code(
            app.api_keys(None)
                .verify_api_key(proto::VerifyApiKeyRequest {
                    key: key.key,
                    cost: -1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["cost"]);
    }
}

backend_test! {
    async fn verification_spends_its_cost_and_a_short_balance_spends_nothing() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let created = key_with(&app, &owner, None, Some(credits(10))).await;
        let key = created.key;

        let answer = verify_costing(&app, &key, 0).await;
        assert!(answer.valid);
        assert_eq!(answer.credits_remaining, Some(9), "a cost of 0 spends 1");
        assert_eq!(verify_costing(&app, &key, 7).await.credits_remaining, Some(2));

        let refused = verify_costing(&app, &key, 3).await;
        assert!(!refused.valid);
        assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
        assert_eq!(refused.credits_remaining, Some(2), "a refused call spends nothing");
        assert_eq!(refused.reset_time, None, "no refill, so no reset");
        assert_eq!((refused.chatbot_id.as_str(), refused.api_key_id), ("", 0));

        assert_eq!(verify_costing(&app, &key, 2).await.credits_remaining, Some(0));
        let id = created.api_key.unwrap().id;
        assert_eq!(app.get_api_key(&owner, id).await.credits.unwrap().remaining, 0);
    }
}

backend_test! {
    async fn concurrent_verifications_never_spend_more_credits_than_the_key_has() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let key = key_with(&app, &owner, None, Some(credits(100))).await.key;
        let calls = (0..130).map(|_| verify_costing(&app, &key, 1));
        let answers = futures_util::future::join_all(calls).await;
        let valid = answers.iter().filter(|answer| answer.valid).count();
        assert_eq!(valid, 100);
        assert!(answers
            .iter()
            .filter(|answer| !answer.valid)
            .all(|answer| answer.reason() == VerifyApiKeyReason::UsageExceeded));
        let mut balances: Vec<i64> = answers
            .iter()
            .filter(|answer| answer.valid)
            .map(|answer| answer.credits_remaining.unwrap())
            .collect();
        balances.sort_unstable();
        assert_eq!(balances, (0..100).collect::<Vec<_>>(), "each spend left its own balance");
    }
}

/// 130 concurrent verifications of a key with 100 credits, half through
/// each of two server processes on one database: exactly 100 are VALID.
#[tokio::test(flavor = "multi_thread")]
async fn credits_spent_through_two_replicas_postgres_add_up_exactly() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let key = key_with(&app, &owner, None, Some(credits(100))).await.key;
    let replica = app.spawn_replica_process(&[]).await;
    let calls = (0..130).map(|call| {
        let clients: &Clients = if call % 2 == 0 { &app } else { &replica };
        verify_costing(clients, &key, 1)
    });
    let answers = futures_util::future::join_all(calls).await;
    let valid = answers.iter().filter(|answer| answer.valid).count();
    assert_eq!(valid, 100);
}

/// A spend answered VALID is committed before the answer: killing the
/// replica that answered (SIGKILL, no shutdown) loses none of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_loses_no_spend_it_answered_valid_postgres() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let created = key_with(&app, &owner, None, Some(credits(50))).await;
    let replica = app.spawn_replica_process(&[]).await;
    let mut spent = 0;
    for _ in 0..20 {
        let answer = verify_costing(&replica, &created.key, 2).await;
        spent += if answer.valid { 2 } else { 0 };
    }
    drop(replica); // kill_on_drop: SIGKILL
    let id = created.api_key.unwrap().id;
    assert_eq!(spent, 40);
    assert_eq!(
        app.get_api_key(&owner, id).await.credits.unwrap().remaining,
        10
    );
}

/// Each replica settles spends on the balance as it is in the database,
/// not as that replica last saw it: a spend elsewhere and a top-up
/// elsewhere both count at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_spends_from_the_balance_as_it_is_now_not_as_it_last_saw_it_postgres() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let created = key_with(&app, &owner, None, Some(credits(5))).await;
    let id = created.api_key.unwrap().id;
    let replica = app.spawn_replica_process(&[]).await;

    assert_eq!(
        verify_costing(&app, &created.key, 1)
            .await
            .credits_remaining,
        Some(4)
    );
    assert_eq!(
        verify_costing(&replica, &created.key, 3)
            .await
            .credits_remaining,
        Some(1)
    );
    // The first process last saw 4; the key has 1.
    let refused = verify_costing(&app, &created.key, 3).await;
    assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
    assert_eq!(refused.credits_remaining, Some(1));

    // A top-up through the replica; the first process last saw 1.
    replica
        .api_keys(Some(&owner.token))
        .update_api_key(api_key_update(
            proto::ApiKey {
                id,
                credits: Some(credits(10)),
                ..Default::default()
            },
            &["credits.remaining"],
        ))
        .await
        .expect("top up");
    let spent = verify_costing(&app, &created.key, 10).await;
    assert!(spent.valid, "the top-up counts at once: {spent:?}");
    assert_eq!(spent.credits_remaining, Some(0));
    // The replica last saw 10 (its own write); the key has 0.
    let refused = verify_costing(&replica, &created.key, 1).await;
    assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
    assert_eq!(refused.credits_remaining, Some(0));
    assert_eq!(
        app.get_api_key(&owner, id).await.credits.unwrap().remaining,
        0
    );
}

backend_test! {
    async fn a_due_refill_resets_the_balance_on_the_next_verification() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let created = key_with(
            &app,
            &owner,
            None,
            Some(proto::Credits {
                remaining: 1,
                refill: Some(proto::Refill { amount: 5, interval: window(60) }),
                next_refill_time: None,
                low_threshold: 0,
            }),
        )
        .await;
        assert!(verify_costing(&app, &created.key, 1).await.valid);
        let refused = verify_costing(&app, &created.key, 1).await;
        assert_eq!(refused.reason(), VerifyApiKeyReason::UsageExceeded);
        let next_refill = refused.reset_time.expect("the next refill");

        // Two and a half intervals pass (the last refill moved back, as a
        // clock would move forward; this replica's cache still holds the
        // old refill time).
        let id = ApiKeyId(created.api_key.unwrap().id);
        let refill = Refill::parse("refill", 5, Duration::from_secs(60)).unwrap();
        let mut changes = KeyLimitChanges::default();
        changes.set_refill(Some(refill), chrono::Utc::now() - chrono::TimeDelta::seconds(150));
        let mut conn = app.db.conn().await.unwrap();
        KeyLimits::apply(&mut conn, id, &changes).await.unwrap();
        drop(conn);

        let answer = verify_costing(&app, &created.key, 2).await;
        assert!(answer.valid, "{answer:?}");
        assert_eq!(answer.credits_remaining, Some(3), "refilled to 5, then 2 spent");
        let key = app.get_api_key(&owner, id.0).await.credits.unwrap();
        let next = key.next_refill_time.unwrap();
        // The refill keeps its schedule: the next is within one interval.
        let now = chrono::Utc::now().timestamp();
        assert!((now..=now + 60).contains(&next.seconds), "{next:?}");
        assert_ne!(next, next_refill);
    }
}

backend_test! {
    async fn a_rate_limited_key_is_refused_with_its_reset_time_and_spends_nothing() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let created = key_with(
            &app,
            &owner,
            Some(proto::RateLimit { limit: 3, window: window(60), ..Default::default() }),
            Some(credits(100)),
        )
        .await;
        let mut reasons = HashMap::new();
        let mut last = None;
        for _ in 0..6 {
            let answer = verify_costing(&app, &created.key, 1).await;
            *reasons.entry(answer.reason()).or_insert(0) += 1;
            last = Some(answer);
        }
        assert_eq!(reasons[&VerifyApiKeyReason::Valid], 3, "{reasons:?}");
        assert_eq!(reasons[&VerifyApiKeyReason::RateLimited], 3, "{reasons:?}");
        let reset = last.unwrap().reset_time.expect("when the limit resets");
        let now = chrono::Utc::now().timestamp();
        assert!((now..=now + 21).contains(&reset.seconds), "one call every 20 s: {reset:?}");
        let id = created.api_key.unwrap().id;
        assert_eq!(app.get_api_key(&owner, id).await.credits.unwrap().remaining, 97);
    }
}

/// With Redis, a key's own limit holds across replicas: 5 per minute is 5
/// in total, not 5 per replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_keys_rate_limit_holds_across_replicas_sharing_redis_postgres() {
    let prefix = crate::shared_limits::RedisPrefix::new();
    let url = crate::shared_limits::redis_url(crate::shared_limits::redis_addr());
    let app = spawn_app_with(&["--redis-url", &url, "--redis-key-prefix", &prefix.0]).await;
    let replica = app
        .spawn_replica_process(&[("REDIS_URL", &url), ("REDIS_KEY_PREFIX", &prefix.0)])
        .await;
    let owner = app.new_user().await;
    let key = key_with(
        &app,
        &owner,
        Some(proto::RateLimit {
            limit: 5,
            window: window(60),
            ..Default::default()
        }),
        None,
    )
    .await
    .key;
    let mut valid = 0;
    for call in 0..12 {
        let mut client = if call % 2 == 0 {
            app.api_keys(None)
        } else {
            replica.api_keys(None)
        };
        let answer = client
            .verify_api_key(proto::VerifyApiKeyRequest {
                key: key.clone(),
                cost: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        valid += usize::from(answer.valid);
    }
    assert_eq!(valid, 5);
}

backend_test! {
    async fn update_api_key_changes_only_what_the_mask_names() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let created = key_with(&app, &owner, None, Some(credits(10))).await;
        let id = created.api_key.clone().unwrap().id;
        assert!(verify_costing(&app, &created.key, 4).await.valid);

        let updated = app
            .api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey {
                    id,
                    display_name: "renamed".into(),
                    rate_limit: Some(proto::RateLimit { limit: 2, window: window(1), ..Default::default() }),
                    credits: Some(credits(1000)),
                    ..Default::default()
                },
                &["display_name", "rate_limit"],
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!(updated.display_name, "renamed");
        assert_eq!(updated.rate_limit.unwrap().limit, 2);
        assert_eq!(updated.credits.unwrap().remaining, 6, "credits were not in the mask");

        // A top-up sets the balance; the next verification sees it at once.
        let topped = app
            .api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey { id, credits: Some(credits(50)), ..Default::default() },
                &["credits.remaining"],
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!(topped.credits.unwrap().remaining, 50);
        assert_eq!(verify_costing(&app, &created.key, 1).await.credits_remaining, Some(49));

        // Clearing credits and the limit: unlimited again.
        let cleared = app
            .api_keys(Some(&owner.token))
            .update_api_key(api_key_update(key_id(id), &["credits", "rate_limit"]))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!((cleared.credits, cleared.rate_limit), (None, None));
        let answer = verify_costing(&app, &created.key, 1_000_000).await;
        assert!(answer.valid);
        assert_eq!(answer.credits_remaining, None);

        // Output-only and unknown paths, and an empty mask, are refused.
        for paths in [&["key_prefix"][..], &["nonsense"], &[]] {
            let status = assert_code(
                app.api_keys(Some(&owner.token))
                    .update_api_key(api_key_update(key_id(id), paths))
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["update_mask"], "{paths:?}");
        }
        // Another user may not, whether or not the key exists (AIP-193).
        let stranger = app.new_user().await;
        for id in [id, id + 1000] {
            assert_code(
                app.api_keys(Some(&stranger.token))
                    .update_api_key(api_key_update(key_id(id), &["display_name"]))
                    .await,
                Code::PermissionDenied,
            );
        }
    }
}
