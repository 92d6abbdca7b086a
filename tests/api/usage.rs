//! Usage history (issue 16): VerifyApiKey's answers counted per key and
//! hour, flushed in batches, added up across replicas, and read back by
//! GetApiKeyUsage and GetChatbotUsage.

use std::time::Duration;

use chatbot_backend::proto::{self, UsageCounts, VerifyApiKeyReason};
use prost_types::Timestamp;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, eventually, spawn_app, spawn_app_with, verify_costing,
    violated_fields, Clients, KeyOwner, TestUser,
};

const FLUSH_EVERY_SECOND: &[&str] = &["--usage-flush-interval-secs", "1"];

pub async fn key_usage(
    clients: &Clients,
    owner: &TestUser,
    id: i64,
) -> proto::GetApiKeyUsageResponse {
    clients
        .api_keys(Some(&owner.token))
        .get_api_key_usage(proto::GetApiKeyUsageRequest {
            api_key_id: id,
            ..Default::default()
        })
        .await
        .expect("GetApiKeyUsage")
        .into_inner()
}

async fn chatbot_usage(
    clients: &Clients,
    owner: &TestUser,
    chatbot_id: &str,
) -> proto::GetChatbotUsageResponse {
    clients
        .api_keys(Some(&owner.token))
        .get_chatbot_usage(proto::GetChatbotUsageRequest {
            chatbot_id: chatbot_id.into(),
            ..Default::default()
        })
        .await
        .expect("GetChatbotUsage")
        .into_inner()
}

/// No answer counted: the counts of a key or chatbot's usage, all zero. A test names the counts it expects and leaves the rest to this
/// (`UsageCounts { valid: 2, ..NONE }`).
const NONE: UsageCounts = UsageCounts {
    valid: 0,
    revoked: 0,
    expired: 0,
    rate_limited: 0,
    usage_exceeded: 0,
    credits_spent: 0,
    address_not_allowed: 0,
    insufficient_permissions: 0,
    credits_reserved: 0,
    credits_settled: 0,
    credits_refunded: 0,
    credits_expired: 0,
};

backend_test! {
    async fn each_answer_is_counted_under_its_key_hour_and_reason() {
        let app = spawn_app_with(FLUSH_EVERY_SECOND).await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "counted").await;
        let with_credits = app.create_api_key_with(&owner, &chatbot.id, proto::CreateApiKeyRequest {
            credits: Some(proto::Credits { remaining: 5, ..Default::default() }),
            ..Default::default()
        }).await;
        let limited = app.create_api_key_with(&owner, &chatbot.id, proto::CreateApiKeyRequest {
            rate_limit: Some(proto::RateLimit {
                limit: 1,
                window: Some(prost_types::Duration { seconds: 3600, nanos: 0 }), ..Default::default() }),
            ..Default::default()
        }).await;
        let soon_expired = app.create_api_key_with(&owner, &chatbot.id, proto::CreateApiKeyRequest {
            expire_time: Some(Timestamp {
                seconds: chrono::Utc::now().timestamp() + 2,
                nanos: 0,
            }),
            ..Default::default()
        }).await;
        let revoked = app.create_api_key(&owner, &chatbot.id).await;
        let revoked_id = revoked.api_key.as_ref().unwrap().id;
        app.revoke_api_key(&owner.token, revoked_id).await.unwrap();

        assert!(verify_costing(&app, &with_credits.key, 2).await.valid);
        assert!(verify_costing(&app, &with_credits.key, 3).await.valid);
        let short = verify_costing(&app, &with_credits.key, 1).await;
        assert_eq!(short.reason(), VerifyApiKeyReason::UsageExceeded);
        assert!(app.verify(&limited.key).await.valid);
        assert_eq!(app.verify(&limited.key).await.reason(), VerifyApiKeyReason::RateLimited);
        assert_eq!(app.verify(&revoked.key).await.reason(), VerifyApiKeyReason::Revoked);
        assert_eq!(app.verify(&revoked.key).await.reason(), VerifyApiKeyReason::Revoked);
        // Unknown and malformed keys have no key to count under.
        assert!(!app.verify("cbk_unknown_key_that_was_never_issued_xxxxxxxxxxxx").await.valid);
        assert!(!app.verify("not a key").await.valid);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(app.verify(&soon_expired.key).await.reason(), VerifyApiKeyReason::Expired);

        let id = |created: &proto::CreateApiKeyResponse| created.api_key.as_ref().unwrap().id;
        let spent_and_short = UsageCounts { valid: 2, usage_exceeded: 1, credits_spent: 5, ..NONE };
        eventually(Some(spent_and_short), || async {
            key_usage(&app, &owner, id(&with_credits)).await.total
        })
        .await;
        eventually(Some(UsageCounts { valid: 1, rate_limited: 1, ..NONE }), || async {
            key_usage(&app, &owner, id(&limited)).await.total
        })
        .await;
        eventually(Some(UsageCounts { revoked: 2, ..NONE }), || async {
            key_usage(&app, &owner, revoked_id).await.total
        })
        .await;
        eventually(Some(UsageCounts { expired: 1, ..NONE }), || async {
            key_usage(&app, &owner, id(&soon_expired)).await.total
        })
        .await;

        // Buckets are whole hours, oldest first, and add up to the total.
        let usage = key_usage(&app, &owner, id(&with_credits)).await;
        assert!(!usage.buckets.is_empty() && usage.buckets.len() <= 2, "{usage:?}");
        for bucket in &usage.buckets {
            let start = bucket.start_time.unwrap();
            assert_eq!((start.seconds % 3600, start.nanos), (0, 0), "{bucket:?}");
        }
        let valid: i64 = usage.buckets.iter().map(|b| b.counts.unwrap().valid).sum();
        assert_eq!(valid, 2);

        // The chatbot's usage adds up all its keys, and keeps a deleted
        // key's history; the deleted key's own usage is gone with it (to a
        // plain user, like every id that names nothing of theirs, it is
        // PERMISSION_DENIED).
        app.delete_api_key(&owner.token, revoked_id).await.unwrap();
        assert_eq!(
            chatbot_usage(&app, &owner, &chatbot.id).await.total,
            Some(UsageCounts {
                valid: 3,
                revoked: 2,
                expired: 1,
                rate_limited: 1,
                usage_exceeded: 1,
                credits_spent: 5,
                ..NONE
            })
        );
        assert_code(
            app.api_keys(Some(&owner.token))
                .get_api_key_usage(proto::GetApiKeyUsageRequest { api_key_id: revoked_id, ..Default::default() })
                .await,
            Code::PermissionDenied,
        );
    }
}

backend_test! {
    async fn a_usage_range_must_be_ordered_and_at_most_31_days() {
        let app = spawn_app().await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("ranges").await;
        let key = created.api_key.unwrap();
        let at = |seconds: i64| Some(Timestamp { seconds, nanos: 0 });
        let ask = |start_time, end_time| {
            let mut client = app.api_keys(Some(&owner.token));
            async move {
                client
                    .get_api_key_usage(proto::GetApiKeyUsageRequest { api_key_id: key.id, start_time, end_time, ..Default::default() })
                    .await
            }
        };
        let day = 24 * 3600;
        let now = chrono::Utc::now().timestamp();
        let status = assert_code(ask(at(now), at(now - day)).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["end_time"]);
        let status = assert_code(ask(at(now - 32 * day), at(now)).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["end_time"]);
        let bad = Some(Timestamp { seconds: now, nanos: -1 });
        let status = assert_code(ask(bad, bad).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["start_time", "end_time"]);
        let status = assert_code(
            app.api_keys(Some(&owner.token))
                .get_chatbot_usage(proto::GetChatbotUsageRequest {
                    chatbot_id: "not-a-uuid".into(),
                    start_time: bad,
                    end_time: None,
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["chatbot_id", "start_time"]);
        // 31 days exactly is allowed, and an empty range has no buckets.
        let usage = ask(at(now - 31 * day + 3600), at(now)).await.unwrap().into_inner();
        assert!(usage.buckets.is_empty());
        assert_eq!(usage.total, Some(NONE));
    }
}

backend_test! {
    async fn a_graceful_shutdown_flushes_the_counts() {
        let mut app = spawn_app_with(&["--usage-flush-interval-secs", "3600"]).await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("shutdown").await;
        for _ in 0..3 {
            assert!(app.verify(&created.key).await.valid);
        }
        app.stop().await;
        let replica = app.spawn_replica_process(&[]).await;
        let usage = key_usage(&replica, &owner, created.api_key.unwrap().id).await;
        assert_eq!(usage.total, Some(UsageCounts { valid: 3, ..NONE }));
    }
}

/// 100 verifications through each of two server processes on one
/// database: once both have flushed, the key's usage is exactly 200, and
/// stays 200 after more flushes (counts are added once, never again).
#[tokio::test(flavor = "multi_thread")]
async fn usage_counted_by_two_replicas_adds_up_exactly_postgres() {
    let app = spawn_app_with(FLUSH_EVERY_SECOND).await;
    let KeyOwner {
        owner,
        chatbot,
        created,
    } = app.new_key_owner("replicated").await;
    let id = created.api_key.unwrap().id;
    let replica = app
        .spawn_replica_process(&[("USAGE_FLUSH_INTERVAL_SECS", "1")])
        .await;
    let calls = (0..200).map(|call| {
        let clients: &Clients = if call % 2 == 0 { &app } else { &replica };
        let key = created.key.clone();
        async move { verify_costing(clients, &key, 1).await.valid }
    });
    let valid = futures_util::future::join_all(calls).await;
    assert!(valid.into_iter().all(|valid| valid));
    eventually(Some(UsageCounts { valid: 200, ..NONE }), || async {
        key_usage(&replica, &owner, id).await.total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        key_usage(&app, &owner, id).await.total,
        Some(UsageCounts { valid: 200, ..NONE })
    );
    assert_eq!(
        chatbot_usage(&app, &owner, &chatbot.id).await.total,
        Some(UsageCounts { valid: 200, ..NONE })
    );
}

backend_test! {
    async fn the_deprecated_key_id_still_works_and_may_not_contradict_api_key_id() {
        let app = spawn_app().await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("renamed field").await;
        let id = created.api_key.unwrap().id;
        #[allow(deprecated)] // the old field, as clients generated before still send it
        let by_old_name = |id: i64, api_key_id: i64| proto::GetApiKeyUsageRequest {
            id,
            api_key_id,
            ..Default::default()
        };
        let mut client = app.api_keys(Some(&owner.token));
        client.get_api_key_usage(by_old_name(id, 0)).await.expect("id alone");
        client.get_api_key_usage(by_old_name(id, id)).await.expect("both, the same");
        let both = client.get_api_key_usage(by_old_name(id, id + 1)).await.unwrap_err();
        assert_eq!(violated_fields(&both), ["api_key_id"]);
        let neither = client.get_api_key_usage(by_old_name(0, 0)).await.unwrap_err();
        assert_eq!(violated_fields(&neither), ["api_key_id"]);

        // The audit log's time under its consistent name, and the old one.
        let events = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        #[allow(deprecated)]
        let old = events[0].time;
        assert!(events[0].create_time.is_some());
        assert_eq!(events[0].create_time, old);
    }
}
