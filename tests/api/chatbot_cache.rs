//! GetChatbot's cache: a chatbot read again costs no query, and no change
//! to it is hidden: at once on the replica that made it, within a second on
//! another.

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{backend_test, changed_within_a_second, chatbot_update, spawn_app, TestApp};

backend_test! {
    async fn a_chatbot_read_again_costs_no_query_and_its_changes_show_at_once() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let owner = app.new_user().await;
        let admin = app.new_admin().await;
        let chatbot = app.create_chatbot(&owner, "first").await;

        let before = app.chatbot_reads.reads();
        for _ in 0..3 {
            let read = app.get_chatbot(&owner.token, &chatbot.id).await.unwrap();
            assert_eq!(read.name, "first");
        }
        assert_eq!(app.chatbot_reads.reads() - before, 1, "read once, then from the cache");

        // Whoever may not see it is refused whatever is cached.
        let stranger = app.new_user().await;
        let refused = app.get_chatbot(&stranger.token, &chatbot.id).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);

        let changes = proto::Chatbot {
            id: chatbot.id.clone(),
            name: "second".into(),
            llm_endpoint_url: "https://llm.example.com/v2".into(),
            ..Default::default()
        };
        let updated = app
            .chatbots(Some(&owner.token))
            .update_chatbot(chatbot_update(changes, &["name", "llm_endpoint_url"]))
            .await
            .unwrap()
            .into_inner()
            .chatbot
            .unwrap();
        let read = app.get_chatbot(&owner.token, &chatbot.id).await.unwrap();
        assert_eq!(read, updated);
        assert_eq!(read.llm_endpoint_url, "https://llm.example.com/v2");

        app.delete_chatbot(&owner.token, &chatbot.id).await.unwrap();
        let gone = app.get_chatbot(&admin.token, &chatbot.id).await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    }
}

backend_test! {
    async fn a_team_chatbot_read_after_its_owner_is_deleted_names_the_new_owner() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let founder = app.new_user().await;
        let team = app.create_organization(&founder, "team").await;
        let heir = app.new_member(&founder, &team.id, proto::OrganizationRole::Owner).await;
        let request = proto::CreateChatbotRequest {
            name: "shared".into(),
            llm_endpoint_url: "https://llm.example.com/v1".into(),
            organization_id: team.id.clone(),
            ..Default::default()
        };
        let chatbot = app.create_chatbot_from(&founder.token, request).await.unwrap();
        #[allow(deprecated)]
        let cached_owner = app.get_chatbot(&heir.token, &chatbot.id).await.unwrap().owner_id;
        assert_eq!(cached_owner, founder.id);

        app.users(Some(&founder.token))
            .delete_user(proto::DeleteUserRequest { id: founder.id.clone() })
            .await
            .unwrap();
        #[allow(deprecated)]
        let owner = app.get_chatbot(&heir.token, &chatbot.id).await.unwrap().owner_id;
        assert_eq!(owner, heir.id, "handed over, not served from before");
    }
}

/// Another replica's cached chatbot follows a change within a second, as
/// its cached keys do.
#[tokio::test(flavor = "multi_thread")]
async fn a_chatbot_changed_on_one_replica_is_read_changed_on_the_other_within_a_second_on_postgres()
{
    let app: TestApp = spawn_app().await;
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "first").await;
    let other = app.spawn_replica_process(&[]).await;
    let read = || async { other.get_chatbot(&owner.token, &chatbot.id).await };
    for _ in 0..2 {
        assert_eq!(read().await.unwrap().name, "first");
    }

    let changes = proto::Chatbot {
        id: chatbot.id.clone(),
        name: "second".into(),
        ..Default::default()
    };
    app.chatbots(Some(&owner.token))
        .update_chatbot(chatbot_update(changes, &["name"]))
        .await
        .unwrap();
    let renamed = |read: &Result<proto::Chatbot, tonic::Status>| {
        read.as_ref().is_ok_and(|chatbot| chatbot.name == "second")
    };
    let _ = changed_within_a_second(read, renamed).await;

    app.delete_chatbot(&owner.token, &chatbot.id).await.unwrap();
    let _ = changed_within_a_second(read, Result::is_err).await;
}
