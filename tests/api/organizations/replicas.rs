//! Access changes made through one server process reaching another on the
//! same PostgreSQL database within a second.

use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use super::{app_with_team, read_code, remove, set_role, team_chatbot};
use crate::helpers::changed_within_a_second;

/// A member removed or demoted through one replica loses what they lost on
/// the other at their next call (within a second), as sessions do.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_of_membership_reaches_the_other_replica_within_a_second_on_postgres() {
    let (app, owner, team) = app_with_team("team").await;
    let chatbot = team_chatbot(&app, &owner, &team.id).await.unwrap();
    let editor = app.new_member(&owner, &team.id, Role::Editor).await;
    let other = app.spawn_replica_process(&[]).await;
    let rename = |name: &'static str| {
        let mut client = other.chatbots(Some(&editor.token));
        let request = crate::helpers::chatbot_update(
            proto::Chatbot {
                id: chatbot.id.clone(),
                name: name.into(),
                ..Default::default()
            },
            &["name"],
        );
        async move {
            client
                .update_chatbot(request)
                .await
                .map(drop)
                .map_err(|s| s.code())
        }
    };
    // Warm: the other replica has the editor's membership cached.
    rename("warm").await.unwrap();
    rename("warmer").await.unwrap();

    set_role(&app, &owner, &team.id, &editor.id, Role::Viewer)
        .await
        .unwrap();
    let refused = Err(Code::PermissionDenied);
    let _ = changed_within_a_second(|| rename("as viewer"), |answer| *answer == refused).await;
    let read = || read_code(&other, editor.token.clone(), chatbot.id.clone());
    assert_eq!(read().await, Ok(()), "a viewer still reads");

    remove(&app, &owner, &team.id, &editor.id).await.unwrap();
    let _ = changed_within_a_second(read, |answer| *answer == refused).await;
}

/// A service account's token revoked through one replica is refused by
/// the other within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_service_account_is_refused_by_the_other_replica_within_a_second_on_postgres() {
    let (app, owner, team) = app_with_team("team").await;
    let chatbot = team_chatbot(&app, &owner, &team.id).await.unwrap();
    let created = app
        .create_service_account(&owner, &team.id, Role::Viewer)
        .await;
    let other = app.spawn_replica_process(&[]).await;
    let read = || read_code(&other, created.token.clone(), chatbot.id.clone());
    // Warm: the other replica has the token cached.
    assert_eq!(read().await, Ok(()));
    assert_eq!(read().await, Ok(()));
    app.organizations(Some(&owner.token))
        .revoke_service_account(proto::RevokeServiceAccountRequest {
            id: created.service_account.unwrap().id,
        })
        .await
        .unwrap();
    let refused = Err(Code::Unauthenticated);
    let _ = changed_within_a_second(read, |answer| *answer == refused).await;
}

/// An organization deleted through one replica is gone for its members on
/// the other within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_organization_is_gone_on_the_other_replica_within_a_second_on_postgres() {
    let (app, owner, team) = app_with_team("team").await;
    let editor = app.new_member(&owner, &team.id, Role::Editor).await;
    let other = app.spawn_replica_process(&[]).await;
    let read = || {
        let mut client = other.organizations(Some(&editor.token));
        let request = proto::GetOrganizationRequest {
            id: team.id.clone(),
        };
        async move {
            client
                .get_organization(request)
                .await
                .map(drop)
                .map_err(|status| status.code())
        }
    };
    // Warm: the other replica has the editor's membership cached.
    assert_eq!(read().await, Ok(()));
    assert_eq!(read().await, Ok(()));
    app.organizations(Some(&owner.token))
        .delete_organization(proto::DeleteOrganizationRequest {
            id: team.id.clone(),
        })
        .await
        .unwrap();
    // An id that names nothing is PERMISSION_DENIED to a non-admin (AIP-193).
    let refused = Err(Code::PermissionDenied);
    let _ = changed_within_a_second(read, |answer| *answer == refused).await;
}
