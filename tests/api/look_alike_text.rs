//! Text that looks the same is stored the same, and text that hides or
//! reorders characters is refused: emails are NFC-normalised before the
//! uniqueness check, display names refuse bidi controls, zero-width
//! characters and the BOM.

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, chatbot_update, spawn_app, violated_fields, PASSWORD,
};

const PRECOMPOSED: &str = "jos\u{e9}@example.com";
const DECOMPOSED: &str = "jose\u{301}@example.com";

/// Names that look like a harmless label but carry a hidden or reordering
/// character, one of each kind.
const HIDDEN_CHARACTER_NAMES: &[&str] = &[
    "Support\u{202E}txt.exe",     // right-to-left override
    "Support\u{2066}bot\u{2069}", // isolates
    "Support\u{200F}",            // right-to-left mark
    "Sup\u{200B}port",            // zero-width space
    "Sup\u{200D}port",            // zero-width joiner between letters
    "Sup\u{2060}port",            // word joiner
    "\u{FEFF}Support",            // byte order mark
    "Sup\u{00AD}port",            // soft hyphen
    "\u{3164}",                   // Hangul filler, a blank-looking name
    "Support\u{E0041}",           // tag character
    "Support\u{F8FF}",            // private use
];

backend_test! {
    async fn create_user_with_a_decomposed_spelling_of_a_taken_email_returns_already_exists() {
        let app = spawn_app().await;
        let user = app.sign_up(PRECOMPOSED, PASSWORD).await.unwrap();
        assert_eq!(user.email, PRECOMPOSED);
        for spelling in [DECOMPOSED, "JOSE\u{301}@EXAMPLE.COM", "jos\u{e9}@EXAMPLE.com"] {
            assert_code(app.sign_up(spelling, PASSWORD).await, Code::AlreadyExists);
        }
    }
}

backend_test! {
    async fn an_email_signed_up_decomposed_is_stored_precomposed_and_logs_in_either_way() {
        let app = spawn_app().await;
        let user = app.sign_up(DECOMPOSED, PASSWORD).await.unwrap();
        assert_eq!(user.email, PRECOMPOSED);
        for spelling in [PRECOMPOSED, DECOMPOSED] {
            let login = app.login(spelling, PASSWORD).await.unwrap();
            assert!(!login.access_token.is_empty(), "{spelling:?}");
        }
    }
}

backend_test! {
    async fn punycode_and_unicode_spellings_of_an_email_domain_are_one_account() {
        let app = spawn_app().await;
        let user = app.sign_up("ada@xn--bcher-kva.de", PASSWORD).await.unwrap();
        assert_eq!(user.email, "ada@b\u{fc}cher.de");
        assert_code(
            app.sign_up("ada@bu\u{308}cher.de", PASSWORD).await,
            Code::AlreadyExists,
        );
        app.login("Ada@B\u{dc}CHER.de", PASSWORD).await.unwrap();
    }
}

backend_test! {
    async fn create_user_refuses_invisible_characters_in_the_email() {
        let app = spawn_app().await;
        for email in [
            "ada\u{200B}@example.com",
            "ada\u{200D}@example.com",
            "\u{FEFF}ada@example.com",
            "ada\u{202E}@example.com",
            "ada\u{00AD}@example.com",
        ] {
            let status = assert_code(app.sign_up(email, PASSWORD).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["email"], "{email:?}");
        }
    }
}

backend_test! {
    async fn create_chatbot_refuses_hidden_characters_in_the_name_and_stores_nfc() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for name in HIDDEN_CHARACTER_NAMES {
            let request = proto::CreateChatbotRequest {
                name: (*name).into(),
                llm_endpoint_url: "https://llm.example.com/v1".into(),
                ..Default::default()
            };
            let status = assert_code(
                app.create_chatbot_from(&user.token, request).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["name"], "{name:?}");
        }
        let chatbot = app.create_chatbot(&user, "Cafe\u{301} \u{1F916}").await;
        assert_eq!(chatbot.name, "Caf\u{e9} \u{1F916}");
    }
}

backend_test! {
    async fn update_chatbot_refuses_hidden_characters_in_the_name_and_keeps_the_old_one() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "Support").await;
        let rename = |name: &str| {
            let mut client = app.chatbots(Some(&user.token));
            let renamed = proto::Chatbot {
                id: chatbot.id.clone(),
                name: name.into(),
                ..Default::default()
            };
            let request = chatbot_update(renamed, &["name"]);
            async move { client.update_chatbot(request).await }
        };
        for name in HIDDEN_CHARACTER_NAMES {
            let status = assert_code(rename(name).await, Code::InvalidArgument);
            assert_eq!(violated_fields(&status), ["chatbot.name"], "{name:?}");
        }
        let stored = app.read_chatbot(&user.token, &chatbot.id).await;
        assert_eq!(stored.name, "Support");

        let renamed = rename("Cafe\u{301}").await.unwrap().into_inner().chatbot.unwrap();
        assert_eq!(renamed.name, "Caf\u{e9}");
    }
}

/// The API key display name shares the chatbot name's parser
/// (`DisplayText`).
async fn api_key_display_names_refuse_hidden_characters_and_are_stored_nfc() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chatbot = app.create_chatbot(&user, "bot").await;
    let create = |display_name: &str| {
        let mut client = app.api_keys(Some(&user.token));
        let request = proto::CreateApiKeyRequest {
            chatbot_id: chatbot.id.clone(),
            display_name: display_name.into(),
            expire_time: None,
            ..Default::default()
        };
        async move { client.create_api_key(request).await }
    };
    for name in HIDDEN_CHARACTER_NAMES {
        let status = assert_code(create(name).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["display_name"], "{name:?}");
    }
    let key = create("Cafe\u{301}").await.unwrap().into_inner();
    assert_eq!(key.api_key.unwrap().display_name, "Caf\u{e9}");
    // Still optional.
    let unnamed = create("").await.unwrap().into_inner();
    assert_eq!(unnamed.api_key.unwrap().display_name, "");
}

backend_test! {
    async fn create_api_key_refuses_hidden_characters_in_the_display_name_and_stores_nfc() {
        api_key_display_names_refuse_hidden_characters_and_are_stored_nfc().await
    }
}
