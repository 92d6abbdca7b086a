use chatbot_backend::proto;
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{assert_code, backend_test, spawn_app, spawn_app_with, violated_fields};

fn create_request(name: &str, url: &str) -> proto::CreateChatbotRequest {
    proto::CreateChatbotRequest {
        owner_id: String::new(),
        name: name.into(),
        llm_endpoint_url: url.into(),
    }
}

backend_test! {
    async fn create_chatbot_defaults_the_owner_to_the_caller() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app
            .chatbots(Some(&user.token))
            .create_chatbot(create_request(
                "  Support Bot ",
                "https://llm.example.com/v1",
            ))
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        assert_eq!(chatbot.owner_id, user.id);
        assert_eq!(chatbot.name, "Support Bot");
        assert_eq!(chatbot.llm_endpoint_url, "https://llm.example.com/v1");

        let got = app
            .chatbots(Some(&user.token))
            .get_chatbot(proto::GetChatbotRequest {
                id: chatbot.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        assert_eq!(got, chatbot);
    }
}

backend_test! {
    async fn create_chatbot_rejects_bad_names_and_unsafe_endpoints() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let cases = [
            ("", "https://llm.example.com", "name"),
            (&"n".repeat(101) as &str, "https://llm.example.com", "name"),
            ("ok", "not a url", "llm_endpoint_url"),
            ("ok", "ftp://llm.example.com", "llm_endpoint_url"),
            (
                "ok",
                "https://user:secret@llm.example.com",
                "llm_endpoint_url",
            ),
            ("ok", "http://127.0.0.1:11434/api", "llm_endpoint_url"),
            (
                "ok",
                "http://169.254.169.254/latest/meta-data",
                "llm_endpoint_url",
            ),
            ("ok", "http://10.0.0.7/", "llm_endpoint_url"),
            ("ok", "http://[::1]/", "llm_endpoint_url"),
        ];
        for (name, url, field) in cases {
            let status = assert_code(
                app.chatbots(Some(&user.token))
                    .create_chatbot(create_request(name, url))
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), [field], "{name:?} {url:?}");
            assert!(
                !status.message().contains("secret"),
                "the message must not echo credentials"
            );
        }
    }
}

backend_test! {
    async fn private_endpoints_are_accepted_when_configuration_allows_them() {
        let app = spawn_app_with(&["--allow-private-llm-endpoints", "true"]).await;
        let user = app.new_user().await;
        app.chatbots(Some(&user.token))
            .create_chatbot(create_request("local", "http://127.0.0.1:11434/api/chat"))
            .await
            .unwrap();
    }
}

backend_test! {
    async fn an_admin_can_create_a_chatbot_for_another_user_but_not_for_a_missing_one() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let admin = app.new_admin().await;
        let mut request = create_request("for user", "https://llm.example.com");
        request.owner_id = user.id.clone();
        let chatbot = app
            .chatbots(Some(&admin.token))
            .create_chatbot(request.clone())
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        assert_eq!(chatbot.owner_id, user.id);

        request.owner_id = uuid::Uuid::new_v4().to_string();
        assert_code(
            app.chatbots(Some(&admin.token))
                .create_chatbot(request)
                .await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn list_chatbots_pages_in_creation_order_with_tokens_bound_to_the_filter() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let other = app.new_user().await;
        let admin = app.new_admin().await;
        let mut mine = Vec::new();
        for i in 0..5 {
            mine.push(app.create_chatbot(&user, &format!("bot {i}")).await.id);
        }
        app.create_chatbot(&other, "not mine").await;

        let list = |token: &str, owner_id: &str, page_token: String| {
            let mut client = app.chatbots(Some(token));
            let request = proto::ListChatbotsRequest {
                page_size: 2,
                page_token,
                owner_id: owner_id.into(),
            };
            async move { client.list_chatbots(request).await }
        };

        // Without a filter, a user sees exactly their own chatbots.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(&user.token, "", token).await.unwrap().into_inner();
            seen.extend(page.chatbots.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, mine);

        // A token issued for one filter is refused with another.
        let first = list(&admin.token, &user.id, String::new())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.chatbots.len(), 2);
        let status = assert_code(
            list(&admin.token, "", first.next_page_token).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["page_token"]);

        // An admin without a filter sees everyone's.
        let all = app
            .chatbots(Some(&admin.token))
            .list_chatbots(proto::ListChatbotsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.chatbots.len(), 6);
        assert!(all.next_page_token.is_empty());
    }
}

backend_test! {
    async fn update_chatbot_changes_only_the_masked_fields() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "old name").await;
        let update = |paths: &[&str], name: &str, url: &str| {
            let mut client = app.chatbots(Some(&user.token));
            let request = proto::UpdateChatbotRequest {
                chatbot: Some(proto::Chatbot {
                    id: chatbot.id.clone(),
                    name: name.into(),
                    llm_endpoint_url: url.into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            };
            async move { client.update_chatbot(request).await }
        };
        let updated = update(&["name"], "new name", "ignored://")
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        assert_eq!(updated.name, "new name");
        assert_eq!(updated.llm_endpoint_url, chatbot.llm_endpoint_url);

        let updated = update(&["llm_endpoint_url"], "", "https://other.example.com/v2")
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        assert_eq!(updated.name, "new name");
        assert_eq!(updated.llm_endpoint_url, "https://other.example.com/v2");

        for bad in [&["owner_id"][..], &["colour"], &[]] {
            let status = assert_code(
                update(bad, "x", "https://x.example.com").await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["update_mask"], "{bad:?}");
        }
        let status = assert_code(update(&["name"], "", "").await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["chatbot.name"]);
    }
}

backend_test! {
    async fn delete_chatbot_deletes_it_and_its_keys() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "short-lived").await;
        let key = app.create_api_key(&user, &chatbot.id).await;
        app.chatbots(Some(&user.token))
            .delete_chatbot(proto::DeleteChatbotRequest {
                id: chatbot.id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            app.verify(&key.key).await.reason(),
            proto::VerifyApiKeyReason::NotFound
        );
        // Gone: the owner can no longer tell it from someone else's.
        assert_code(
            app.chatbots(Some(&user.token))
                .get_chatbot(proto::GetChatbotRequest {
                    id: chatbot.id.clone(),
                })
                .await,
            Code::PermissionDenied,
        );
        let admin = app.new_admin().await;
        assert_code(
            app.chatbots(Some(&admin.token))
                .delete_chatbot(proto::DeleteChatbotRequest { id: chatbot.id })
                .await,
            Code::NotFound,
        );
    }
}
