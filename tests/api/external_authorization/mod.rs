//! Envoy's external authorization (issue 17): Check, called through the
//! generated Envoy API client as Envoy's ext_authz filter calls it, allows a
//! request with a valid key (adding the chatbot's headers and removing the
//! key's), and denies the rest with the HTTP answer a gateway returns.

use std::collections::HashMap;
use std::time::Duration;

use chatbot_backend::domain::ApiKeySecret;
use chatbot_backend::proto;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::Code;

use crate::helpers::{
    assert_code, backend_test, changed_within_a_second, spawn_app, spawn_app_with, violated_fields,
    Clients, KeyOwner, TestApp,
};

mod credits_and_reservations;

/// Headers Check sets for a key that carries an external id or metadata,
/// and removes from the upstream request for a key that does not (so a
/// client cannot send its own).
const EXTERNAL_ID: &str = "x-api-key-external-id";
const METADATA: &str = "x-api-key-metadata";
const RESERVATION_ID: &str = "x-credit-reservation-id";
const RESERVATION_EXPIRY: &str = "x-credit-reservation-expire-time";

/// A Check of an HTTP request with these headers, through a route that
/// sets these context extensions.
pub(crate) fn check_request(headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
    let owned = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    host: "bots.example.com".into(),
                    headers: owned(headers),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: owned(extensions),
            ..Default::default()
        }),
    }
}

/// Check's answer, as a gateway acts on it.
#[derive(Debug)]
struct Answer {
    /// The gRPC code inside the response (OK allows).
    code: i32,
    /// The HTTP status a denial answers with.
    http_status: Option<i32>,
    /// Headers added: to the upstream request when allowed, to the client's
    /// response when denied (lower case).
    headers: HashMap<String, String>,
    /// Headers to remove from the upstream request.
    removed: Vec<String>,
    body: String,
    metadata: HashMap<String, String>,
}

impl Answer {
    fn allowed(&self) -> bool {
        self.code == Code::Ok as i32 && self.http_status.is_none()
    }

    fn error(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        body["error"].as_str().expect("an error code").to_owned()
    }
}

impl From<CheckResponse> for Answer {
    fn from(response: CheckResponse) -> Self {
        let code = response.status.map_or(0, |status| status.code);
        let mut answer = Answer {
            code,
            http_status: None,
            headers: HashMap::new(),
            removed: Vec::new(),
            body: String::new(),
            metadata: HashMap::new(),
        };
        let mut take_headers =
            |options: Vec<envoy_types::pb::envoy::config::core::v3::HeaderValueOption>| {
                for option in options {
                    assert_eq!(
                        option.append_action,
                        HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        "a header Check sets must replace a client's own"
                    );
                    let header = option.header.unwrap();
                    answer
                        .headers
                        .insert(header.key.to_ascii_lowercase(), header.value);
                }
            };
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                take_headers(ok.headers);
                // In whatever order: Envoy removes them all.
                answer.removed = ok.headers_to_remove;
                answer.removed.sort();
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                take_headers(denied.headers);
                answer.http_status = denied.status.map(|status| status.code);
                answer.body = denied.body;
            }
            _ => {}
        }
        for (key, value) in response.dynamic_metadata.unwrap_or_default().fields {
            let value = match value.kind {
                Some(Kind::StringValue(text)) => text,
                Some(Kind::NumberValue(number)) => number.to_string(),
                other => panic!("unexpected metadata value {other:?}"),
            };
            answer.metadata.insert(key, value);
        }
        answer
    }
}

/// A key created with `limits` (on a new user's new chatbot).
async fn key_with(app: &TestApp, limits: proto::CreateApiKeyRequest) -> String {
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "bot").await;
    app.create_api_key_with(&owner, &chatbot.id, limits)
        .await
        .key
}

async fn check(
    clients: &Clients,
    headers: &[(&str, &str)],
    extensions: &[(&str, &str)],
) -> Result<Answer, tonic::Status> {
    AuthorizationClient::new(clients.channel())
        .check(check_request(headers, extensions))
        .await
        .map(|response| response.into_inner().into())
}

/// Check's answer for a request carrying this key in `x-api-key`.
async fn check_key(clients: &Clients, key: &str) -> Answer {
    check(clients, &[("x-api-key", key)], &[])
        .await
        .expect("Check answers OK")
}

backend_test! {
    async fn a_valid_key_is_allowed_with_its_chatbot_in_headers_and_metadata_and_the_key_header_removed() {
        let app = spawn_app().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let key_id = created.api_key.as_ref().unwrap().id.to_string();

        // A client's own x-chatbot-id is replaced, not passed on beside ours.
        let answer = check(
            &app,
            &[("x-api-key", &created.key), ("x-chatbot-id", "spoofed")],
            &[],
        )
        .await
        .unwrap();
        assert!(answer.allowed(), "{answer:?}");
        let expected = [
            ("x-chatbot-id", chatbot.id.as_str()),
            ("x-chatbot-owner-id", owner.id.as_str()),
            ("x-api-key-id", key_id.as_str()),
            ("x-llm-endpoint-url", chatbot.llm_endpoint_url.as_str()),
        ];
        for (header, value) in expected {
            assert_eq!(answer.headers.get(header).map(String::as_str), Some(value), "{header}");
        }
        assert_eq!(answer.removed, ["x-api-key", EXTERNAL_ID, METADATA, RESERVATION_EXPIRY, RESERVATION_ID]);
        for (key, value) in [
            ("chatbot_id", chatbot.id.as_str()),
            ("chatbot_owner_id", owner.id.as_str()),
            ("api_key_id", key_id.as_str()),
            ("llm_endpoint_url", chatbot.llm_endpoint_url.as_str()),
        ] {
            assert_eq!(answer.metadata.get(key).map(String::as_str), Some(value), "{key}");
        }
    }
}

backend_test! {
    async fn a_bearer_key_is_accepted_and_removed_while_another_bearer_token_is_left_for_the_upstream() {
        let app = spawn_app().await;
        let KeyOwner { created, .. } = app.new_key_owner("bot").await;
        let key = created.key;

        let bearer = format!("Bearer {key}");
        let answer = check(&app, &[("authorization", &bearer)], &[]).await.unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.removed, ["authorization", EXTERNAL_ID, METADATA, RESERVATION_EXPIRY, RESERVATION_ID]);

        // The upstream's own token is not ours to read or remove.
        let answer = check(
            &app,
            &[("x-api-key", &key), ("authorization", "Bearer upstream.jwt.token")],
            &[],
        )
        .await
        .unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.removed, ["x-api-key", EXTERNAL_ID, METADATA, RESERVATION_EXPIRY, RESERVATION_ID]);

        let answer = check(&app, &[("authorization", "Bearer upstream.jwt.token")], &[])
            .await
            .unwrap();
        assert_eq!(answer.http_status, Some(401));
        assert_eq!(answer.error(), "missing_api_key");
    }
}

backend_test! {
    async fn raw_headers_are_read_and_a_repeated_or_conflicting_key_is_malformed() {
        let app = spawn_app().await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let key = created.key;
        let other = app.create_api_key(&owner, &chatbot.id).await.key;

        // What Envoy sends with `encode_raw_headers`: a list, values as bytes,
        // a repeated header repeated.
        let raw = |headers: &[(&str, &str)]| {
            let mut request = check_request(&[], &[]);
            let http = request
                .attributes
                .as_mut()
                .and_then(|attributes| attributes.request.as_mut())
                .and_then(|request| request.http.as_mut())
                .unwrap();
            http.header_map = Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(name, value)| HeaderValue {
                        key: (*name).to_owned(),
                        raw_value: value.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            });
            request
        };
        let mut client = AuthorizationClient::new(app.channel());
        let mut ask = async |request| -> Answer {
            client.check(request).await.unwrap().into_inner().into()
        };

        let answer = ask(raw(&[("x-api-key", &key)])).await;
        assert!(answer.allowed(), "{answer:?}");
        let answer = ask(raw(&[("x-api-key", &key), ("x-api-key", &key)])).await;
        assert_eq!(answer.error(), "invalid_api_key");

        // Envoy merges a repeated header into one value in `headers`.
        let merged = format!("{key}, {other}");
        let answer = check(&app, &[("x-api-key", &merged)], &[]).await.unwrap();
        assert_eq!(answer.error(), "invalid_api_key");

        // The same key in both headers is one key; two keys are not.
        let bearer = format!("Bearer {key}");
        let answer = check(&app, &[("x-api-key", &key), ("authorization", &bearer)], &[])
            .await
            .unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.removed, ["authorization", "x-api-key", EXTERNAL_ID, METADATA, RESERVATION_EXPIRY, RESERVATION_ID]);
        let bearer = format!("Bearer {other}");
        let answer = check(&app, &[("x-api-key", &key), ("authorization", &bearer)], &[])
            .await
            .unwrap();
        assert_eq!(answer.http_status, Some(401));
        assert_eq!(answer.error(), "invalid_api_key");
    }
}

backend_test! {
    async fn the_key_header_is_configurable() {
        let app = spawn_app_with(&["--ext-authz-api-key-header", "X-Chatbot-Key"]).await;
        let KeyOwner { created, .. } = app.new_key_owner("bot").await;
        let key = created.key;

        let answer = check(&app, &[("x-chatbot-key", &key)], &[]).await.unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.removed, [EXTERNAL_ID, METADATA, "x-chatbot-key", RESERVATION_EXPIRY, RESERVATION_ID]);
        let answer = check_key(&app, &key).await;
        assert_eq!(answer.error(), "missing_api_key");
    }
}

backend_test! {
    async fn each_key_that_is_not_valid_is_a_401_with_a_challenge_and_a_json_body_without_the_key() {
        let app = spawn_app().await;
        let KeyOwner { owner, created: revoked, .. } = app.new_key_owner("bot").await;
        app.revoke_api_key(&owner.token, revoked.api_key.unwrap().id).await.unwrap();
        let soon = std::time::SystemTime::now() + Duration::from_secs(1);
        let expiring = key_with(
            &app,
            proto::CreateApiKeyRequest {
                expire_time: Some(soon.into()),
                ..Default::default()
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let unknown = ApiKeySecret::generate().expose().to_owned();
        let mut typo = unknown.clone();
        typo.pop();
        typo.push('!');

        let missing = check(&app, &[], &[]).await.unwrap();
        assert_eq!(missing.http_status, Some(401));
        assert_eq!(missing.code, Code::Unauthenticated as i32);
        assert_eq!(missing.error(), "missing_api_key");
        assert_eq!(
            missing.headers["www-authenticate"],
            r#"Bearer realm="chatbot-backend""#
        );

        for (key, error) in [
            (typo.as_str(), "invalid_api_key"),
            (unknown.as_str(), "invalid_api_key"),
            (revoked.key.as_str(), "api_key_revoked"),
            (expiring.as_str(), "api_key_expired"),
        ] {
            let answer = check_key(&app, key).await;
            assert_eq!(answer.http_status, Some(401), "{error}");
            assert_eq!(answer.code, Code::Unauthenticated as i32, "{error}");
            assert_eq!(answer.error(), error);
            assert!(
                answer.headers["www-authenticate"].contains(r#"error="invalid_token""#),
                "{answer:?}"
            );
            assert_eq!(answer.headers["content-type"], "application/json");
            assert!(!answer.body.contains(key), "the body must not echo the key");
            assert!(answer.metadata.is_empty());
        }
    }
}

backend_test! {
    async fn a_revoked_key_is_refused_on_the_next_check() {
        let app = spawn_app().await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        assert!(check_key(&app, &created.key).await.allowed());

        app.revoke_api_key(&owner.token, created.api_key.unwrap().id).await.unwrap();
        let answer = check_key(&app, &created.key).await;
        assert_eq!(answer.http_status, Some(401));
        assert_eq!(answer.error(), "api_key_revoked");
    }
}

backend_test! {
    async fn a_rate_limited_key_is_a_429_with_retry_after_and_ratelimit_headers() {
        let app = spawn_app().await;
        let key = key_with(
            &app,
            proto::CreateApiKeyRequest {
                rate_limit: Some(proto::RateLimit {
                    limit: 1,
                    window: Some(prost_types::Duration { seconds: 60, nanos: 0 }), ..Default::default() }),
                ..Default::default()
            },
        )
        .await;

        assert!(check_key(&app, &key).await.allowed());
        let answer = check_key(&app, &key).await;
        assert_eq!(answer.http_status, Some(429));
        assert_eq!(answer.code, Code::ResourceExhausted as i32);
        assert_eq!(answer.error(), "rate_limited");
        let retry_after: u64 = answer.headers["retry-after"].parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(answer.headers["ratelimit-limit"], "1");
        assert_eq!(answer.headers["ratelimit-remaining"], "0");
        assert_eq!(answer.headers["ratelimit-reset"], answer.headers["retry-after"]);
        assert!(!answer.body.contains(&key));
    }
}

backend_test! {
    async fn a_route_sets_the_cost_and_a_key_out_of_credits_is_a_429() {
        let app = spawn_app().await;
        let key = key_with(
            &app,
            proto::CreateApiKeyRequest {
                credits: Some(proto::Credits {
                    remaining: 5,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;

        let expensive = [("cost", "3")];
        let answer = check(&app, &[("x-api-key", &key)], &expensive).await.unwrap();
        assert!(answer.allowed(), "{answer:?}");
        assert_eq!(answer.metadata["credits_remaining"], "2");

        let answer = check(&app, &[("x-api-key", &key)], &expensive).await.unwrap();
        assert_eq!(answer.http_status, Some(429));
        assert_eq!(answer.error(), "credits_exhausted");
        assert_eq!(answer.headers["ratelimit-remaining"], "2");
        assert_eq!(answer.headers["x-limit-scope"], "api_key");
        // No refill is set: there is no time to come back at.
        assert!(!answer.headers.contains_key("retry-after"), "{answer:?}");

        // A refused call spent nothing: the default cost of 1 still fits.
        let answer = check_key(&app, &key).await;
        assert_eq!(answer.metadata["credits_remaining"], "1");

        for cost in ["lots", "0.5", "-1", "1000000001", ""] {
            let status = assert_code(
                check(&app, &[("x-api-key", &key)], &[("cost", cost)]).await,
                Code::InvalidArgument,
            );
            assert_eq!(violated_fields(&status), ["attributes.context_extensions.cost"]);
        }
    }
}

backend_test! {
    async fn a_gateway_is_limited_per_key_not_per_address() {
        let app = spawn_app_with(&[
            "--rate-limit-per-address",
            "1",
            "--rate-limit-per-api-key",
            "1",
            "--rate-limit-burst-factor",
            "2",
        ])
        .await;
        let owner = app.new_user().await;
        let chatbot = app.create_chatbot(&owner, "bot").await;
        let mut keys = Vec::new();
        for _ in 0..4 {
            keys.push(app.create_api_key(&owner, &chatbot.id).await.key);
        }
        // Many clients' keys from the gateway's one address all pass.
        for key in &keys {
            assert!(check_key(&app, key).await.allowed());
        }
        // One key past the service's per-key limit is a 429 like its own limit.
        let mut last = None;
        for _ in 0..5 {
            last = Some(check_key(&app, &keys[0]).await);
        }
        let last = last.unwrap();
        assert_eq!(last.http_status, Some(429), "{last:?}");
        assert!(last.headers["retry-after"].parse::<u64>().unwrap() >= 1);
    }
}

/// Envoy fails closed on an error: a check the store cannot answer must be
/// one, not an allow and not a 401 that blames the client's key.
#[tokio::test(flavor = "multi_thread")]
async fn a_check_the_store_cannot_answer_fails_with_unavailable() {
    let (app, proxy) = crate::helpers::spawn_app_behind_postgres_proxy().await;
    let KeyOwner { created, .. } = app.new_key_owner("bot").await;
    let key = created.key;

    proxy.cut();
    assert_code(
        check(&app, &[("x-api-key", &key)], &[]).await,
        Code::Unavailable,
    );
    proxy.restore();
}

/// Check of a request from `address` (Envoy's source attribute).
async fn check_from(
    clients: &Clients,
    address: &str,
    headers: &[(&str, &str)],
    extensions: &[(&str, &str)],
) -> Answer {
    use envoy_types::pb::envoy::config::core::v3::address::Address as Kind;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
    let mut request = check_request(headers, extensions);
    if let Some(attributes) = request.attributes.as_mut() {
        attributes.source = Some(Peer {
            address: Some(Address {
                address: Some(Kind::SocketAddress(SocketAddress {
                    address: address.into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
    }
    AuthorizationClient::new(clients.channel())
        .check(request)
        .await
        .expect("Check answers")
        .into_inner()
        .into()
}
