//! GetChatbot's cache and ListChatbots' pages: a chatbot read or a page
//! listed again costs no query, and no change is hidden: a chatbot's at once
//! on the replica that made it and within a second on another, a list's at
//! once on every replica.

use std::time::Duration;

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    backend_test, changed_within_a_second, chatbot_update, metric_value, scrape, spawn_app,
    spawn_app_with, TcpProxy, TestApp,
};

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

/// The names on a page of `token`'s chatbots, as `clients` lists them.
async fn listed_names(clients: &crate::helpers::Clients, token: &str) -> Vec<String> {
    let page = clients
        .chatbots(Some(token))
        .list_chatbots(proto::ListChatbotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    page.chatbots
        .into_iter()
        .map(|chatbot| chatbot.name)
        .collect()
}

backend_test! {
    async fn a_page_listed_again_costs_no_query_on_postgres_and_every_change_shows_at_once() {
        let app = spawn_app_with(&["--metrics-addr", "127.0.0.1:0"]).await;
        app.wait_for_api_key_cache().await;
        let founder = app.new_user().await;
        let team = app.create_organization(&founder, "team").await;
        let member = app.new_member(&founder, &team.id, proto::OrganizationRole::Viewer).await;
        let create = |name: &str| proto::CreateChatbotRequest {
            name: name.into(),
            llm_endpoint_url: "https://llm.example.com/v1".into(),
            organization_id: team.id.clone(),
            ..Default::default()
        };
        let first = app.create_chatbot_from(&founder.token, create("first")).await.unwrap();

        let hits = r#"cache_lookups_total{cache="chatbot_pages",result="hit"}"#;
        let addr = app.metrics_addr.expect("metrics enabled");
        let before = metric_value(&scrape(addr).await, hits);
        for _ in 0..3 {
            assert_eq!(listed_names(&app, &member.token).await, ["first"]);
        }
        let cached = metric_value(&scrape(addr).await, hits) - before;
        match app.database_url.starts_with("postgres") {
            true => assert_eq!(cached, 2.0, "read once, then from the cache"),
            false => assert_eq!(cached, 0.0, "a SQLite file's lists are read each time"),
        }

        // Every change shows in the next list, cached or not.
        app.create_chatbot_from(&founder.token, create("second")).await.unwrap();
        assert_eq!(listed_names(&app, &member.token).await, ["first", "second"]);
        let changes = proto::Chatbot {
            id: first.id.clone(),
            name: "renamed".into(),
            ..Default::default()
        };
        app.chatbots(Some(&founder.token))
            .update_chatbot(chatbot_update(changes, &["name"]))
            .await
            .unwrap();
        assert_eq!(listed_names(&app, &member.token).await, ["renamed", "second"]);
        app.delete_chatbot(&founder.token, &first.id).await.unwrap();
        assert_eq!(listed_names(&app, &member.token).await, ["second"]);
        app.organizations(Some(&founder.token))
            .remove_member(proto::RemoveMemberRequest {
                organization_id: team.id.clone(),
                user_id: member.id.clone(),
            })
            .await
            .unwrap();
        assert!(listed_names(&app, &member.token).await.is_empty(), "no longer a member");
    }
}

backend_test! {
    async fn a_service_accounts_list_with_and_without_its_organization_named_pages_on_with_its_own_token() {
        let app = spawn_app().await;
        app.wait_for_api_key_cache().await;
        let founder = app.new_user().await;
        let team = app.create_organization(&founder, "team").await;
        for name in ["a", "b", "c"] {
            let request = proto::CreateChatbotRequest {
                name: name.into(),
                llm_endpoint_url: "https://llm.example.com/v1".into(),
                organization_id: team.id.clone(),
                ..Default::default()
            };
            app.create_chatbot_from(&founder.token, request).await.unwrap();
        }
        let account = app.create_service_account(&founder, &team.id, proto::OrganizationRole::Viewer).await;
        // Its own organization, named or not: the same rows, but each
        // request's next token is bound to the filter as it was asked.
        let list = |organization_id: &str, page_token: String| {
            let mut client = app.chatbots(Some(&account.token));
            let request = proto::ListChatbotsRequest {
                organization_id: organization_id.into(),
                page_size: 2,
                page_token,
                ..Default::default()
            };
            async move { client.list_chatbots(request).await.map(|page| page.into_inner()) }
        };
        for first in [&team.id[..], ""] {
            let then = if first.is_empty() { &team.id[..] } else { "" };
            // Listed first by the one, then by the other, whose page would
            // be the first's if they shared it.
            list(first, String::new()).await.unwrap();
            for organization_id in [then, first] {
                let page = list(organization_id, String::new()).await.unwrap();
                assert_eq!(page.chatbots.len(), 2);
                let rest = list(organization_id, page.next_page_token)
                    .await
                    .unwrap_or_else(|refused| panic!("{organization_id:?}'s own token: {refused:?}"));
                let names: Vec<_> = rest.chatbots.into_iter().map(|chatbot| chatbot.name).collect();
                assert_eq!(names, ["c"]);
            }
        }
    }
}

/// A chatbot created through one replica is in the very next list through
/// another, whose page from before the create was cached, though the
/// other's notifications arrive late (its listener behind a slow network)
/// and while its listener hears nothing at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_chatbot_created_on_one_replica_is_listed_at_once_on_the_other_on_postgres() {
    let app: TestApp = spawn_app().await;
    let owner = app.new_user().await;
    app.create_chatbot(&owner, "bot 0").await;
    let proxy = TcpProxy::start(app.database_postgres_addr()).await;
    let listen_url = app.database_url_via(proxy.addr);
    let other = app
        .spawn_replica_process(&[("DATABASE_LISTEN_URL", &listen_url)])
        .await;
    proxy.delay(Duration::from_millis(300));
    let mut created = 1;
    let mut create_then_list = async || {
        // Listed twice: the second answer comes from the cache.
        for _ in 0..2 {
            assert_eq!(listed_names(&other, &owner.token).await.len(), created);
        }
        app.create_chatbot(&owner, &format!("bot {created}")).await;
        created += 1;
        let names = listed_names(&other, &owner.token).await;
        assert_eq!(
            names.len(),
            created,
            "bot {} missing from {names:?}",
            created - 1
        );
    };
    for _ in 0..5 {
        create_then_list().await;
    }
    proxy.restore();
    for fault in [TcpProxy::silence, TcpProxy::garble, TcpProxy::cut] {
        fault(&proxy);
        for _ in 0..2 {
            create_then_list().await;
        }
        proxy.restore();
    }
}
