//! The last-owner rule under races, and deletions (of a user, of an
//! organization) that never leave a team without an owner or a chatbot
//! without its organization.

use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use super::{app_with_team, members, remove, set_role, team_chatbot};
use crate::helpers::{
    assert_code, backend_test, field_mask, spawn_app, spawn_app_with, TestApp, TestUser,
};
use crate::webhooks::create_webhook;

backend_test! {
    async fn two_owners_leaving_at_once_leave_one_owner() {
        let app = spawn_app().await;
        for _ in 0..4 {
            let first = app.new_user().await;
            let team = app.create_organization(&first, "two owners").await;
            let second = app.new_member(&first, &team.id, Role::Owner).await;
            let (a, b) = tokio::join!(
                remove(&app, &first, &team.id, &first.id),
                remove(&app, &second, &team.id, &second.id),
            );
            let codes = [a.map_err(|s| s.code()), b.map_err(|s| s.code())];
            assert_eq!(
                codes.iter().filter(|c| c.is_ok()).count(),
                1,
                "exactly one leaves: {codes:?}"
            );
            assert!(codes.contains(&Err(Code::FailedPrecondition)), "{codes:?}");
            // Demoting the last owner is refused the same way.
            let stayed = if codes[0].is_ok() { &second } else { &first };
            let left = members(&app, stayed, &team.id).await;
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].role(), Role::Owner);
            let demote = set_role(&app, stayed, &team.id, &stayed.id, Role::Viewer).await;
            assert_code(demote, Code::FailedPrecondition);
        }
    }
}

backend_test! {
    async fn an_organization_that_owns_a_chatbot_is_never_deleted_under_it() {
        let (app, owner, team) = app_with_team("team").await;
        let chatbot = team_chatbot(&app, &owner, &team.id).await.unwrap();
        let delete = |id: String| {
            let mut client = app.organizations(Some(&owner.token));
            async move {
                client
                    .delete_organization(proto::DeleteOrganizationRequest { id })
                    .await
                    .map(drop)
            }
        };
        assert_code(delete(team.id.clone()).await, Code::FailedPrecondition);
        app.delete_chatbot(&owner.token, &chatbot.id).await.unwrap();
        delete(team.id.clone()).await.unwrap();

        // A chatbot created while its organization is deleted: one wins.
        for _ in 0..8 {
            let team = app.create_organization(&owner, "racing").await;
            let (created, deleted) =
                tokio::join!(team_chatbot(&app, &owner, &team.id), delete(team.id.clone()));
            match (created, deleted) {
                (Ok(chatbot), Err(refused)) => {
                    assert_eq!(refused.code(), Code::FailedPrecondition);
                    assert_eq!(app.read_chatbot(&owner.token, &chatbot.id).await.organization_id, team.id);
                }
                (Err(refused), Ok(())) => assert!(
                    matches!(refused.code(), Code::NotFound | Code::PermissionDenied),
                    "{refused:?}"
                ),
                other => panic!("both or neither succeeded: {other:?}"),
            }
        }
    }
}

/// `change` while a delete of `organization` is held half way (its row
/// locked, as DeleteOrganization locks it first) and then finished, which
/// must succeed: `change`'s answer.
async fn racing_a_held_delete<T>(
    app: &TestApp,
    organization: &str,
    change: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    use diesel_async::SimpleAsyncConnection;

    let mut delete = app.sql().await;
    let lock = format!("BEGIN; SELECT 1 FROM organizations WHERE id = '{organization}' FOR UPDATE");
    delete.batch_execute(&lock).await.unwrap();
    let finish_delete = async {
        // Long enough for the change to reach its statements and wait.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let sql = format!("DELETE FROM organizations WHERE id = '{organization}'; COMMIT");
        delete.batch_execute(&sql).await
    };
    let (changed, deleted) = tokio::join!(change, finish_delete);
    deleted.unwrap_or_else(|error| panic!("the delete failed: {error}"));
    changed
}

/// A new team organization of `owner` with a service account: their ids.
async fn team_with_service_account(app: &TestApp, owner: &TestUser) -> (String, String) {
    let team = app.create_organization(owner, "held").await;
    let account = app
        .create_service_account(owner, &team.id, Role::Viewer)
        .await;
    (team.id, account.service_account.unwrap().id)
}

/// A delete locks the organization's row and then, by its cascade, the rows
/// that go with it (the counter that numbers its events, its service
/// accounts, invitations, webhooks). A change that locked one of those
/// first and the organization last (at its event, or its foreign keys'
/// checks) deadlocked with it, and PostgreSQL failed one of the two: the
/// change as INTERNAL, or the delete. Only PostgreSQL lets a test hold a
/// delete half way.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_change_racing_its_organizations_delete_is_not_found() {
    for _ in 0..2 {
        // Webhooks to a closed local port: their deliveries only fail.
        let app = spawn_app_with(&["--webhook-allow-private-targets", "true"]).await;
        let owner = app.new_user().await;
        // The organization has had an event (its creation), so its counter
        // has a row for a create to lock.
        let team = app.create_organization(&owner, "held").await;
        let created = racing_a_held_delete(&app, &team.id, team_chatbot(&app, &owner, &team.id));
        assert_code(created.await, Code::NotFound);

        let (team, id) = team_with_service_account(&app, &owner).await;
        let mut accounts = app.organizations(Some(&owner.token));
        let revoke = proto::RevokeServiceAccountRequest { id };
        let revoked = racing_a_held_delete(&app, &team, accounts.revoke_service_account(revoke));
        assert_code(revoked.await, Code::NotFound);

        let (team, id) = team_with_service_account(&app, &owner).await;
        let delete = proto::DeleteServiceAccountRequest { id };
        let deleted = racing_a_held_delete(&app, &team, accounts.delete_service_account(delete));
        assert_code(deleted.await, Code::NotFound);

        let team = app.create_organization(&owner, "held").await;
        let invited = app
            .invite(&owner, &team.id, "held@example.com", Role::Viewer)
            .await;
        let id = invited.invitation.unwrap().id;
        let delete = proto::DeleteInvitationRequest { id };
        let deleted = racing_a_held_delete(&app, &team.id, accounts.delete_invitation(delete));
        assert_code(deleted.await, Code::NotFound);

        let mut webhooks = app.webhooks(Some(&owner.token));
        for update in [true, false] {
            let team = app.create_organization(&owner, "held").await;
            let url = "http://127.0.0.1:9/hook";
            let created = create_webhook(&app, &owner, &team.id, url, &[])
                .await
                .unwrap();
            let id = created.webhook.unwrap().id;
            let changed = match update {
                true => {
                    let request = proto::UpdateWebhookRequest {
                        webhook: Some(proto::Webhook {
                            id,
                            description: "renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: field_mask(&["description"]),
                    };
                    racing_a_held_delete(&app, &team.id, webhooks.update_webhook(request))
                        .await
                        .map(drop)
                }
                false => {
                    let request = proto::DeleteWebhookRequest { id };
                    racing_a_held_delete(&app, &team.id, webhooks.delete_webhook(request))
                        .await
                        .map(drop)
                }
            };
            assert_code(changed, Code::NotFound);
        }
    }
}

backend_test! {
    async fn deleting_a_user_hands_their_team_chatbots_to_another_owner() {
        let app = spawn_app().await;
        let founder = app.new_user().await;
        let team = app.create_organization(&founder, "team").await;
        let partner = app.new_member(&founder, &team.id, Role::Editor).await;
        let chatbot = team_chatbot(&app, &founder, &team.id).await.unwrap();
        let delete_founder = || {
            let mut client = app.users(Some(&founder.token));
            let request = proto::DeleteUserRequest { id: founder.id.clone() };
            async move { client.delete_user(request).await.map(drop) }
        };
        // The only owner cannot go: the team would have no one to run it.
        assert_code(delete_founder().await, Code::FailedPrecondition);

        let promote = set_role(&app, &founder, &team.id, &partner.id, Role::Owner)
            .await
            .unwrap();
        assert_eq!(promote.role(), Role::Owner);
        delete_founder().await.unwrap();

        let kept = app.read_chatbot(&partner.token, &chatbot.id).await;
        assert_eq!(kept.organization_id, team.id);
        assert_eq!(kept.owner_id, partner.id, "passed to the remaining owner");
        let left = members(&app, &partner, &team.id).await;
        assert_eq!(left.len(), 1);

        // Two owners deleting their accounts at once: one goes, the other
        // stays to run the team.
        let first = app.new_user().await;
        let team = app.create_organization(&first, "pair").await;
        let second = app.new_member(&first, &team.id, Role::Owner).await;
        let delete = |user: &TestUser| {
            let mut client = app.users(Some(&user.token));
            let request = proto::DeleteUserRequest { id: user.id.clone() };
            async move { client.delete_user(request).await.map(drop).map_err(|s| s.code()) }
        };
        let (a, b) = tokio::join!(delete(&first), delete(&second));
        let mut codes = [a, b];
        codes.sort_by_key(|code| code.is_err());
        assert_eq!(codes, [Ok(()), Err(Code::FailedPrecondition)]);
    }
}
