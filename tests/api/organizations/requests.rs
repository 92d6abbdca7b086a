//! Requests that are not well formed, the well-formed counterparts, and
//! paging through the chatbots of several organizations.

use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use super::{app_with_team, pending_invitations, team_chatbot};
use crate::helpers::{assert_code, backend_test, field_mask, spawn_app};

backend_test! {
    async fn organization_requests_that_are_not_well_formed_name_every_bad_field() {
        let (app, owner, team) = app_with_team("team").await;
        let client = || app.organizations(Some(&owner.token));
        fn fields<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Vec<String> {
            crate::helpers::violated_fields(&assert_code(result, Code::InvalidArgument))
        }
        let empty_name = client()
            .create_organization(proto::CreateOrganizationRequest { name: " ".into(), ..Default::default() })
            .await;
        assert_eq!(fields(empty_name), ["name"]);
        let bad_mask = client()
            .update_organization(proto::UpdateOrganizationRequest {
                organization: Some(proto::Organization { id: team.id.clone(), ..Default::default() }),
                update_mask: field_mask(&["personal"]),
                ..Default::default()
            })
            .await;
        assert_eq!(fields(bad_mask), ["update_mask"]);
        let bad_member = client()
            .update_member(proto::UpdateMemberRequest {
                member: Some(proto::Member {
                    organization_id: "not-a-uuid".into(),
                    user_id: owner.id.clone(),
                    ..Default::default()
                }),
                update_mask: field_mask(&["role"]),
            })
            .await;
        assert_eq!(fields(bad_member), ["member.organization_id", "member.role"]);
        let bad_invitation = client()
            .create_invitation(proto::CreateInvitationRequest {
                organization_id: team.id.clone(),
                email: "not an email".into(),
                role: 0,
                ttl: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
                ..Default::default()
            })
            .await;
        assert_eq!(fields(bad_invitation), ["email", "role", "ttl"]);
        let owner_account = client()
            .create_service_account(proto::CreateServiceAccountRequest {
                organization_id: team.id.clone(),
                name: "root".into(),
                role: Role::Owner.into(),
                expire_time: None,
                ..Default::default()
            })
            .await;
        assert_eq!(fields(owner_account), ["role"]);
        let bad_token = client()
            .accept_invitation(proto::AcceptInvitationRequest { token: "cbi_short".into() })
            .await;
        assert_eq!(fields(bad_token), ["token"]);

        // The well-formed counterparts answer: the pending invitation is
        // listed and withdrawn; gone, it is PERMISSION_DENIED to an owner
        // like any id that names nothing (AIP-193). The usage is empty.
        let invited = app.invite(&owner, &team.id, "later@example.com", Role::Viewer).await;
        let pending = pending_invitations(&app, &owner, &team.id).await;
        let invitation = invited.invitation.unwrap();
        assert_eq!(pending.iter().map(|i| &i.id).collect::<Vec<_>>(), vec![&invitation.id]);
        let withdraw = || {
            let mut client = client();
            let request = proto::DeleteInvitationRequest { id: invitation.id.clone() };
            async move { client.delete_invitation(request).await }
        };
        withdraw().await.unwrap();
        assert_code(withdraw().await, Code::PermissionDenied);
        let usage = client()
            .get_organization_usage(proto::GetOrganizationUsageRequest {
                organization_id: team.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(usage.buckets.is_empty());
    }
}

backend_test! {
    async fn a_member_pages_through_the_chatbots_of_all_their_organizations_in_creation_order() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let outsider = app.new_user().await;
        let team = app.create_organization(&user, "team").await;
        let other_team = app.create_organization(&outsider, "other").await;
        // Created in turn: the user's personal organization, their team, and
        // a team they are not in.
        let mut theirs = Vec::new();
        let mut in_team = Vec::new();
        for _ in 0..4 {
            theirs.push(app.create_chatbot(&user, "personal").await.id);
            let team_bot = team_chatbot(&app, &user, &team.id).await.unwrap().id;
            theirs.push(team_bot.clone());
            in_team.push(team_bot);
            team_chatbot(&app, &outsider, &other_team.id).await.unwrap();
        }
        let walk = |organization_id: String| {
            let app = &app;
            let token = user.token.clone();
            async move {
                let mut seen = Vec::new();
                let mut page_token = String::new();
                loop {
                    let page = app
                        .chatbots(Some(&token))
                        .list_chatbots(proto::ListChatbotsRequest {
                            page_size: 3,
                            page_token,
                            organization_id: organization_id.clone(),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(page.chatbots.len() <= 3);
                    seen.extend(page.chatbots.into_iter().map(|c| c.id));
                    if page.next_page_token.is_empty() {
                        return seen;
                    }
                    page_token = page.next_page_token;
                }
            }
        };
        assert_eq!(walk(String::new()).await, theirs);
        assert_eq!(walk(team.id.clone()).await, in_team);
    }
}
