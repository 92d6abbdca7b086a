//! Service accounts in an organization (roles, revocation across replicas, their
//! user leaving), and the edges: removed members, malformed requests, paging.

use super::*;

backend_test! {
    async fn a_service_account_works_in_its_organization_by_its_role_and_nowhere_else() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "team").await;
        let created = app.create_service_account(&owner, &team.id, Role::Editor).await;
        let token = created.token.clone();
        assert!(token.starts_with("cbs_"));
        let account = created.service_account.unwrap();
        assert_eq!(account.token_prefix, token[..12]);
        assert_eq!(account.creator_id, owner.id);

        // It builds in its organization (the default there), accountable
        // to the organization's owner, and its keys verify.
        let chatbot = app
            .create_chatbot_from(
                &token,
                proto::CreateChatbotRequest {
                    name: "provisioned".into(),
                    llm_endpoint_url: "https://llm.example.com".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(chatbot.organization_id, team.id);
        assert_eq!(chatbot.owner_id, owner.id);
        let key = app
            .api_keys(Some(&token))
            .create_api_key(proto::CreateApiKeyRequest {
                chatbot_id: chatbot.id.clone(),
                display_name: "customer 42".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(app.verify(&key.key).await.valid);

        // Nothing outside its organization, and nothing only people do.
        let other = app.new_user().await;
        let theirs = app.create_chatbot(&other, "theirs").await;
        assert_code(app.get_chatbot(&token, &theirs.id).await, Code::PermissionDenied);
        let users = app.users(Some(&token)).list_users(proto::ListUsersRequest::default()).await;
        assert_code(users, Code::PermissionDenied);
        let me = app.auth(Some(&token)).get_current_user(proto::GetCurrentUserRequest {}).await;
        assert_code(me, Code::PermissionDenied);
        let new_team = app
            .organizations(Some(&token))
            .create_organization(proto::CreateOrganizationRequest { name: "mine".into(), ..Default::default() })
            .await;
        assert_code(new_team, Code::PermissionDenied);
        let listed = app
            .organizations(Some(&token))
            .list_organizations(proto::ListOrganizationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .organizations;
        assert_eq!(listed.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), vec![team.id.as_str()]);

        // The audit log names it as the actor.
        let events = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                organization_id: team.id.clone(),
                action: "chatbot.create".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let actor = events[0].actor.clone().unwrap();
        assert_eq!(actor.service_account_id, account.id);
        assert_eq!(actor.service_account_name, "provisioning");
        assert!(actor.user_id.is_empty());

        // Listed without its secret, with its last use.
        let list = || {
            let mut client = app.organizations(Some(&owner.token));
            let request = proto::ListServiceAccountsRequest {
                organization_id: team.id.clone(),
                ..Default::default()
            };
            async move { client.list_service_accounts(request).await.unwrap().into_inner().service_accounts }
        };
        let accounts = crate::helpers::poll_until(
            "the last use is recorded",
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(100),
            list,
            |accounts: &Vec<proto::ServiceAccount>| accounts[0].last_use_time.is_some(),
        )
        .await;
        assert_eq!(accounts.len(), 1);

        // Revoked, it is refused at its next call; deleted, what it made
        // stays.
        app.organizations(Some(&owner.token))
            .revoke_service_account(proto::RevokeServiceAccountRequest { id: account.id.clone() })
            .await
            .unwrap();
        assert_code(app.get_chatbot(&token, &chatbot.id).await, Code::Unauthenticated);
        app.organizations(Some(&owner.token))
            .delete_service_account(proto::DeleteServiceAccountRequest { id: account.id.clone() })
            .await
            .unwrap();
        assert_code(app.get_chatbot(&token, &chatbot.id).await, Code::Unauthenticated);
        app.read_chatbot(&owner.token, &chatbot.id).await;

        // An expiring token stops at its expiry.
        let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
        let expiring = app
            .organizations(Some(&owner.token))
            .create_service_account(proto::CreateServiceAccountRequest {
                organization_id: team.id.clone(),
                name: "short-lived".into(),
                role: Role::Viewer.into(),
                expire_time: Some(prost_types::Timestamp {
                    seconds: soon.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        app.read_chatbot(&expiring.token, &chatbot.id).await;
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert_code(app.get_chatbot(&expiring.token, &chatbot.id).await, Code::Unauthenticated);

        // No token is kept, or logged.
        let stored = app.stored_data().await;
        for secret in [&token, &expiring.token] {
            assert!(!stored.contains(&secret[4..]));
            assert!(!logs().contains(&secret[4..]));
        }
    }
}

/// A service account's token revoked through one replica is refused by
/// the other within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_service_account_is_refused_by_the_other_replica_within_a_second_on_postgres() {
    let app: TestApp = spawn_app().await;
    let owner = app.new_user().await;
    let team = app.create_organization(&owner, "team").await;
    let chatbot = team_chatbot(&app, &owner, &team.id).await.unwrap();
    let created = app
        .create_service_account(&owner, &team.id, Role::Viewer)
        .await;
    let other = app.spawn_replica_process(&[]).await;
    let read = || {
        let (other, token, id) = (&other, created.token.clone(), chatbot.id.clone());
        async move { read_chatbot_code(other, &token, &id).await }
    };
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

backend_test! {
    async fn made_up_service_account_tokens_cost_the_public_rpcs_no_query() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let verify = |token: String| {
            let mut client = app.api_keys(None);
            async move {
                let mut request = tonic::Request::new(proto::VerifyApiKeyRequest {
                    key: "not-a-key".into(),
                    ..Default::default()
                });
                let bearer = format!("Bearer {token}").parse().unwrap();
                request.metadata_mut().insert("authorization", bearer);
                client.verify_api_key(request).await.map(|answer| answer.into_inner().valid)
            }
        };
        verify(ServiceAccountToken::generate().expose().to_owned()).await.unwrap();
        const CALLS: u64 = 50;
        let before = app.db.statements_executed();
        for _ in 0..CALLS {
            let made_up = ServiceAccountToken::generate().expose().to_owned();
            assert!(!verify(made_up).await.unwrap(), "not-a-key is malformed");
        }
        // A lookup per call would be 50 statements; the listener's
        // heartbeat, which goes through the pool, adds about one a second.
        let executed = app.db.statements_executed() - before;
        assert!(executed < CALLS / 2, "{executed} statements: the made-up tokens were looked up");
        // Elsewhere one is looked up, and refused.
        let made_up = ServiceAccountToken::generate();
        let listed = app
            .chatbots(Some(made_up.expose()))
            .list_chatbots(proto::ListChatbotsRequest::default())
            .await;
        assert_code(listed, Code::Unauthenticated);
    }
}

backend_test! {
    async fn a_removed_member_neither_rejoins_by_an_old_invitation_nor_reads_the_teams_later_events() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "team").await;
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
    async fn a_personal_service_account_stops_with_its_user() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "mine").await;
        let created = app.create_service_account(&user, &user.id, Role::Viewer).await;
        app.read_chatbot(&created.token, &chatbot.id).await;
        app.users(Some(&user.token))
            .delete_user(proto::DeleteUserRequest { id: user.id.clone() })
            .await
            .unwrap();
        assert_code(app.get_chatbot(&created.token, &chatbot.id).await, Code::Unauthenticated);
    }
}

backend_test! {
    async fn organization_requests_that_are_not_well_formed_name_every_bad_field() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let team = app.create_organization(&owner, "team").await;
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
