use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chatbot_backend::proto;
use jsonwebtoken::{encode, EncodingKey, Header};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{assert_code, backend_test, spawn_app, spawn_app_with, PASSWORD, SECRET_KEY};

/// The session an access token names (its `sid` claim), read without
/// verifying: for tests that sign tokens of their own in a real session.
pub fn session_of(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().expect("a sid claim").to_owned()
}

/// Forged and broken tokens for `user_id`, each of which must be refused.
pub fn bad_tokens(user_id: &str) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str, role: &str| {
        serde_json::json!({
            "sub": user_id, "role": role, "iat": now - 60, "exp": exp,
            "iss": "chatbot-backend", "aud": aud,
        })
    };
    let sign = |claims: &serde_json::Value, key: &str| {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let valid = sign(&claims(now + 600, "chatbot-backend", "user"), SECRET_KEY);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(claims(now + 600, "chatbot-backend", "admin").to_string());
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{forged_payload}.");
    vec![
        (
            "expired",
            sign(&claims(now - 3600, "chatbot-backend", "user"), SECRET_KEY),
        ),
        ("tampered", tampered),
        (
            "other key",
            sign(
                &claims(now + 600, "chatbot-backend", "admin"),
                "another-secret-key-also-32-bytes-long!!",
            ),
        ),
        ("alg none", alg_none),
        (
            "wrong audience",
            sign(&claims(now + 600, "someone-else", "user"), SECRET_KEY),
        ),
        ("garbage", "not.a.jwt".into()),
    ]
}

backend_test! {
    async fn login_returns_an_access_token_that_identifies_the_user() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let login = app
            .login(&user.email.to_uppercase(), PASSWORD)
            .await
            .unwrap();
        assert_eq!(login.token_type, "Bearer");
        assert!(login.refresh_token.starts_with("cbr_"));
        assert!(login.access_token_expire_time.unwrap().seconds > chrono::Utc::now().timestamp());
        let me = app
            .auth(Some(&login.access_token))
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(me.id, user.id);
    }
}

backend_test! {
    async fn wrong_password_and_unknown_email_fail_alike() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let wrong = assert_code(
            app.login(&user.email, "wrong password!").await,
            Code::Unauthenticated,
        );
        let unknown = assert_code(
            app.login("nobody@example.com", PASSWORD).await,
            Code::Unauthenticated,
        );
        assert_eq!(wrong.message(), unknown.message());
    }
}

backend_test! {
    async fn every_unusable_token_is_refused_with_unauthenticated() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for (what, token) in bad_tokens(&user.id) {
            let status = assert_code(
                app.auth(Some(&token))
                    .get_current_user(proto::GetCurrentUserRequest {})
                    .await,
                Code::Unauthenticated,
            );
            assert!(!status.message().is_empty(), "{what}");
        }
        let status = assert_code(
            app.auth(None)
                .get_current_user(proto::GetCurrentUserRequest {})
                .await,
            Code::Unauthenticated,
        );
        assert!(status.message().contains("authorization"));
    }
}

backend_test! {
    async fn refresh_rotates_the_token_and_reuse_revokes_the_whole_session() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        let refresh = |token: &str| {
            let mut client = app.auth(None);
            let request = proto::RefreshTokenRequest {
                refresh_token: token.into(),
            };
            async move { client.refresh_token(request).await.map(|r| r.into_inner()) }
        };
        let second = refresh(&user.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, user.refresh_token);
        app.auth(Some(&second.access_token))
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .unwrap();

        // Replaying the rotated token is theft: the descendant dies too.
        assert_code(refresh(&user.refresh_token).await, Code::Unauthenticated);
        assert_code(refresh(&second.refresh_token).await, Code::Unauthenticated);
        assert_code(refresh("cbr_unknown").await, Code::Unauthenticated);
    }
}

backend_test! {
    async fn logout_revokes_the_refresh_token() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        app.logout(&user.token, &user.refresh_token).await.unwrap();
        assert_code(
            app.refresh(&user.refresh_token).await,
            Code::Unauthenticated,
        );
        // The session's access token ended with it, so even a second
        // logout is refused.
        assert_code(
            app.logout(&user.token, &user.refresh_token).await,
            Code::Unauthenticated,
        );
    }
}

backend_test! {
    async fn repeated_failed_logins_are_throttled_before_any_hashing() {
        let app = spawn_app_with(&["--login-max-failures-per-email", "3"]).await;
        let user = app.new_user().await;
        for _ in 0..3 {
            assert_code(
                app.login(&user.email, "wrong password!").await,
                Code::Unauthenticated,
            );
        }
        // Even the right password is refused while throttled.
        let status = assert_code(
            app.login(&user.email, PASSWORD).await,
            Code::ResourceExhausted,
        );
        let retry = status.get_details_retry_info().expect("RetryInfo detail");
        assert!(retry.retry_delay.is_some_and(|d| d.as_secs() > 0));
        // Other accounts are unaffected.
        let other = app.new_user().await;
        app.login(&other.email, PASSWORD).await.unwrap();
    }
}

backend_test! {
    async fn tokens_signed_with_the_previous_key_still_verify_after_rotation() {
        let new_key = "a-brand-new-signing-key-of-at-least-32-bytes";
        let app = spawn_app_with(&["--secret-key", new_key, "--secret-key-previous", SECRET_KEY]).await;
        let user = app.new_user().await;
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "sub": user.id, "sid": session_of(&user.token), "role": "user", "iat": now,
            "exp": now + 600, "iss": "chatbot-backend", "aud": "chatbot-backend",
        });
        let old_token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET_KEY.as_bytes()),
        )
        .unwrap();
        app.auth(Some(&old_token))
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .unwrap();
    }
}

backend_test! {
    async fn the_server_refuses_a_secret_key_shorter_than_32_bytes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: chatbot_backend::config::Settings,
        }
        let settings = Cli::parse_from(["test", "--secret-key", "too-short"]).settings;
        let error = settings.validate().unwrap_err();
        assert!(error.to_string().contains("SECRET_KEY"), "{error}");
    }
}

backend_test! {
    async fn refreshing_with_anything_but_a_refresh_token_is_unauthenticated() {
        let app = spawn_app().await;
        let user = app.new_user().await;
        for presented in [user.token.clone(), "x".repeat(10_000), "not-a-token".into()] {
            assert_code(
                app.refresh(&presented).await,
                Code::Unauthenticated,
            );
        }
        // Missing is a malformed request.
        assert_code(
            app.auth(None)
                .refresh_token(proto::RefreshTokenRequest::default())
                .await,
            Code::InvalidArgument,
        );
    }
}

backend_test! {
    async fn two_authorization_entries_are_refused_even_on_public_rpcs() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let user = app.new_user().await;
        let twice = |mut request: tonic::Request<()>| {
            for token in [&admin.token, &user.token] {
                request.metadata_mut().append(
                    "authorization",
                    format!("Bearer {token}").parse().unwrap(),
                );
            }
            Ok(request)
        };
        let mut auth = proto::auth_service_client::AuthServiceClient::with_interceptor(
            app.channel(),
            twice,
        );
        assert_code(
            auth.get_current_user(proto::GetCurrentUserRequest {}).await,
            Code::Unauthenticated,
        );
        let mut users = proto::user_service_client::UserServiceClient::with_interceptor(
            app.channel(),
            twice,
        );
        assert_code(
            users
                .create_user(proto::CreateUserRequest {
                    email: "ambiguous@example.com".into(),
                    password: PASSWORD.into(),
                    role: proto::UserRole::Admin.into(),
                })
                .await,
            Code::Unauthenticated,
        );
    }
}
