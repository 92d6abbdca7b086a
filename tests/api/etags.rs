//! Conditional updates (issue 34, AIP-154): a key's and an organization's
//! `etag` change with every change to what they show (a spend included),
//! and an update that sends one applies only if it still matches, else
//! ABORTED; of concurrent updates made from one read, exactly one applies.

use chatbot_backend::proto;
use tonic::{Code, Status};

use crate::helpers::{backend_test, spawn_app, verify_costing, Clients, TestUser};
use crate::organization_limits::team_with_chatbot;

async fn get_organization(clients: &Clients, owner: &TestUser, id: &str) -> proto::Organization {
    clients
        .organizations(Some(&owner.token))
        .get_organization(proto::GetOrganizationRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
}

/// UpdateApiKey of the key's display name (and its balance, if
/// `remaining`), only if it still has `etag`.
async fn rename_key_if(
    clients: &Clients,
    owner: &TestUser,
    id: i64,
    etag: &str,
    name: &str,
    remaining: Option<i64>,
) -> Result<proto::ApiKey, Status> {
    let mut paths = vec!["display_name".to_owned()];
    if remaining.is_some() {
        paths.push("credits.remaining".into());
    }
    Ok(clients
        .api_keys(Some(&owner.token))
        .update_api_key(proto::UpdateApiKeyRequest {
            api_key: Some(proto::ApiKey {
                id,
                display_name: name.into(),
                etag: etag.into(),
                credits: remaining.map(|remaining| proto::Credits {
                    remaining,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .api_key
        .unwrap())
}

async fn rename_organization_if(
    clients: &Clients,
    owner: &TestUser,
    id: &str,
    etag: &str,
    name: &str,
) -> Result<proto::Organization, Status> {
    let rename = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: id.into(),
            name: name.into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    clients.update_organization(owner, rename).await
}

backend_test! {
    async fn an_update_with_a_stale_etag_is_aborted_and_one_with_the_current_applies() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let request = proto::CreateApiKeyRequest {
            credits: Some(proto::Credits { remaining: 100, ..Default::default() }),
            ..Default::default()
        };
        let created = app.create_api_key_with(&owner, &chatbot, request).await;
        let id = created.api_key.as_ref().unwrap().id;
        let read = app.get_api_key(&owner, id).await;
        assert!(!read.etag.is_empty());
        assert_eq!(app.get_api_key(&owner, id).await.etag, read.etag, "stable while unchanged");
        assert_eq!(created.api_key.unwrap().etag, read.etag);

        // A spend changes the balance, so the etag: a balance set from the
        // old read would lose it, and is refused.
        assert!(verify_costing(&app, &created.key, 10).await.valid);
        let spent = app.get_api_key(&owner, id).await;
        assert_ne!(spent.etag, read.etag);
        let stale = rename_key_if(&app, &owner, id, &read.etag, "top-up", Some(200)).await;
        assert_eq!(stale.unwrap_err().code(), Code::Aborted);
        assert_eq!(app.get_api_key(&owner, id).await.credits.unwrap().remaining, 90);
        let applied = rename_key_if(&app, &owner, id, &spent.etag, "top-up", Some(200)).await.unwrap();
        assert_eq!(applied.credits.as_ref().unwrap().remaining, 200);
        assert_ne!(applied.etag, spent.etag);
        assert_eq!(applied.etag, app.get_api_key(&owner, id).await.etag);
        // Without an etag, unconditional as before.
        rename_key_if(&app, &owner, id, "", "anyway", None).await.unwrap();

        // An organization the same way.
        let organization = get_organization(&app, &owner, &team).await;
        let renamed = rename_organization_if(&app, &owner, &team, &organization.etag, "first")
            .await
            .unwrap();
        assert_ne!(renamed.etag, organization.etag);
        let stale = rename_organization_if(&app, &owner, &team, &organization.etag, "second").await;
        assert_eq!(stale.unwrap_err().code(), Code::Aborted);
    }
}

backend_test! {
    async fn of_concurrent_updates_from_one_read_exactly_one_applies() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        let tries = (0..8).map(|i| {
            let (app, owner, etag) = (&app, &owner, key.etag.clone());
            async move { rename_key_if(app, owner, key.id, &etag, &format!("writer {i}"), None).await }
        });
        let answers = futures_util::future::join_all(tries).await;
        let applied: Vec<&proto::ApiKey> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(applied.len(), 1, "{answers:?}");
        assert!(answers
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .all(|status| status.code() == Code::Aborted));
        assert_eq!(app.get_api_key(&owner, key.id).await.display_name, applied[0].display_name);

        let organization = get_organization(&app, &owner, &team).await;
        let tries = (0..8).map(|i| {
            let (app, owner, team, etag) = (&app, &owner, &team, organization.etag.clone());
            async move { rename_organization_if(app, owner, team, &etag, &format!("team {i}")).await }
        });
        let answers = futures_util::future::join_all(tries).await;
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 1, "{answers:?}");
    }
}

/// The same through two server processes on one database: of eight
/// updates made from one read, half sent to each, exactly one applies.
#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_updates_from_one_read_on_two_replicas_exactly_one_applies_postgres() {
    let app = spawn_app().await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, _, chatbot) = team_with_chatbot(&app).await;
    let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
    let tries =
        (0..8usize).map(|i| {
            let clients: &Clients = if i.is_multiple_of(2) { &app } else { &replica };
            let (owner, etag) = (&owner, key.etag.clone());
            async move {
                rename_key_if(clients, owner, key.id, &etag, &format!("writer {i}"), None).await
            }
        });
    let answers = futures_util::future::join_all(tries).await;
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(answers
        .iter()
        .filter_map(|answer| answer.as_ref().err())
        .all(|status| status.code() == Code::Aborted));
}
