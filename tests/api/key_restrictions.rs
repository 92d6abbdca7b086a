//! Keys a gateway can trust with more than yes or no (issue 27): allowed
//! networks, permissions, metadata and an external id, kept through
//! updates and rotations, judged by VerifyApiKey and Check before any
//! limit, so a refused call spends nothing.

use std::collections::HashMap;

use chatbot_backend::proto::{self, VerifyApiKeyReason as Reason};
use tonic::Code;

use crate::helpers::{
    api_key_update, assert_code, backend_test, changed_within_a_second, spawn_app, violated_fields,
    Clients, KeyOwner, TestApp, TestUser,
};

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// A key on a new user's chatbot with these restrictions (and `extra`).
async fn restricted_key(
    app: &TestApp,
    networks: &[&str],
    permissions: &[&str],
    extra: proto::CreateApiKeyRequest,
) -> (TestUser, proto::CreateApiKeyResponse) {
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "bot").await;
    let created = app
        .create_api_key_with(
            &owner,
            &chatbot.id,
            proto::CreateApiKeyRequest {
                allowed_networks: strings(networks),
                permissions: strings(permissions),
                ..extra
            },
        )
        .await;
    (owner, created)
}

async fn verify(
    app: &Clients,
    key: &str,
    address: &str,
    required: &[&str],
) -> proto::VerifyApiKeyResponse {
    app.api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: key.into(),
            client_address: address.into(),
            required_permissions: strings(required),
            ..Default::default()
        })
        .await
        .expect("VerifyApiKey answers")
        .into_inner()
}

backend_test! {
    async fn a_key_carries_its_restrictions_through_reads_updates_and_rotation() {
        let app = spawn_app().await;
        let metadata: HashMap<String, String> =
            [("plan".to_owned(), "pro".to_owned())].into_iter().collect();
        let (owner, created) = restricted_key(
            &app,
            &["203.0.113.0/24", "2001:db8::/32"],
            &["chat.write", "models/*"],
            proto::CreateApiKeyRequest {
                metadata: metadata.clone(),
                external_id: "customer-42".into(),
                ..Default::default()
            },
        )
        .await;
        let key = created.api_key.unwrap();
        assert_eq!(key.allowed_networks, ["203.0.113.0/24", "2001:db8::/32"]);
        assert_eq!(key.permissions, ["chat.write", "models/*"]);
        assert_eq!(key.metadata, metadata);
        assert_eq!(key.external_id, "customer-42");

        // ListApiKeys filters by external_id.
        let other = app.create_api_key(&owner, &key.chatbot_id).await;
        let listed = |external_id: &str| {
            let mut client = app.api_keys(Some(&owner.token));
            let request = proto::ListApiKeysRequest {
                chatbot_id: key.chatbot_id.clone(),
                external_id: external_id.into(),
                ..Default::default()
            };
            async move {
                let keys = client.list_api_keys(request).await.unwrap().into_inner().api_keys;
                keys.into_iter().map(|k| k.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed("customer-42").await, vec![key.id]);
        assert_eq!(listed("").await.len(), 2);
        assert!(listed("nobody").await.is_empty());

        // UpdateApiKey changes them by mask; unset clears.
        let updated = app
            .api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey {
                    id: key.id,
                    permissions: strings(&["chat.read"]),
                    ..Default::default()
                },
                &["permissions", "allowed_networks"],
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap();
        assert_eq!(updated.permissions, ["chat.read"]);
        assert!(updated.allowed_networks.is_empty(), "named and unset: cleared");
        assert_eq!(updated.external_id, "customer-42", "not named: kept");

        // A rotation hands everything to the replacement.
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest { id: key.id, grace_period: None, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let replacement = rotated.api_key.unwrap();
        assert_eq!(replacement.permissions, ["chat.read"]);
        assert_eq!(replacement.metadata, metadata);
        assert_eq!(replacement.external_id, "customer-42");
        let answer = verify(&app, &rotated.key, "", &["chat.read"]).await;
        assert!(answer.valid, "{answer:?}");
        assert_eq!(answer.external_id, "customer-42");
        assert_eq!(answer.metadata, metadata);
        assert_eq!(answer.permissions, ["chat.read"]);
        assert!(other.key.starts_with("cbk_"));
    }
}

backend_test! {
    async fn restrictions_that_are_not_well_formed_are_refused_naming_the_field() {
        let app = spawn_app().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let create = |request: proto::CreateApiKeyRequest| {
            let mut client = app.api_keys(Some(&owner.token));
            let request = proto::CreateApiKeyRequest { chatbot_id: chatbot.id.clone(), ..request };
            async move { client.create_api_key(request).await }
        };
        let cases: Vec<(proto::CreateApiKeyRequest, &str)> = vec![
            (
                proto::CreateApiKeyRequest { allowed_networks: strings(&["10.0.0.1/8"]), ..Default::default() },
                "allowed_networks[0]",
            ),
            (
                proto::CreateApiKeyRequest {
                    allowed_networks: strings(&["10.0.0.0/8", "not a network"]),
                    ..Default::default()
                },
                "allowed_networks[1]",
            ),
            (
                proto::CreateApiKeyRequest {
                    allowed_networks: (0..33).map(|i| format!("10.{i}.0.0/16")).collect(),
                    ..Default::default()
                },
                "allowed_networks",
            ),
            (
                proto::CreateApiKeyRequest { permissions: strings(&["chat write"]), ..Default::default() },
                "permissions[0]",
            ),
            (
                proto::CreateApiKeyRequest { permissions: strings(&[""]), ..Default::default() },
                "permissions[0]",
            ),
            (
                proto::CreateApiKeyRequest {
                    metadata: [("k".to_owned(), "v".repeat(513))].into_iter().collect(),
                    ..Default::default()
                },
                "metadata[k]",
            ),
        ];
        for (request, field) in cases {
            let status = assert_code(create(request).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), [field], "{status:?}");
        }
        let status = app
            .api_keys(None)
            .verify_api_key(proto::VerifyApiKeyRequest {
                key: created.key.clone(),
                client_address: "not-an-ip".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["client_address"]);
    }
}

backend_test! {
    async fn a_call_from_elsewhere_or_without_a_permission_is_refused_and_spends_nothing() {
        let app = spawn_app().await;
        // One credit and one call a day: a refused call that spent either
        // would make the valid call at the end fail.
        let (owner, created) = restricted_key(
            &app,
            &["203.0.113.0/24"],
            &["chat.*"],
            proto::CreateApiKeyRequest {
                credits: Some(proto::Credits { remaining: 1, ..Default::default() }),
                rate_limit: Some(proto::RateLimit {
                    limit: 1,
                    window: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }), ..Default::default() }),
                ..Default::default()
            },
        )
        .await;
        let key = created.key;
        for (address, required, reason, missing) in [
            ("", &[][..], Reason::AddressNotAllowed, &[][..]),
            ("198.51.100.7", &[], Reason::AddressNotAllowed, &[]),
            ("2001:db8::1", &[], Reason::AddressNotAllowed, &[]),
            ("203.0.113.9", &["models/gpt-4o"][..], Reason::InsufficientPermissions, &["models/gpt-4o"][..]),
            (
                "::ffff:203.0.113.9",
                &["chat.write", "admin"],
                Reason::InsufficientPermissions,
                &["admin"],
            ),
        ] {
            let answer = verify(&app, &key, address, required).await;
            assert!(!answer.valid);
            assert_eq!(answer.reason(), reason, "{address} {required:?}");
            assert_eq!(answer.missing_permissions, missing);
            assert!(answer.external_id.is_empty() && answer.permissions.is_empty());
        }
        // An IPv4-mapped address is its IPv4 address; the call is valid,
        // and still has its one credit and its one call to spend.
        let answer = verify(&app, &key, "::ffff:203.0.113.9", &["chat.write"]).await;
        assert!(answer.valid, "{answer:?}");
        assert_eq!(answer.credits_remaining, Some(0));
        assert_eq!(answer.permissions, ["chat.*"]);
        let _ = owner;

        // A key without permissions grants none.
        let plain = app.new_key_owner("plain").await.created.key;
        let answer = verify(&app, &plain, "", &["chat.write"]).await;
        assert_eq!(answer.reason(), Reason::InsufficientPermissions);
        assert!(verify(&app, &plain, "", &[]).await.valid);
    }
}

/// A change to a key's restrictions reaches the other replica's cache
/// within a second, like a revocation.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_restriction_reaches_the_other_replica_within_a_second_on_postgres() {
    let app: TestApp = spawn_app().await;
    let (owner, created) = restricted_key(&app, &["203.0.113.0/24"], &[], Default::default()).await;
    let other = app.spawn_replica_process(&[]).await;
    let key = created.key.clone();
    let from = |address: &'static str| {
        let (other, key) = (&other, key.clone());
        async move { verify(other, &key, address, &[]).await.reason() }
    };
    assert_eq!(from("198.51.100.7").await, Reason::AddressNotAllowed);
    assert_eq!(from("198.51.100.7").await, Reason::AddressNotAllowed);
    app.api_keys(Some(&owner.token))
        .update_api_key(api_key_update(
            proto::ApiKey {
                id: created.api_key.unwrap().id,
                allowed_networks: strings(&["198.51.100.0/24"]),
                ..Default::default()
            },
            &["allowed_networks"],
        ))
        .await
        .unwrap();
    let _ =
        changed_within_a_second(|| from("198.51.100.7"), |reason| *reason == Reason::Valid).await;
}
