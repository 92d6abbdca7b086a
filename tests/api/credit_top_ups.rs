//! Adding credits (issue 34): `credits_to_add` tops a key's or an
//! organization's balance up by an amount, computed from the balance as it
//! is when written, so it cannot race with spends the way setting
//! `credits.remaining` can.

use chatbot_backend::proto;
use tonic::{Code, Status};

use crate::helpers::{
    backend_test, spawn_app, verify_costing, violated_fields, Clients, TestApp, TestUser,
};
use crate::organization_limits::{give_credits, team_with_chatbot};

async fn add_to_key(
    clients: &Clients,
    owner: &TestUser,
    id: i64,
    amount: i64,
    paths: &[&str],
) -> Result<proto::ApiKey, Status> {
    Ok(clients
        .api_keys(Some(&owner.token))
        .update_api_key(proto::UpdateApiKeyRequest {
            api_key: Some(proto::ApiKey {
                id,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|path| (*path).to_owned()).collect(),
            }),
            credits_to_add: amount,
        })
        .await?
        .into_inner()
        .api_key
        .unwrap())
}

async fn add_to_organization(
    clients: &Clients,
    owner: &TestUser,
    id: &str,
    amount: i64,
) -> Result<proto::Organization, Status> {
    let top_up = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: id.into(),
            ..Default::default()
        }),
        update_mask: None,
        credits_to_add: amount,
    };
    clients.update_organization(owner, top_up).await
}

async fn key_with_credits(
    app: &TestApp,
    owner: &TestUser,
    chatbot: &str,
    remaining: i64,
) -> proto::CreateApiKeyResponse {
    let request = proto::CreateApiKeyRequest {
        credits: Some(proto::Credits {
            remaining,
            ..Default::default()
        }),
        ..Default::default()
    };
    app.create_api_key_with(owner, chatbot, request).await
}

fn remaining(key: &proto::ApiKey) -> i64 {
    key.credits.as_ref().unwrap().remaining
}

backend_test! {
    async fn credits_are_added_to_the_balance_as_it_is_and_bad_additions_are_refused() {
        let app = spawn_app().await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let created = key_with_credits(&app, &owner, &chatbot, 100).await;
        let id = created.api_key.as_ref().unwrap().id;
        assert!(verify_costing(&app, &created.key, 30).await.valid);
        let added = add_to_key(&app, &owner, id, 50, &[]).await.unwrap();
        assert_eq!(remaining(&added), 120);
        // With other fields in the mask, in the same update.
        let renamed = add_to_key(&app, &owner, id, 5, &["display_name"]).await.unwrap();
        assert_eq!((remaining(&renamed), renamed.display_name.as_str()), (125, ""));

        // Not with a credits path; within bounds; not on unlimited credits.
        let both = add_to_key(&app, &owner, id, 5, &["credits.remaining"]).await.unwrap_err();
        assert_eq!(violated_fields(&both), ["credits_to_add"]);
        let negative = add_to_key(&app, &owner, id, -5, &[]).await.unwrap_err();
        assert_eq!(violated_fields(&negative), ["credits_to_add"]);
        let too_much = add_to_key(&app, &owner, id, 1_000_000_000_000, &[]).await.unwrap_err();
        assert_eq!(too_much.code(), Code::FailedPrecondition);
        let unlimited = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        let refused = add_to_key(&app, &owner, unlimited.id, 5, &[]).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let nothing = add_to_key(&app, &owner, id, 0, &[]).await.unwrap_err();
        assert_eq!(violated_fields(&nothing), ["update_mask"]);

        // An organization's balance the same way.
        give_credits(&app, &owner, &team, 10).await;
        assert!(verify_costing(&app, &created.key, 4).await.valid);
        let organization = add_to_organization(&app, &owner, &team, 100).await.unwrap();
        assert_eq!(organization.credits.unwrap().remaining, 106);
        let viewer = app.new_member(&owner, &team, proto::OrganizationRole::Viewer).await;
        let denied = add_to_organization(&app, &viewer, &team, 1).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        // The audit log records the amount.
        let audit = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                action: "api_key.update".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let change = &audit.audit_events[0].changes[1];
        assert_eq!((change.field.as_str(), change.new_value.as_str()), ("credits_to_add", "5"));
    }
}

/// Top-ups and spends at once, through two server processes: every
/// addition and every spend counts, none overwrites another.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_additions_and_spends_on_two_replicas_all_count_postgres() {
    let app = spawn_app().await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    give_credits(&app, &owner, &team, 10_000).await;
    let created = key_with_credits(&app, &owner, &chatbot, 1_000).await;
    let id = created.api_key.unwrap().id;
    let through = |i: usize| -> &Clients {
        if i.is_multiple_of(2) {
            &app
        } else {
            &replica
        }
    };
    let spends = (0..60).map(|i| verify_costing(through(i), &created.key, 10));
    let key_additions = (0..20).map(|i| add_to_key(through(i), &owner, id, 7, &[]));
    let organization_additions = (0..20).map(|i| add_to_organization(through(i), &owner, &team, 3));
    let (spent, added, organization_added) = tokio::join!(
        futures_util::future::join_all(spends),
        futures_util::future::join_all(key_additions),
        futures_util::future::join_all(organization_additions),
    );
    assert!(spent.iter().all(|answer| answer.valid));
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    assert!(
        organization_added.iter().all(Result::is_ok),
        "{organization_added:?}"
    );
    let key = app.get_api_key(&owner, id).await;
    assert_eq!(remaining(&key), 1_000 - 60 * 10 + 20 * 7);
    let organization = app
        .organizations(Some(&owner.token))
        .get_organization(proto::GetOrganizationRequest { id: team })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(
        organization.credits.unwrap().remaining,
        10_000 - 60 * 10 + 20 * 3
    );
}
