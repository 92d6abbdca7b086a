//! OpenTelemetry traces (issue 17): a server process started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` exports its spans to a real OTLP/HTTP
//! receiver, which decodes them as OTLP protobuf: one server span per RPC,
//! continuing the caller's W3C `traceparent`, with children for database
//! work and password hashing, and no secret (password, session, API key,
//! invitation or service-account token) in any of them or in an error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chatbot_backend::proto;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tonic::Code;

use crate::helpers::{spawn_app, TestUser, PASSWORD};

/// The caller's trace and span, as its `traceparent` names them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    span: Span,
}

/// An OTLP/HTTP receiver: decodes each POST to /v1/traces as an
/// `ExportTraceServiceRequest` and keeps its spans.
struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| receive(request, store.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans once every one of `names` has arrived.
    async fn spans_named(&self, names: &[&str]) -> Vec<Received> {
        for _ in 0..200 {
            let spans = self.spans();
            if names
                .iter()
                .all(|name| spans.iter().any(|received| received.span.name == *name))
            {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got: Vec<String> = self.spans().into_iter().map(|r| r.span.name).collect();
        panic!("expected spans {names:?}, received {got:?}");
    }
}

async fn receive(
    request: http::Request<Incoming>,
    store: Arc<Mutex<Vec<Received>>>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri().path(), "/v1/traces");
    assert_eq!(
        request.headers()["content-type"],
        "application/x-protobuf",
        "OTLP/HTTP protobuf"
    );
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut received = store.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(Received {
                    service_name: service_name.clone(),
                    span,
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(http::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap())
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(number) => Some(*number),
        _ => None,
    }
}

/// Every text a span carries: its name, attributes, events and status.
fn texts(span: &Span) -> Vec<String> {
    fn of_value(value: &AnyValue, out: &mut Vec<String>) {
        match &value.value {
            Some(Value::StringValue(text)) => out.push(text.clone()),
            Some(Value::BytesValue(bytes)) => out.push(String::from_utf8_lossy(bytes).into_owned()),
            Some(Value::ArrayValue(array)) => array.values.iter().for_each(|v| of_value(v, out)),
            Some(Value::KvlistValue(list)) => list.values.iter().for_each(|kv| {
                out.push(kv.key.clone());
                if let Some(v) = &kv.value {
                    of_value(v, out);
                }
            }),
            _ => {}
        }
    }
    let mut out = vec![span.name.clone()];
    let attributes = span
        .attributes
        .iter()
        .chain(span.events.iter().flat_map(|event| event.attributes.iter()));
    for kv in attributes {
        out.push(kv.key.clone());
        if let Some(value) = &kv.value {
            of_value(value, &mut out);
        }
    }
    out.extend(span.events.iter().map(|event| event.name.clone()));
    out.extend(span.status.iter().map(|status| status.message.clone()));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `request` carrying the caller's `traceparent`.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_spans_are_exported_over_otlp_with_the_callers_parent_their_children_and_no_secret() {
    let receiver = OtlpReceiver::start().await;
    let app = spawn_app().await;
    let endpoint = format!("http://{}", receiver.addr);
    let server = app
        .spawn_replica_process(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "chatbot-backend-under-test"),
            // Export each batch within 50 ms rather than 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            // Background database work every second, which must stay out
            // of the traces.
            ("HEALTH_CHECK_INTERVAL_SECS", "1"),
        ])
        .await;

    let email = format!("traced-{}@example.com", uuid::Uuid::new_v4().simple());
    let user = server
        .users(None)
        .create_user(traced(proto::CreateUserRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            role: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let login = server.login(&email, PASSWORD).await.unwrap();
    let chatbot = server
        .create_chatbot_from(
            &login.access_token,
            proto::CreateChatbotRequest {
                name: "traced".into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let key = server
        .api_keys(Some(&login.access_token))
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let verified = server
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid);

    // An invitation and a service account, whose tokens are secrets too;
    // the account's token is used once.
    let owner = TestUser {
        id: user.id.clone(),
        email: email.clone(),
        password: PASSWORD.into(),
        token: login.access_token.clone(),
        refresh_token: login.refresh_token.clone(),
    };
    let team = server.create_organization(&owner, "traced team").await;
    let viewer = proto::OrganizationRole::Viewer;
    let invitation = server
        .invite(&owner, &team.id, "invited@example.com", viewer)
        .await
        .token;
    let account = server
        .create_service_account(&owner, &team.id, viewer)
        .await
        .token;
    server
        .chatbots(Some(&account))
        .list_chatbots(proto::ListChatbotsRequest::default())
        .await
        .unwrap();
    // Accepting someone else's invitation, or one that does not exist, is
    // refused without the token in the error.
    let unknown = format!("cbi_{}", "x".repeat(43));
    for (token, code) in [
        (&invitation, Code::PermissionDenied),
        (&unknown, Code::NotFound),
    ] {
        let refused = server
            .organizations(Some(&owner.token))
            .accept_invitation(proto::AcceptInvitationRequest {
                token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
        let error = format!(
            "{} {}",
            refused.message(),
            String::from_utf8_lossy(refused.details())
        );
        assert!(
            !error.contains(&token[4..]),
            "the error carries the token: {error}"
        );
    }

    // Long enough for a health check to run, whose spans must not arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = receiver
        .spans_named(&[
            "chatbot.v1.UserService/CreateUser",
            "chatbot.v1.AuthService/Login",
            "chatbot.v1.ChatbotService/CreateChatbot",
            "chatbot.v1.ApiKeyService/CreateApiKey",
            "chatbot.v1.ApiKeyService/VerifyApiKey",
            "chatbot.v1.OrganizationService/CreateInvitation",
            "chatbot.v1.OrganizationService/CreateServiceAccount",
            "chatbot.v1.ChatbotService/ListChatbots",
            "chatbot.v1.OrganizationService/AcceptInvitation",
        ])
        .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans
        .iter()
        .map(|received| (received.span.span_id.clone(), &received.span))
        .collect();
    let named = |name: &str| {
        let matching: Vec<&Span> = spans
            .iter()
            .map(|received| &received.span)
            .filter(|span| span.name == name)
            .collect();
        assert_eq!(matching.len(), 1, "one {name} span");
        matching[0]
    };
    // Whether `span` descends from `ancestor` (through spans received).
    let descends = |span: &Span, ancestor: &Span| {
        let mut parent = span.parent_span_id.clone();
        while let Some(next) = by_id.get(&parent) {
            if next.span_id == ancestor.span_id {
                return true;
            }
            parent = next.parent_span_id.clone();
        }
        false
    };
    let children_of = |rpc: &Span| -> Vec<&Span> {
        spans
            .iter()
            .map(|received| &received.span)
            .filter(|span| span.trace_id == rpc.trace_id && descends(span, rpc))
            .collect()
    };

    // One server span per RPC, in the caller's trace when it sent one.
    let create_user = named("chatbot.v1.UserService/CreateUser");
    assert_eq!(create_user.kind, SpanKind::Server as i32);
    assert_eq!(hex(&create_user.trace_id), TRACE_ID);
    assert_eq!(hex(&create_user.parent_span_id), PARENT_SPAN_ID);
    let attributes = &create_user.attributes;
    assert_eq!(
        string_attribute(attributes, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(attributes, "rpc.service").as_deref(),
        Some("chatbot.v1.UserService")
    );
    assert_eq!(
        string_attribute(attributes, "rpc.method").as_deref(),
        Some("CreateUser")
    );
    assert_eq!(int_attribute(attributes, "rpc.grpc.status_code"), Some(0));
    assert!(string_attribute(attributes, "request_id").is_some_and(|id| !id.is_empty()));

    // Its children: the password hash and the database work.
    let children = children_of(create_user);
    assert!(
        children
            .iter()
            .any(|span| span.name == "password.hash" && span.parent_span_id == create_user.span_id),
        "{children:#?}"
    );
    assert!(
        children.iter().any(|span| span.name.starts_with("db ")
            && string_attribute(&span.attributes, "db.system.name").is_some()),
        "{children:#?}"
    );

    // A call without a traceparent starts its own trace.
    let login_span = named("chatbot.v1.AuthService/Login");
    assert_ne!(hex(&login_span.trace_id), TRACE_ID);
    assert!(login_span.parent_span_id.is_empty());
    assert!(children_of(login_span)
        .iter()
        .any(|span| span.name == "password.verify"));

    // The caller, as the logs name it.
    let create_chatbot = named("chatbot.v1.ChatbotService/CreateChatbot");
    assert_eq!(
        string_attribute(&create_chatbot.attributes, "enduser.id").as_deref(),
        Some(user.id.as_str())
    );

    // Every trace starts at an RPC (or its caller): background work such as
    // health checks adds no traces of its own.
    for received in &spans {
        let span = &received.span;
        if span.parent_span_id.is_empty() {
            assert_eq!(span.kind, SpanKind::Server as i32, "a root span {span:?}");
        }
    }

    // Every span comes from the named service, and none carries a secret.
    let secrets = [
        PASSWORD,
        login.access_token.as_str(),
        login.refresh_token.as_str(),
        key.as_str(),
        invitation.as_str(),
        account.as_str(),
    ];
    for received in &spans {
        assert_eq!(received.service_name, "chatbot-backend-under-test");
        for text in texts(&received.span) {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "span {} carries a secret in {text:?}",
                    received.span.name
                );
            }
        }
    }
}
