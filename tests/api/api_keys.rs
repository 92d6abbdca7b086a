use std::time::Duration;

use chatbot_backend::proto::{self, VerifyApiKeyReason};
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, changed_within_a_second, chatbot_update, logs, poll_until,
    spawn_app, spawn_app_with, violated_fields, KeyOwner, TestApp,
};

fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds);
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// Verifies `key` until it answers EXPIRED, asserting every earlier answer
/// is VALID and that EXPIRED comes only once `expire_time` has passed (the
/// server shares the test's clock); panics if it has not expired 10 s
/// after `expire_time`.
async fn verify_until_expired(app: &TestApp, key: &str, expire_time: &prost_types::Timestamp) {
    let expire_at = chrono::DateTime::from_timestamp(expire_time.seconds, expire_time.nanos as u32)
        .expect("a valid expire_time");
    let give_up = expire_at + chrono::Duration::seconds(10);
    loop {
        let reason = app.verify(key).await.reason();
        let answered_at = chrono::Utc::now();
        match reason {
            VerifyApiKeyReason::Expired => {
                assert!(
                    answered_at >= expire_at,
                    "EXPIRED at {answered_at}, before the expire_time {expire_at}"
                );
                return;
            }
            VerifyApiKeyReason::Valid => assert!(
                answered_at < give_up,
                "still VALID 10 s after the expire_time {expire_at}"
            ),
            other => panic!("{other:?} while waiting for the key to expire"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_test! {
    async fn a_key_verifies_until_it_is_revoked_and_revocation_is_idempotent() {
        let app = spawn_app().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let record = created.api_key.clone().unwrap();
        assert!(created.key.starts_with("cbk_"));
        assert!(created.key.starts_with(&record.key_prefix));
        assert!(
            record.key_prefix.len() < 16,
            "the prefix must not reveal the key"
        );
        assert!(!record.revoked && record.revoke_time.is_none() && record.expire_time.is_none());

        let verdict = app.verify(&created.key).await;
        assert!(verdict.valid);
        assert_eq!(verdict.reason(), VerifyApiKeyReason::Valid);
        assert_eq!(verdict.api_key_id, record.id);
        assert_eq!(verdict.chatbot_id, chatbot.id);
        assert_eq!(verdict.owner_id, owner.id);
        assert_eq!(verdict.llm_endpoint_url, chatbot.llm_endpoint_url);

        let revoke = || {
            let mut client = app.api_keys(Some(&owner.token));
            async move {
                client
                    .revoke_api_key(proto::RevokeApiKeyRequest { id: record.id })
                    .await
                    .unwrap()
                    .into_inner()
                    .api_key
                    .unwrap()
            }
        };
        let first = revoke().await;
        assert!(first.revoked && first.revoke_time.is_some());
        let verdict = app.verify(&created.key).await;
        assert!(!verdict.valid);
        assert_eq!(verdict.reason(), VerifyApiKeyReason::Revoked);
        assert!(
            verdict.chatbot_id.is_empty(),
            "an invalid key reveals nothing"
        );
        let second = revoke().await;
        assert_eq!(second.revoke_time, first.revoke_time);
    }
}

backend_test! {
    async fn a_key_stops_verifying_when_it_expires() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "bot").await;
        let request = proto::CreateApiKeyRequest {
            display_name: "short".into(),
            expire_time: Some(in_seconds(2)),
            ..Default::default()
        };
        let created = app.create_api_key_with(&owner, &chatbot.id, request).await;
        assert_eq!(
            app.verify(&created.key).await.reason(),
            VerifyApiKeyReason::Valid
        );
        let expire_time = created.api_key.unwrap().expire_time.unwrap();
        verify_until_expired(&app, &created.key, &expire_time).await;

        let status = assert_code(
            app.api_keys(Some(&owner.token))
                .create_api_key(proto::CreateApiKeyRequest {
                    chatbot_id: chatbot.id.clone(),
                    display_name: String::new(),
                    expire_time: Some(in_seconds(-10)),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["expire_time"]);
    }
}

backend_test! {
    async fn a_rotated_key_keeps_working_only_for_its_grace_period() {
        let app = spawn_app().await;
        let KeyOwner { owner, created: old, .. } = app.new_key_owner("bot").await;
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest {
                id: old.api_key.as_ref().unwrap().id,
                grace_period: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(rotated.key, old.key);
        let grace_ends = rotated.previous_api_key.unwrap().expire_time;
        assert!(grace_ends.is_some());
        assert_eq!(
            app.verify(&old.key).await.reason(),
            VerifyApiKeyReason::Valid
        );
        assert_eq!(
            app.verify(&rotated.key).await.reason(),
            VerifyApiKeyReason::Valid
        );
        verify_until_expired(&app, &old.key, &grace_ends.unwrap()).await;
        assert_eq!(
            app.verify(&rotated.key).await.reason(),
            VerifyApiKeyReason::Valid
        );

        // A revoked key cannot be rotated back to life.
        let new_id = rotated.api_key.unwrap().id;
        app.revoke_api_key(&owner.token, new_id).await.unwrap();
        assert_code(
            app.api_keys(Some(&owner.token))
                .rotate_api_key(proto::RotateApiKeyRequest {
                    id: new_id,
                    grace_period: None,
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
        );
    }
}

backend_test! {
    async fn a_deleted_key_verifies_as_not_found() {
        let app = spawn_app().await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        let id = created.api_key.unwrap().id;
        app.delete_api_key(&owner.token, id).await.unwrap();
        assert_eq!(
            app.verify(&created.key).await.reason(),
            VerifyApiKeyReason::NotFound
        );
        let admin = app.new_admin().await;
        assert_code(
            app.api_keys(Some(&admin.token))
                .get_api_key(proto::GetApiKeyRequest { id })
                .await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn malformed_keys_are_answered_without_a_database_query() {
        let app = spawn_app().await;
        let KeyOwner { created, .. } = app.new_key_owner("bot").await;
        let real = created.key;
        let mut bad_checksum = real.clone().into_bytes();
        let last = bad_checksum.len() - 1;
        bad_checksum[last] = if bad_checksum[last] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let bad_checksum = String::from_utf8(bad_checksum).unwrap();
        let wrong_prefix = real.replacen("cbk_", "sk__", 1);
        let very_long = "cbk_".to_owned() + &"a".repeat(10_000);

        let before = app.db.statements_executed();
        for key in [
            "",
            "hello",
            wrong_prefix.as_str(),
            bad_checksum.as_str(),
            very_long.as_str(),
        ] {
            let verdict = app.verify(key).await;
            assert!(!verdict.valid);
            assert_eq!(verdict.reason(), VerifyApiKeyReason::Malformed, "{key:.20}");
        }
        assert_eq!(
            app.db.statements_executed(),
            before,
            "malformed keys must not reach the database"
        );

        // The counter does count: the first verification of a real key
        // looks it up. (A well-formed unknown key may cost no query either:
        // tests/api/known_keys.rs.)
        assert!(app.verify(&real).await.valid);
        assert!(app.db.statements_executed() > before);
    }
}

backend_test! {
    async fn verification_writes_nothing_and_last_use_is_recorded_in_batches() {
        // No flush comes due during this test: any change to the database
        // while keys are verified would be the verification's own write.
        let mut app = spawn_app_with(&["--last-used-flush-interval-secs", "3600"]).await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        let id = created.api_key.unwrap().id;
        let stored_before = app.stored_data().await;
        for _ in 0..5 {
            assert!(app.verify(&created.key).await.valid);
        }
        assert!(
            app.stored_data().await == stored_before,
            "verifying a key wrote to the database"
        );

        // A server that flushes every second records the last use, in a
        // batch written after the verifications. It takes the first one's
        // place: one server process per SQLite file.
        app.stop().await;
        let flushing = app
            .spawn_replica(&["--last-used-flush-interval-secs", "1"])
            .await;
        assert!(flushing.verify(&created.key).await.valid);
        let last_used = poll_until_last_used_is_recorded(&flushing, &owner.token, id).await;
        assert!(last_used.is_some(), "last_used_time was never flushed");
    }
}

/// GetApiKey's `last_used_time`, polled every 100 ms until it is set;
/// panics if it is not within 10 s.
async fn poll_until_last_used_is_recorded(
    app: &TestApp,
    token: &str,
    id: i64,
) -> Option<prost_types::Timestamp> {
    let last_used = || async move {
        let mut client = app.api_keys(Some(token));
        let key = client.get_api_key(proto::GetApiKeyRequest { id }).await;
        key.unwrap().into_inner().api_key.unwrap().last_used_time
    };
    poll_until(
        "last_used_time was never flushed",
        Duration::from_secs(10),
        Duration::from_millis(100),
        last_used,
        Option::is_some,
    )
    .await
}

backend_test! {
    async fn a_chatbot_cannot_exceed_its_active_key_limit() {
        let app = spawn_app_with(&["--max-active-api-keys-per-chatbot", "2"]).await;
        let KeyOwner { owner, chatbot, created: first } = app.new_key_owner("bot").await;
        app.create_api_key(&owner, &chatbot.id).await;
        let create = || {
            let mut client = app.api_keys(Some(&owner.token));
            let request = proto::CreateApiKeyRequest {
                chatbot_id: chatbot.id.clone(),
                ..Default::default()
            };
            async move { client.create_api_key(request).await }
        };
        assert_code(create().await, Code::FailedPrecondition);
        app.revoke_api_key(&owner.token, first.api_key.unwrap().id).await.unwrap();
        create().await.unwrap();
    }
}

backend_test! {
    async fn list_api_keys_filters_revoked_and_expiring_keys_and_pages() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "bot").await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                app.create_api_key(&owner, &chatbot.id)
                    .await
                    .api_key
                    .unwrap()
                    .id,
            );
        }
        let request = proto::CreateApiKeyRequest {
            display_name: "expiring".into(),
            expire_time: Some(in_seconds(3600)),
            ..Default::default()
        };
        let expiring = app.create_api_key_with(&owner, &chatbot.id, request).await.api_key.unwrap();
        app.revoke_api_key(&owner.token, ids[0]).await.unwrap();

        let list = |request: proto::ListApiKeysRequest| {
            let mut client = app.api_keys(Some(&owner.token));
            async move { client.list_api_keys(request).await.map(|r| r.into_inner()) }
        };
        let base = proto::ListApiKeysRequest {
            chatbot_id: chatbot.id.clone(),
            ..Default::default()
        };

        let active = list(base.clone()).await.unwrap();
        let active_ids: Vec<i64> = active.api_keys.iter().map(|k| k.id).collect();
        assert_eq!(active_ids, [ids[1], ids[2], ids[3], expiring.id]);

        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(proto::ListApiKeysRequest {
                page_size: 2,
                page_token: token,
                show_revoked: true,
                ..base.clone()
            })
            .await
            .unwrap();
            all.extend(page.api_keys.iter().map(|k| k.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(all, [ids[0], ids[1], ids[2], ids[3], expiring.id]);

        let soon = list(proto::ListApiKeysRequest {
            expire_before: Some(in_seconds(7200)),
            ..base.clone()
        })
        .await
        .unwrap();
        assert_eq!(
            soon.api_keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            [expiring.id]
        );

        let first_page = list(proto::ListApiKeysRequest {
            page_size: 1,
            ..base.clone()
        })
        .await
        .unwrap();
        let status = assert_code(
            list(proto::ListApiKeysRequest {
                page_size: 1,
                page_token: first_page.next_page_token,
                show_revoked: true,
                ..base.clone()
            })
            .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["page_token"]);
    }
}

backend_test! {
    async fn no_plaintext_key_or_password_reaches_the_database_or_the_log() {
        let app = spawn_app_with(&["--last-used-flush-interval-secs", "1"]).await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        let id = created.api_key.unwrap().id;
        assert!(app.verify(&created.key).await.valid);
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest {
                id,
                grace_period: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(app.verify(&rotated.key).await.valid);
        let rotated_id = rotated.api_key.unwrap().id;
        app.revoke_api_key(&owner.token, rotated_id).await.unwrap();
        // Once both keys' last use is flushed, the dump holds every write.
        for key_id in [id, rotated_id] {
            let recorded = poll_until_last_used_is_recorded(&app, &owner.token, key_id).await;
            assert!(recorded.is_some(), "last_used_time was never flushed");
        }

        let dump = app.stored_data().await;
        assert!(dump.contains(&owner.email), "the dump is real");
        let log = logs();
        let secrets = [
            created.key.as_str(),
            rotated.key.as_str(),
            owner.password.as_str(),
            owner.token.as_str(),
            owner.refresh_token.as_str(),
        ];
        for secret in secrets {
            assert!(!dump.contains(secret), "a secret is in the database");
            assert!(!log.contains(secret), "a secret is in the log");
        }
        // The key body without the fixed prefix must not appear either.
        assert!(!dump.contains(&created.key[4..]));
    }
}

backend_test! {
    async fn a_hot_key_is_verified_from_the_cache_without_a_query_and_revocation_is_seen_at_once() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;

        assert!(app.verify(&created.key).await.valid);
        let before = app.db.statements_executed();
        for _ in 0..5 {
            let answer = app.verify(&created.key).await;
            assert!(answer.valid);
            assert_eq!(answer.llm_endpoint_url, chatbot.llm_endpoint_url);
        }
        assert_eq!(app.db.statements_executed(), before, "served from the cache");

        app.revoke_api_key(&owner.token, created.api_key.unwrap().id).await.unwrap();
        assert_eq!(
            app.verify(&created.key).await.reason(),
            VerifyApiKeyReason::Revoked
        );
    }
}

backend_test! {
    async fn changing_or_deleting_a_chatbot_updates_cached_verifications_at_once() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        assert!(app.verify(&created.key).await.valid);

        let moved = proto::Chatbot {
            id: chatbot.id.clone(),
            llm_endpoint_url: "https://llm.example.org/v2".into(),
            ..Default::default()
        };
        app.chatbots(Some(&owner.token))
            .update_chatbot(chatbot_update(moved, &["llm_endpoint_url"]))
            .await
            .unwrap();
        assert_eq!(
            app.verify(&created.key).await.llm_endpoint_url,
            "https://llm.example.org/v2"
        );

        app.delete_chatbot(&owner.token, &chatbot.id).await.unwrap();
        assert_eq!(
            app.verify(&created.key).await.reason(),
            VerifyApiKeyReason::NotFound
        );
    }
}

/// Replicas share PostgreSQL only; SQLite serves one process per file.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_revoke_through_one_replica_reaches_the_others_cache_within_a_second() {
    // A TTL far beyond the test: only the notification can explain a change.
    let flags = ["--api-key-cache-ttl-secs", "600"];
    let first = spawn_app_with(&flags).await;
    let second = first.spawn_replica(&flags).await;
    first.wait_for_api_key_cache().await;
    second.wait_for_api_key_cache().await;
    let KeyOwner { owner, created, .. } = first.new_key_owner("bot").await;

    // Cached on the second replica.
    assert!(second.verify(&created.key).await.valid);
    let before = second.db.statements_executed();
    assert!(second.verify(&created.key).await.valid);
    assert_eq!(second.db.statements_executed(), before);

    let id = created.api_key.unwrap().id;
    first.revoke_api_key(&owner.token, id).await.unwrap();
    changed_within_a_second(
        || async { second.verify(&created.key).await.reason() },
        |reason| *reason == VerifyApiKeyReason::Revoked,
    )
    .await;
}

backend_test! {
    async fn recording_last_use_sets_each_keys_time_and_never_moves_one_back() {
        use chatbot_backend::db::models::ApiKey;
        use chatbot_backend::domain::ApiKeyId;
        use chrono::SubsecRound;

        let app = spawn_app().await;
        let KeyOwner {
            owner,
            chatbot,
            created,
        } = app.new_key_owner("last used").await;
        let second = app.create_api_key(&owner, &chatbot.id).await;
        let first = ApiKeyId(created.api_key.unwrap().id);
        let second = ApiKeyId(second.api_key.unwrap().id);
        let earlier = chrono::Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(5);
        let later = earlier + chrono::Duration::minutes(1);
        let mut conn = app.db.conn().await.unwrap();

        let uses = [(first, later), (second, earlier)];
        assert_eq!(ApiKey::record_last_used(&mut conn, &uses).await.unwrap(), 2);
        // An older time changes nothing; a newer one moves the key forward.
        let uses = [(first, earlier), (second, later)];
        assert_eq!(ApiKey::record_last_used(&mut conn, &uses).await.unwrap(), 1);
        for id in [first, second] {
            let key = ApiKey::find(&mut conn, id).await.unwrap().unwrap();
            assert_eq!(key.last_used_at, Some(later));
        }
        assert_eq!(ApiKey::record_last_used(&mut conn, &[]).await.unwrap(), 0);
    }
}
