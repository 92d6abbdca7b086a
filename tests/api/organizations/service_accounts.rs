//! Service accounts: working in their organization by their role and
//! nowhere else, expiring, revoked and deleted, audited by name, and
//! made-up tokens that cost nothing.

use chatbot_backend::domain::ServiceAccountToken;
use chatbot_backend::proto::{self, OrganizationRole as Role};
use tonic::Code;

use super::app_with_team;
use crate::helpers::{assert_code, backend_test, logs, spawn_app};

backend_test! {
    async fn a_service_account_works_in_its_organization_by_its_role_and_nowhere_else() {
        let (app, owner, team) = app_with_team("team").await;
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
