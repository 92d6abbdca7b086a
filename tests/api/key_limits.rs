//! The active-key limit cannot be walked around: a key is replaced once,
//! keys in their grace period count, and the limit holds under concurrent
//! CreateApiKey and RotateApiKey through several replicas.

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, spawn_app_with, Authed, KeyOwner, TestApp, TestUser,
};

type ApiKeysClient = proto::api_key_service_client::ApiKeyServiceClient<Authed>;

fn rotation(id: i64, grace_secs: i64) -> proto::RotateApiKeyRequest {
    proto::RotateApiKeyRequest {
        id,
        grace_period: Some(prost_types::Duration {
            seconds: grace_secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn creation(chatbot_id: &str) -> proto::CreateApiKeyRequest {
    proto::CreateApiKeyRequest {
        chatbot_id: chatbot_id.into(),
        display_name: "key".into(),
        expire_time: None,
        ..Default::default()
    }
}

/// Keys of the chatbot that still work: not revoked, not expired.
async fn active_keys(app: &TestApp, owner: &TestUser, chatbot_id: &str) -> usize {
    let now = std::time::SystemTime::now();
    app.api_keys(Some(&owner.token))
        .list_api_keys(proto::ListApiKeysRequest {
            chatbot_id: chatbot_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys
        .into_iter()
        .filter(|key| {
            key.expire_time
                .as_ref()
                .is_none_or(|t| std::time::SystemTime::try_from(*t).unwrap() > now)
        })
        .count()
}

backend_test! {
    async fn a_key_is_replaced_once_and_a_second_rotation_is_failed_precondition() {
        let app = spawn_app_with(&[]).await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        let key = created.api_key.unwrap();
        let mut client = app.api_keys(Some(&owner.token));
        let rotated = client.rotate_api_key(rotation(key.id, 3600)).await.unwrap().into_inner();
        assert_code(client.rotate_api_key(rotation(key.id, 3600)).await, Code::FailedPrecondition);
        assert_code(client.rotate_api_key(rotation(key.id, 0)).await, Code::FailedPrecondition);
        // The replacement itself can be rotated.
        client
            .rotate_api_key(rotation(rotated.api_key.unwrap().id, 0))
            .await
            .unwrap();
    }
}

backend_test! {
    async fn concurrent_rotations_of_one_key_make_exactly_one_replacement() {
        let app = spawn_app_with(&[]).await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let key = created.api_key.unwrap();
        let mut rotations = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let mut client = app.api_keys(Some(&owner.token));
            rotations.spawn(async move { client.rotate_api_key(rotation(key.id, 3600)).await });
        }
        let results = rotations.join_all().await;
        let replaced = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(replaced, 1, "{results:?}");
        for result in results.into_iter().filter_map(Result::err) {
            assert_eq!(result.code(), Code::FailedPrecondition, "{result:?}");
        }
        // The old key in its grace period, and its one replacement.
        assert_eq!(active_keys(&app, &owner, &chatbot.id).await, 2);
    }
}

backend_test! {
    async fn at_the_limit_a_rotation_with_a_grace_period_is_refused_and_one_without_replaces_in_place() {
        let app = spawn_app_with(&["--max-active-api-keys-per-chatbot", "3"]).await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "bot").await;
        let mut keys = Vec::new();
        for _ in 0..3 {
            keys.push(app.create_api_key(&owner, &chatbot.id).await);
        }
        let mut client = app.api_keys(Some(&owner.token));
        // Each rotation with a grace period would leave two live secrets.
        for key in &keys {
            let id = key.api_key.as_ref().unwrap().id;
            assert_code(client.rotate_api_key(rotation(id, 3600)).await, Code::FailedPrecondition);
        }
        for key in &keys {
            let id = key.api_key.as_ref().unwrap().id;
            client.rotate_api_key(rotation(id, 0)).await.unwrap();
            assert_eq!(
                app.verify(&key.key).await.reason(),
                proto::VerifyApiKeyReason::Expired
            );
        }
        assert_eq!(active_keys(&app, &owner, &chatbot.id).await, 3);
        assert_code(client.create_api_key(creation(&chatbot.id)).await, Code::FailedPrecondition);
    }
}

/// Replicas share PostgreSQL only.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_the_limit_holds_under_concurrent_creates_and_rotations_through_two_processes()
{
    let limit = 5;
    let first = spawn_app_with(&["--max-active-api-keys-per-chatbot", "5"]).await;
    let second = first
        .spawn_replica_process(&[("MAX_ACTIVE_API_KEYS_PER_CHATBOT", "5")])
        .await;
    let owner = first.new_user().await;
    let chatbot = first.create_chatbot(&owner, "bot").await;
    let mut existing = Vec::new();
    for _ in 0..3 {
        existing.push(
            first
                .create_api_key(&owner, &chatbot.id)
                .await
                .api_key
                .unwrap()
                .id,
        );
    }
    let clients: [ApiKeysClient; 2] = [
        first.api_keys(Some(&owner.token)),
        second.api_keys(Some(&owner.token)),
    ];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..24 {
        let mut client = clients[i % 2].clone();
        let chatbot_id = chatbot.id.clone();
        let id = existing[i % existing.len()];
        calls.spawn(async move {
            if i % 3 == 0 {
                client.rotate_api_key(rotation(id, 3600)).await.map(drop)
            } else {
                client.create_api_key(creation(&chatbot_id)).await.map(drop)
            }
        });
    }
    for result in calls.join_all().await {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        }
    }
    assert_eq!(active_keys(&first, &owner, &chatbot.id).await, limit);
}
