//! The audit events of an organization's role changes, withdrawn
//! invitations and service-account changes: one for each call, naming the
//! person who made it and what it was made to.

use chatbot_backend::proto::{self, OrganizationRole as Role};

use super::{app_with_team, set_role};
use crate::helpers::{backend_test, TestUser};

backend_test! {
    async fn role_changes_withdrawn_invitations_and_service_account_changes_are_audited_with_their_actor() {
        let (app, owner, team) = app_with_team("audited team").await;
        // Two owners take turns, so each event must name the right one.
        let co_owner = app.new_member(&owner, &team.id, Role::Owner).await;
        let editor = app.new_member(&owner, &team.id, Role::Editor).await;
        set_role(&app, &co_owner, &team.id, &editor.id, Role::Viewer).await.unwrap();
        let invitation = app
            .invite(&owner, &team.id, "withdrawn@example.com", Role::Viewer)
            .await
            .invitation
            .unwrap();
        app.organizations(Some(&co_owner.token))
            .delete_invitation(proto::DeleteInvitationRequest { id: invitation.id.clone() })
            .await
            .unwrap();
        let account = app
            .create_service_account(&owner, &team.id, Role::Viewer)
            .await
            .service_account
            .unwrap();
        app.organizations(Some(&co_owner.token))
            .revoke_service_account(proto::RevokeServiceAccountRequest { id: account.id.clone() })
            .await
            .unwrap();
        app.organizations(Some(&owner.token))
            .delete_service_account(proto::DeleteServiceAccountRequest { id: account.id.clone() })
            .await
            .unwrap();

        let expected: [(&str, &TestUser, &str); 5] = [
            ("member.role_change", &co_owner, &editor.id),
            ("invitation.delete", &co_owner, &invitation.id),
            ("service_account.create", &owner, &account.id),
            ("service_account.revoke", &co_owner, &account.id),
            ("service_account.delete", &owner, &account.id),
        ];
        for (action, actor, target_id) in expected {
            let events = app
                .audit(Some(&owner.token))
                .list_audit_events(proto::ListAuditEventsRequest {
                    organization_id: team.id.clone(),
                    action: action.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .audit_events;
            assert_eq!(events.len(), 1, "one {action}: {events:?}");
            let recorded = events[0].actor.as_ref().unwrap();
            assert_eq!(recorded.user_id, actor.id, "{action}: {recorded:?}");
            assert_eq!(recorded.email, actor.email, "{action}: {recorded:?}");
            let target = events[0].target.as_ref().unwrap();
            assert_eq!(target.id, target_id, "{action}: {target:?}");
            assert_eq!(target.organization_id, team.id, "{action}: {target:?}");
        }
    }
}
