//! Organizations: personal ones made at sign-up, teams that people join by
//! invitation, the last-owner rule under races, deletion that never orphans
//! a chatbot, and access changes reaching every replica. Who may call what
//! is checked cell by cell in `authorization.rs`.

use chatbot_backend::domain::ServiceAccountToken;
use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, changed_within_a_second, field_mask, logs, spawn_app, Clients,
    TestApp, TestUser,
};

mod service_accounts_and_edges;

/// A chatbot of `organization_id`, created by `user`.
async fn team_chatbot(
    app: &Clients,
    user: &TestUser,
    organization_id: &str,
) -> Result<proto::Chatbot, tonic::Status> {
    let request = proto::CreateChatbotRequest {
        name: "team bot".into(),
        llm_endpoint_url: "https://llm.example.com".into(),
        organization_id: organization_id.into(),
        ..Default::default()
    };
    app.create_chatbot_from(&user.token, request).await
}

async fn members(app: &Clients, user: &TestUser, organization_id: &str) -> Vec<proto::Member> {
    app.organizations(Some(&user.token))
        .list_members(proto::ListMembersRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner()
        .members
}

/// UpdateMember of `user_id`'s role in `organization_id`, by `by`.
async fn set_role(
    app: &Clients,
    by: &TestUser,
    organization_id: &str,
    user_id: &str,
    role: Role,
) -> Result<proto::Member, tonic::Status> {
    let updated = app
        .organizations(Some(&by.token))
        .update_member(proto::UpdateMemberRequest {
            member: Some(proto::Member {
                organization_id: organization_id.into(),
                user_id: user_id.into(),
                role: role.into(),
                ..Default::default()
            }),
            update_mask: field_mask(&["role"]),
        })
        .await?;
    Ok(updated.into_inner().member.expect("member in response"))
}

/// The invitations of `organization_id` still pending, as `owner` lists
/// them.
async fn pending_invitations(
    app: &Clients,
    owner: &TestUser,
    organization_id: &str,
) -> Vec<proto::Invitation> {
    app.organizations(Some(&owner.token))
        .list_invitations(proto::ListInvitationsRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invitations
}

/// The ids of the chatbots ListChatbots shows `user`: of `organization_id`,
/// or of all their organizations when it is empty.
async fn listed_chatbot_ids(app: &Clients, user: &TestUser, organization_id: &str) -> Vec<String> {
    app.chatbots(Some(&user.token))
        .list_chatbots(proto::ListChatbotsRequest {
            organization_id: organization_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .chatbots
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// GetChatbot of `id` with `token` through `server`, as its code alone.
async fn read_chatbot_code(server: &Clients, token: &str, id: &str) -> Result<(), Code> {
    server
        .get_chatbot(token, id)
        .await
        .map(drop)
        .map_err(|s| s.code())
}

async fn remove(
    app: &Clients,
    by: &TestUser,
    organization_id: &str,
    user_id: &str,
) -> Result<(), tonic::Status> {
    app.organizations(Some(&by.token))
        .remove_member(proto::RemoveMemberRequest {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
        })
        .await
        .map(drop)
}

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
        let invite = app
            .organizations(Some(&user.token))
            .create_invitation(proto::CreateInvitationRequest {
                organization_id: user.id.clone(),
                email: "friend@example.com".into(),
                role: Role::Editor.into(),
                ttl: None,
                ..Default::default()
            })
            .await;
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
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "Support team").await;
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
        let listed = listed_chatbot_ids(&app, &owner, "").await;
        assert_eq!(listed, vec![chatbot.id.clone(), personal.id.clone()]);
        let team_only = listed_chatbot_ids(&app, &owner, &team.id).await;
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
    async fn an_invitation_accepted_twice_at_once_makes_one_membership() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "team").await;
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
        let again = app
            .organizations(Some(&owner.token))
            .create_invitation(proto::CreateInvitationRequest {
                organization_id: team.id.clone(),
                email: user.email.clone(),
                role: Role::Editor.into(),
                ttl: None,
                ..Default::default()
            })
            .await;
        assert_code(again, Code::AlreadyExists);
    }
}

backend_test! {
    async fn an_organization_that_owns_a_chatbot_is_never_deleted_under_it() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "team").await;
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

/// A member removed or demoted through one replica loses what they lost on
/// the other at their next call (within a second), as sessions do.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_of_membership_reaches_the_other_replica_within_a_second_on_postgres() {
    let app: TestApp = spawn_app().await;
    let owner = app.new_user().await;
    let team = app.create_organization(&owner, "team").await;
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
    let read = || {
        let (other, token, id) = (&other, editor.token.clone(), chatbot.id.clone());
        async move { read_chatbot_code(other, &token, &id).await }
    };
    assert_eq!(read().await, Ok(()), "a viewer still reads");

    remove(&app, &owner, &team.id, &editor.id).await.unwrap();
    let _ = changed_within_a_second(read, |answer| *answer == refused).await;
}
