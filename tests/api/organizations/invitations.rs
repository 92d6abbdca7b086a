//! Joining an organization: the personal one made at sign-up, invitations
//! created, accepted (also twice at once), withdrawn or expired, and what a
//! removed member can no longer do.

use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use super::{
    app_with_team, chatbot_ids, members, pending_invitations, remove, run_sql, team_chatbot,
    try_invite, LONG_AGO,
};
use crate::helpers::{assert_code, backend_test, logs, spawn_app, TestUser};

backend_test! {
    async fn a_new_user_has_a_personal_organization_that_owns_their_chatbots() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let listed = app
            .organizations(Some(&user.token))
            .list_organizations(proto::ListOrganizationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .organizations;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, user.id, "a personal organization has its user's id");
        assert!(listed[0].personal);
        let mine = members(&app, &user, &user.id).await;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].role(), Role::Owner);
        assert_eq!(mine[0].email, user.email);

        // Without an organization, a chatbot goes to the personal one, and
        // its keys verify with it.
        let chatbot = app.create_chatbot(&user, "mine").await;
        assert_eq!(chatbot.organization_id, user.id);
        assert_eq!(chatbot.owner_id, user.id);
        let key = app.create_api_key(&user, &chatbot.id).await;
        let verdict = app.verify(&key.key).await;
        assert!(verdict.valid);
        assert_eq!(verdict.organization_id, user.id);

        // A personal organization has its person only, and goes with them.
        let invite = try_invite(&app, &user, &user.id, "friend@example.com", Role::Editor).await;
        assert_code(invite, Code::FailedPrecondition);
        let delete = app
            .organizations(Some(&user.token))
            .delete_organization(proto::DeleteOrganizationRequest { id: user.id.clone() })
            .await;
        assert_code(delete, Code::FailedPrecondition);
    }
}

backend_test! {
    async fn a_second_person_joins_by_invitation_and_works_within_their_role() {
        let (app, owner, team) = app_with_team("Support team").await;
        assert!(!team.personal);

        let editor = app.new_user().await;
        let invitation = app.invite(&owner, &team.id, &editor.email, Role::Editor).await;
        assert!(invitation.token.starts_with("cbi_"));
        // Only the invited email may accept it.
        let stranger = app.new_user().await;
        assert_code(app.accept(&stranger, &invitation.token).await, Code::PermissionDenied);
        let joined = app.accept(&editor, &invitation.token).await.unwrap();
        assert_eq!(joined.role(), Role::Editor);
        assert_eq!(joined.organization_id, team.id);
        // Accepting again (a lost answer retried) answers the same.
        let again = app.accept(&editor, &invitation.token).await.unwrap();
        assert_eq!(again.user_id, joined.user_id);
        assert_eq!(again.create_time, joined.create_time);
        let pending = pending_invitations(&app, &owner, &team.id).await;
        assert!(pending.is_empty(), "an accepted invitation is no longer pending");

        // The editor builds in the team; the chatbot is the team's.
        let chatbot = team_chatbot(&app, &editor, &team.id).await.unwrap();
        assert_eq!(chatbot.organization_id, team.id);
        assert_eq!(chatbot.owner_id, editor.id, "owner_id names who created it");
        let key = app.create_api_key(&editor, &chatbot.id).await;
        assert_eq!(app.verify(&key.key).await.organization_id, team.id);
        // The owner sees it among their chatbots, with their personal ones.
        let personal = app.create_chatbot(&owner, "own").await;
        let listed = chatbot_ids(&app, &owner, "").await;
        assert_eq!(listed, vec![chatbot.id.clone(), personal.id.clone()]);
        let team_only = chatbot_ids(&app, &owner, &team.id).await;
        assert_eq!(team_only, vec![chatbot.id.clone()]);

        // A viewer reads, and sees other members without their emails.
        let viewer = app.new_member(&owner, &team.id, Role::Viewer).await;
        app.read_chatbot(&viewer.token, &chatbot.id).await;
        let rename = app
            .chatbots(Some(&viewer.token))
            .update_chatbot(crate::helpers::chatbot_update(
                proto::Chatbot {
                    id: chatbot.id.clone(),
                    name: "mine now".into(),
                    ..Default::default()
                },
                &["name"],
            ))
            .await;
        assert_code(rename, Code::PermissionDenied);
        let seen = members(&app, &viewer, &team.id).await;
        assert_eq!(seen.len(), 3);
        for member in &seen {
            let own = member.user_id == viewer.id;
            assert_eq!(member.email.is_empty(), !own, "{member:?}");
        }
        let seen_by_editor = members(&app, &editor, &team.id).await;
        assert!(seen_by_editor.iter().all(|m| !m.email.is_empty()));

        // The team's audit log: its members see it; the viewer without the
        // emails of others.
        let events = |user: &TestUser| {
            let mut client = app.audit(Some(&user.token));
            let request = proto::ListAuditEventsRequest {
                organization_id: team.id.clone(),
                ..Default::default()
            };
            async move { client.list_audit_events(request).await.unwrap().into_inner().audit_events }
        };
        let by_editor = events(&editor).await;
        let actions: Vec<&str> = by_editor.iter().map(|e| e.action.as_str()).collect();
        for action in ["organization.create", "invitation.create", "member.join", "chatbot.create", "api_key.create"] {
            assert!(actions.contains(&action), "{action} missing from {actions:?}");
        }
        let joined = by_editor.iter().find(|e| e.action == "member.join").unwrap();
        assert_eq!(joined.target.as_ref().unwrap().organization_id, team.id);
        let by_owner = by_editor
            .iter()
            .find(|e| e.action == "invitation.create")
            .unwrap();
        assert_eq!(by_owner.actor.as_ref().unwrap().email, owner.email);
        // docs/security.md's table: an editor sees an owner's email, not
        // where the owner called from; the owner sees their own address.
        assert_eq!(by_owner.client_address, "", "{by_owner:?}");
        let own = events(&owner).await;
        let own = own.iter().find(|e| e.action == "invitation.create").unwrap();
        assert_eq!(own.client_address, "127.0.0.1", "{own:?}");
        for event in events(&viewer).await {
            let actor = event.actor.unwrap();
            if actor.user_id != viewer.id {
                assert!(actor.email.is_empty(), "{}: {actor:?}", event.action);
            }
            assert!(event.client_address.is_empty() || actor.user_id == viewer.id);
        }
        // Someone outside the team sees none of it.
        let outside = app
            .audit(Some(&stranger.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                organization_id: team.id.clone(),
                ..Default::default()
            })
            .await;
        assert_code(outside, Code::PermissionDenied);

        // No invitation token is kept.
        assert!(!app.stored_data().await.contains(&invitation.token[4..]));
        assert!(!logs().contains(&invitation.token[4..]));
    }
}

backend_test! {
    async fn an_invitation_accepted_twice_at_once_makes_one_membership() {
        let (app, owner, team) = app_with_team("team").await;
        let user = app.new_user().await;
        let invitation = app.invite(&owner, &team.id, &user.email, Role::Viewer).await;
        let (a, b) = tokio::join!(
            app.accept(&user, &invitation.token),
            app.accept(&user, &invitation.token)
        );
        assert_eq!(a.unwrap().user_id, b.unwrap().user_id);
        let listed = members(&app, &owner, &team.id).await;
        assert_eq!(listed.iter().filter(|m| m.user_id == user.id).count(), 1);
        // A member is not invited again.
        let again = try_invite(&app, &owner, &team.id, &user.email, Role::Editor).await;
        assert_code(again, Code::AlreadyExists);
    }
}

backend_test! {
    async fn a_removed_member_neither_rejoins_by_an_old_invitation_nor_reads_the_teams_later_events() {
        let (app, owner, team) = app_with_team("team").await;
        let other_owner = app.new_member(&owner, &team.id, Role::Owner).await;
        // The first owner invites a second account of theirs, then is removed.
        let second_account = app.new_user().await;
        let spare = app.invite(&owner, &team.id, &second_account.email, Role::Owner).await;
        let editor = app.new_member(&owner, &team.id, Role::Editor).await;
        let chatbot = team_chatbot(&app, &editor, &team.id).await.unwrap();
        remove(&app, &other_owner, &team.id, &owner.id).await.unwrap();
        remove(&app, &other_owner, &team.id, &editor.id).await.unwrap();
        assert_code(app.accept(&second_account, &spare.token).await, Code::FailedPrecondition);

        // The editor created the chatbot (it names them as owner_id), but
        // once out of the team sees none of what happens to it.
        app.chatbots(Some(&other_owner.token))
            .update_chatbot(crate::helpers::chatbot_update(
                proto::Chatbot {
                    id: chatbot.id.clone(),
                    name: "renamed after they left".into(),
                    ..Default::default()
                },
                &["name"],
            ))
            .await
            .unwrap();
        let seen = app
            .audit(Some(&editor.token))
            .list_audit_events(proto::ListAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        assert!(
            seen.iter().all(|event| event.action != "chatbot.update"),
            "{:?}",
            seen.iter().map(|e| &e.action).collect::<Vec<_>>()
        );
        assert!(seen.iter().any(|event| event.action == "member.remove"), "their own removal");
    }
}

backend_test! {
    async fn accepting_an_expired_invitation_answers_failed_precondition() {
        let (app, owner, team) = app_with_team("team").await;
        let user = app.new_user().await;
        let invitation = app.invite(&owner, &team.id, &user.email, Role::Viewer).await;
        let expired = format!(
            "UPDATE organization_invitations SET expires_at = '{LONG_AGO}' WHERE id = '{}'",
            invitation.invitation.unwrap().id
        );
        assert_eq!(run_sql(&app, &expired).await, 1);
        assert_code(app.accept(&user, &invitation.token).await, Code::FailedPrecondition);
        let listed = members(&app, &owner, &team.id).await;
        assert!(listed.iter().all(|m| m.user_id != user.id), "{listed:?}");
    }
}
