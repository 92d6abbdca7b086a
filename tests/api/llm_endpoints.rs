//! `llm_endpoint_url` names a destination on the public internet: the
//! SSRF probes of the hardening issue, in the forms seen and their kin.

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, chatbot_update, spawn_app, spawn_app_with, violated_fields,
};

/// One URL per kind of probe: every textual form of an internal IPv4,
/// IPv4 inside IPv6, special-purpose ranges of both families, single-label
/// and internal names.
const NON_PUBLIC_URLS: &[&str] = &[
    // IPv4 embedded in IPv6, as the issue saw them.
    "http://[::ffff:0:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    // Special-purpose IPv4.
    "http://192.0.0.192/",
    "http://198.18.0.1/",
    "http://240.0.0.1/",
    "http://100.64.0.1/",
    "http://192.0.2.1/",
    "http://0.0.0.0:8080/",
    "http://255.255.255.255/",
    // Loopback in other spellings.
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://%31%32%37.0.0.1/",
    "http://１２７.０.０.１/",
    // Special-purpose IPv6.
    "http://[fe80::1]/",
    "http://[fec0::1]/",
    "http://[2001:db8::1]/",
    "http://[3fff::1]/",
    "http://[5f00::1]/",
    "http://[100::1]/",
    "http://[ff02::1]/",
    "http://[fe80::1%25eth0]/",
    // Internal names.
    "http://instance-data/latest/meta-data",
    "http://metadata/",
    "http://localhost./",
    "http://LOCALHOST/",
    "http://ｌｏｃａｌｈｏｓｔ/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL/",
    "http://kubernetes.default.svc/api",
    "http://kubernetes.default.svc.cluster.local/",
    "http://kubernetes.default/",
    "http://printer.local/",
    "http://router.home.arpa/",
    "http://app.localhost/",
];

fn create_request(url: &str) -> proto::CreateChatbotRequest {
    proto::CreateChatbotRequest {
        name: "bot".into(),
        llm_endpoint_url: url.into(),
        ..Default::default()
    }
}

fn update_request(id: &str, url: &str) -> proto::UpdateChatbotRequest {
    let moved = proto::Chatbot {
        id: id.into(),
        llm_endpoint_url: url.into(),
        ..Default::default()
    };
    chatbot_update(moved, &["llm_endpoint_url"])
}

backend_test! {
    async fn create_chatbot_refuses_non_public_llm_endpoints_in_every_form() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for url in NON_PUBLIC_URLS {
            let status = assert_code(
                app.create_chatbot_from(&user.token, create_request(url)).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["llm_endpoint_url"], "{url}");
        }
        let listed = app
            .chatbots(Some(&user.token))
            .list_chatbots(proto::ListChatbotsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.chatbots.is_empty(), "{:?}", listed.chatbots);
    }
}

backend_test! {
    async fn update_chatbot_refuses_non_public_llm_endpoints_and_keeps_the_old_one() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        for url in NON_PUBLIC_URLS {
            let status = assert_code(
                app.chatbots(Some(&user.token))
                    .update_chatbot(update_request(&chatbot.id, url))
                    .await,
                Code::InvalidArgument,
            );
            assert_eq!(
                violated_fields(&status),
                ["chatbot.llm_endpoint_url"],
                "{url}"
            );
        }
        let stored = app.read_chatbot(&user.token, &chatbot.id).await;
        assert_eq!(stored.llm_endpoint_url, chatbot.llm_endpoint_url);
    }
}

backend_test! {
    async fn public_llm_endpoints_in_any_form_are_accepted_and_stored_normalised() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for (url, stored) in [
            ("https://API.Example.com/v1", "https://api.example.com/v1"),
            ("https://bücher.de/v1", "https://xn--bcher-kva.de/v1"),
            ("http://8.8.8.8:8080/v1", "http://8.8.8.8:8080/v1"),
            ("http://[2606:4700:4700::1111]/", "http://[2606:4700:4700::1111]/"),
            ("http://[::ffff:8.8.8.8]/", "http://[::ffff:808:808]/"),
            ("http://[64:ff9b::808:808]/", "http://[64:ff9b::808:808]/"),
        ] {
            let chatbot = app
                .create_chatbot_from(&user.token, create_request(url))
                .await
                .unwrap_or_else(|status| panic!("{url}: {status:?}"));
            assert_eq!(chatbot.llm_endpoint_url, stored, "{url}");
        }
    }
}

backend_test! {
    async fn allowing_private_llm_endpoints_accepts_loopback_and_internal_names() {
        let app = spawn_app_with(&["--allow-private-llm-endpoints", "true"]).await;
        let user = app.new_user().await;
        let request = create_request("http://[::ffff:0:7f00:1]:11434/api");
        let chatbot = app.create_chatbot_from(&user.token, request).await.unwrap();
        for url in ["http://127.0.0.1:11434/api/chat", "http://ollama:11434/"] {
            let updated = app
                .chatbots(Some(&user.token))
                .update_chatbot(update_request(&chatbot.id, url))
                .await
                .unwrap_or_else(|status| panic!("{url}: {status:?}"))
                .into_inner()
                .chatbot
                .unwrap();
            assert_eq!(updated.llm_endpoint_url, url);
        }
        // Credentials stay refused: the setting is about destinations only.
        let status = assert_code(
            app.create_chatbot_from(&user.token, create_request("http://u:p@127.0.0.1/")).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), ["llm_endpoint_url"]);
    }
}
