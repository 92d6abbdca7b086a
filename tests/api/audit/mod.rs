//! The audit log (issue 16): each change to a chatbot or an API key leaves
//! exactly one event, written in the change's transaction, with its actor,
//! target, request and client; ListAuditEvents shows them newest first, to
//! whom they belong.

use chatbot_backend::proto::{self, AuditOutcome};
use tonic::Code;

use crate::helpers::{
    api_key_update, assert_code, backend_test, chatbot_update, clock_hour, email_change,
    password_change, repeats_by_attempt, role_change, spawn_app, spawn_app_with, violated_fields,
    TestApp, TestUser,
};

mod refusals_and_retention;

async fn events(
    app: &TestApp,
    who: &TestUser,
    request: proto::ListAuditEventsRequest,
) -> Vec<proto::AuditEvent> {
    app.audit(Some(&who.token))
        .list_audit_events(request)
        .await
        .expect("ListAuditEvents")
        .into_inner()
        .audit_events
}

/// The changes recorded (leaving out refused attempts).
async fn changes_recorded(app: &TestApp, admin: &TestUser) -> usize {
    all_events(app, admin)
        .await
        .iter()
        .filter(|event| event.outcome() == AuditOutcome::Succeeded)
        .count()
}

async fn all_events(app: &TestApp, who: &TestUser) -> Vec<proto::AuditEvent> {
    events(
        app,
        who,
        proto::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
}

fn actions(events: &[proto::AuditEvent]) -> Vec<&str> {
    events.iter().map(|event| event.action.as_str()).collect()
}

/// The events on chatbots and keys (leaving out the sign-ups and logins
/// of the test's users).
fn on_chatbots_and_keys(mut events: Vec<proto::AuditEvent>) -> Vec<proto::AuditEvent> {
    events.retain(|event| {
        let kind = &event.target.as_ref().unwrap().r#type;
        kind == "chatbot" || kind == "api_key"
    });
    events
}

backend_test! {
    async fn each_change_leaves_one_event_with_its_actor_target_and_request() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let admin = app.new_admin().await;

        // CreateChatbot with a request id of the client's choosing.
        let mut create = tonic::Request::new(proto::CreateChatbotRequest {
            name: "Audited".into(),
            llm_endpoint_url: "https://llm.example.com/v1".into(),
            ..Default::default()
        });
        create.metadata_mut().insert("x-request-id", "audit-create-1".parse().unwrap());
        let chatbot = app.create_chatbot_from(&owner.token, create).await.unwrap();
        let moved = proto::Chatbot {
            id: chatbot.id.clone(),
            llm_endpoint_url: "https://llm.example.com/v2".into(),
            ..Default::default()
        };
        app.chatbots(Some(&owner.token))
            .update_chatbot(chatbot_update(moved, &["llm_endpoint_url"]))
            .await
            .unwrap();
        let created = app.create_api_key(&owner, &chatbot.id).await;
        let key_id = created.api_key.as_ref().unwrap().id;
        app.api_keys(Some(&owner.token))
            .update_api_key(api_key_update(
                proto::ApiKey { id: key_id, display_name: "renamed".into(), ..Default::default() },
                &["display_name"],
            ))
            .await
            .unwrap();
        let rotated = app
            .api_keys(Some(&owner.token))
            .rotate_api_key(proto::RotateApiKeyRequest { id: key_id, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let replacement_id = rotated.api_key.as_ref().unwrap().id;
        // Revoked twice: the second changes nothing and records nothing.
        for _ in 0..2 {
            app.revoke_api_key(&owner.token, replacement_id).await.unwrap();
        }
        // An admin deletes the owner's key.
        app.delete_api_key(&admin.token, key_id).await.unwrap();
        app.delete_chatbot(&owner.token, &chatbot.id).await.unwrap();

        let logged = on_chatbots_and_keys(all_events(&app, &admin).await);
        assert_eq!(
            actions(&logged),
            [
                "chatbot.delete",
                "api_key.delete",
                "api_key.revoke",
                "api_key.rotate",
                "api_key.update",
                "api_key.create",
                "chatbot.update",
                "chatbot.create",
            ],
            "newest first, one per change"
        );
        assert!(logged.windows(2).all(|pair| pair[0].id > pair[1].id));
        for event in &logged {
            let actor = event.actor.as_ref().unwrap();
            let target = event.target.as_ref().unwrap();
            assert_eq!(event.outcome(), AuditOutcome::Succeeded);
            assert_eq!(target.owner_id, owner.id, "{event:?}");
            assert_eq!(event.client_address, "127.0.0.1", "{event:?}");
            assert!(!event.request_id.is_empty(), "{event:?}");
            let (who, email) = if event.action == "api_key.delete" {
                (&admin.id, &admin.email)
            } else {
                (&owner.id, &owner.email)
            };
            assert_eq!((&actor.user_id, &actor.email), (who, email), "{event:?}");
            let expected_target = if event.action.starts_with("chatbot.") {
                ("chatbot", chatbot.id.clone())
            } else if event.action == "api_key.revoke" {
                ("api_key", replacement_id.to_string())
            } else {
                ("api_key", key_id.to_string())
            };
            assert_eq!((target.r#type.as_str(), target.id.clone()), expected_target, "{event:?}");
        }
        let by_action = |action: &str| logged.iter().find(|e| e.action == action).unwrap();
        assert_eq!(by_action("chatbot.create").request_id, "audit-create-1");
        assert_eq!(
            by_action("chatbot.update").changes,
            [proto::AuditChange {
                field: "llm_endpoint_url".into(),
                old_value: "https://llm.example.com/v1".into(),
                new_value: "https://llm.example.com/v2".into(),
            }]
        );
        assert_eq!(by_action("api_key.update").changes[0].field, "display_name");
        assert_eq!(
            by_action("api_key.rotate").changes[0].new_value,
            replacement_id.to_string()
        );
        // No secret: neither key's plaintext appears anywhere in the log.
        let text = format!("{logged:?}");
        assert!(!text.contains(&created.key) && !text.contains(&rotated.key));
    }
}

backend_test! {
    async fn a_refused_or_failed_change_leaves_no_event() {
        let app = spawn_app_with(&["--max-active-api-keys-per-chatbot", "1"]).await;
        let owner = app.new_user().await;
        let admin = app.new_admin().await;
        let chatbot = app.create_chatbot(&owner, "limited").await;
        app.create_api_key(&owner, &chatbot.id).await;
        let stranger = app.new_user().await;
        let before = changes_recorded(&app, &admin).await;

        // Over the active-key limit: the transaction rolls back.
        assert_code(
            app.api_keys(Some(&owner.token))
                .create_api_key(proto::CreateApiKeyRequest {
                    chatbot_id: chatbot.id.clone(),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
        );
        // Someone else's chatbot: refused before any change.
        assert_code(
            app.delete_chatbot(&stranger.token, &chatbot.id).await,
            Code::PermissionDenied,
        );
        // A chatbot for an owner that does not exist.
        let orphan = proto::CreateChatbotRequest {
            name: "orphan".into(),
            llm_endpoint_url: "https://llm.example.com".into(),
            owner_id: "0190e4d2-0000-7000-8000-000000000000".into(),
            organization_id: String::new(),
            request_id: String::new(),
        };
        assert_code(app.create_chatbot_from(&admin.token, orphan).await, Code::NotFound);
        assert_eq!(changes_recorded(&app, &admin).await, before);
    }
}

backend_test! {
    async fn users_see_the_events_on_what_they_own_and_admins_see_all() {
        let app = spawn_app().await;
        let alice = app.new_user().await;
        let bob = app.new_user().await;
        let admin = app.new_admin().await;
        let alices = app.create_chatbot(&alice, "alice's").await;
        let bobs = app.create_chatbot(&bob, "bob's").await;
        // An admin's change to Alice's chatbot is on Alice's chatbot.
        let renamed = proto::Chatbot {
            id: alices.id.clone(),
            name: "renamed by an admin".into(),
            ..Default::default()
        };
        app.chatbots(Some(&admin.token))
            .update_chatbot(chatbot_update(renamed, &["name"]))
            .await
            .unwrap();

        let seen_by_alice = on_chatbots_and_keys(all_events(&app, &alice).await);
        assert_eq!(actions(&seen_by_alice), ["chatbot.update", "chatbot.create"]);
        assert!(seen_by_alice
            .iter()
            .all(|event| event.target.as_ref().unwrap().id == alices.id));
        assert_eq!(seen_by_alice[0].actor.as_ref().unwrap().user_id, admin.id);
        let seen_by_bob = on_chatbots_and_keys(all_events(&app, &bob).await);
        assert_eq!(actions(&seen_by_bob), ["chatbot.create"]);
        assert_eq!(seen_by_bob[0].target.as_ref().unwrap().id, bobs.id);
        // Filtering for someone else's target finds nothing.
        let asked = events(&app, &bob, proto::ListAuditEventsRequest {
            target_type: "chatbot".into(),
            target_id: alices.id.clone(),
            ..Default::default()
        })
        .await;
        assert!(asked.is_empty());
        assert_eq!(on_chatbots_and_keys(all_events(&app, &admin).await).len(), 3);
        // Each sees their own account's events, and only theirs.
        let alice_account: Vec<_> = all_events(&app, &alice)
            .await
            .into_iter()
            .filter(|event| event.target.as_ref().unwrap().r#type == "user")
            .collect();
        assert_eq!(actions(&alice_account), ["session.login", "user.create"]);
        assert!(alice_account.iter().all(|e| e.target.as_ref().unwrap().id == alice.id));
    }
}

backend_test! {
    async fn events_filter_and_page_newest_first() {
        let app = spawn_app().await;
        let owner = app.new_user().await;
        let admin = app.new_admin().await;
        let chatbot = app.create_chatbot(&owner, "paged").await;
        let mut key_ids = Vec::new();
        for _ in 0..3 {
            key_ids.push(app.create_api_key(&owner, &chatbot.id).await.api_key.unwrap().id);
        }
        let start = chrono::Utc::now();
        app.revoke_api_key(&admin.token, key_ids[0]).await.unwrap();

        let only = |request: proto::ListAuditEventsRequest| events(&app, &owner, request);
        let created = only(proto::ListAuditEventsRequest {
            action: "api_key.create".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(created.len(), 3);
        let by_admin = only(proto::ListAuditEventsRequest {
            actor_user_id: admin.id.clone(),
            ..Default::default()
        })
        .await;
        assert_eq!(actions(&by_admin), ["api_key.revoke"]);
        let on_first_key = only(proto::ListAuditEventsRequest {
            target_type: "api_key".into(),
            target_id: key_ids[0].to_string(),
            ..Default::default()
        })
        .await;
        assert_eq!(actions(&on_first_key), ["api_key.revoke", "api_key.create"]);
        let since = only(proto::ListAuditEventsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: start.timestamp(),
                nanos: 0,
            }),
            action: "api_key.revoke".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(since.len(), 1);

        // Pages of two: every event once, newest first.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .audit(Some(&owner.token))
                .list_audit_events(proto::ListAuditEventsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.audit_events.into_iter().map(|event| event.id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        // Chatbot, three keys and a revocation, and the owner's sign-up and
        // login.
        assert_eq!(seen.len(), 7);
        assert!(seen.windows(2).all(|pair| pair[0] > pair[1]));

        let status = assert_code(
            app.audit(Some(&owner.token))
                .list_audit_events(proto::ListAuditEventsRequest {
                    action: "api_key.explode".into(),
                    actor_user_id: "not-a-uuid".into(),
                    target_id: "1".into(),
                    page_size: -1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violated_fields(&status),
            ["action", "actor_user_id", "target_type", "page_size"]
        );
    }
}

backend_test! {
    async fn account_and_session_changes_are_recorded_with_their_actor() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let user = app.new_user().await;
        // Their own password change, then a new login.
        app.users(Some(&user.token))
            .update_user(password_change(&user.id, &user.password, "a-brand-new-password"))
            .await
            .unwrap();
        let login = app.login(&user.email, "a-brand-new-password").await.unwrap();
        // A refresh token used twice ends the session.
        let refreshed = app.refresh(&login.refresh_token).await.unwrap();
        assert_code(
            app.refresh(&login.refresh_token).await,
            Code::Unauthenticated,
        );
        let again = app.login(&user.email, "a-brand-new-password").await.unwrap();
        app.logout(&again.access_token, &again.refresh_token).await.unwrap();
        // An admin makes them an admin, then deletes them.
        app.users(Some(&admin.token))
            .update_user(role_change(&user.id, proto::UserRole::Admin))
            .await
            .unwrap();
        app.users(Some(&admin.token))
            .delete_user(proto::DeleteUserRequest { id: user.id.clone() })
            .await
            .unwrap();

        let on_user = events(&app, &admin, proto::ListAuditEventsRequest {
            target_type: "user".into(),
            target_id: user.id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(
            actions(&on_user),
            [
                "user.delete",
                "user.role_change",
                "session.logout",
                "session.login",
                "session.refresh_reuse",
                "session.login",
                "user.password_change",
                "session.login",
                "user.create",
            ]
        );
        let actor_of = |event: &proto::AuditEvent| event.actor.clone().unwrap().user_id;
        for event in &on_user {
            let expected = match event.action.as_str() {
                "user.delete" | "user.role_change" => admin.id.clone(),
                // Whoever presented a used refresh token is not known.
                "session.refresh_reuse" => String::new(),
                _ => user.id.clone(),
            };
            assert_eq!(actor_of(event), expected, "{event:?}");
            assert_eq!(event.target.as_ref().unwrap().owner_id, user.id);
        }
        assert_eq!(
            on_user[1].changes,
            [proto::AuditChange {
                field: "role".into(),
                old_value: "user".into(),
                new_value: "admin".into(),
            }]
        );
        // No password, token or hash appears anywhere.
        let text = format!("{on_user:?}");
        for secret in [
            "a-brand-new-password",
            user.password.as_str(),
            login.refresh_token.as_str(),
            refreshed.refresh_token.as_str(),
            again.access_token.as_str(),
        ] {
            assert!(!text.contains(secret));
        }
    }
}

/// Runs the operator command `args` on `app`'s database, feeding it
/// `stdin`; it must succeed.
async fn run_command(app: &TestApp, args: &[&str], stdin: &str) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let (ok, said) = crate::helpers::run_command(&app.database_url, &args, stdin).await;
    assert!(ok, "{args:?} failed: {said}");
}

backend_test! {
    async fn operator_commands_are_recorded_with_the_command_as_actor() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let user = app.new_user().await;
        // A new admin, then an existing user promoted.
        run_command(&app, &["create-admin", "--email", "ops@example.com"], "a-strong-password\n")
            .await;
        run_command(&app, &["create-admin", "--email", &user.email], "another-strong-password\n")
            .await;
        run_command(&app, &["seed"], "").await;
        let promoted = format!("create-admin --email {}", user.email);

        let by_commands: Vec<_> = all_events(&app, &admin)
            .await
            .into_iter()
            .filter(|event| !event.actor.as_ref().unwrap().command.is_empty())
            .collect();
        let summary: Vec<(&str, &str)> = by_commands
            .iter()
            .map(|event| (event.actor.as_ref().unwrap().command.as_str(), event.action.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("seed", "chatbot.create"),
                ("seed", "chatbot.create"),
                ("seed", "user.create"),
                ("seed", "user.create"),
                (promoted.as_str(), "user.password_change"),
                (promoted.as_str(), "user.role_change"),
                ("create-admin --email ops@example.com", "user.create"),
            ]
        );
        for event in &by_commands {
            let actor = event.actor.as_ref().unwrap();
            assert!(actor.user_id.is_empty() && event.request_id.is_empty(), "{event:?}");
        }
        assert_eq!(by_commands[4].target.as_ref().unwrap().id, user.id);
        assert!(!format!("{by_commands:?}").contains("strong-password"));
    }
}
