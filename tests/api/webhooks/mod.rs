//! Webhooks (issue 30): an organization's owners register endpoints; each
//! receives the organization's events in order, signed as Standard
//! Webhooks says, retried with backoff, and a webhook that keeps failing is
//! disabled (an event says so); deliveries are listed and can be sent
//! again; two replicas deliver each event once per endpoint; a hanging
//! endpoint holds up no request. A real HTTP receiver runs in the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chatbot_backend::proto::{self, OrganizationRole, WebhookDeliveryState, WebhookState};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha2::Sha256;
use tonic::Code;

use crate::events::{next_events, watch};
use crate::helpers::{
    backend_test, poll_until, spawn_app_with, violated_fields, Clients, TestApp, TestUser,
};
use crate::organization_limits::team_with_chatbot;

mod robustness;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Status(u16),
    /// Holds the request open and never answers.
    Hang,
}

/// An HTTP endpoint in the test process that records what it is sent.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(Mutex::new(Answer::Ok));
        let (kept, answering) = (received.clone(), answer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (kept, answering) = (kept.clone(), answering.clone());
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (kept, answering) = (kept.clone(), answering.clone());
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|value| value.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let (id, timestamp, signature) = (
                                header("webhook-id"),
                                header("webhook-timestamp"),
                                header("webhook-signature"),
                            );
                            let body = request.into_body().collect().await?.to_bytes().to_vec();
                            kept.lock().unwrap().push(Received {
                                id,
                                timestamp,
                                signature,
                                body,
                            });
                            let answer = *answering.lock().unwrap();
                            let status = match answer {
                                Answer::Ok => 204,
                                Answer::Status(status) => status,
                                Answer::Hang => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    204
                                }
                            };
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url,
            received,
            answer,
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The first `count` requests, waiting up to twenty seconds for them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        poll_until(
            &format!("{count} webhook requests"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { self.received() },
            |received: &Vec<Received>| received.len() >= count,
        )
        .await
    }
}

/// The server's flags for webhook tests: a local receiver is a private
/// target, and retries come quickly.
pub(crate) const FLAGS: &[&str] = &[
    "--webhook-allow-private-targets",
    "true",
    "--webhook-retry-base-millis",
    "50",
    "--webhook-max-attempts",
    "3",
    "--webhook-timeout-secs",
    "2",
];

pub(crate) async fn create_webhook(
    clients: &Clients,
    owner: &TestUser,
    organization: &str,
    url: &str,
    event_types: &[&str],
) -> Result<proto::CreateWebhookResponse, tonic::Status> {
    create_webhook_once(clients, owner, organization, url, event_types, "").await
}

/// CreateWebhook with a request id (AIP-155; empty: none).
async fn create_webhook_once(
    clients: &Clients,
    owner: &TestUser,
    organization: &str,
    url: &str,
    event_types: &[&str],
    request_id: &str,
) -> Result<proto::CreateWebhookResponse, tonic::Status> {
    Ok(clients
        .webhooks(Some(&owner.token))
        .create_webhook(proto::CreateWebhookRequest {
            organization_id: organization.into(),
            webhook: Some(proto::Webhook {
                url: url.into(),
                event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
                description: "test receiver".into(),
                ..Default::default()
            }),
            request_id: request_id.into(),
        })
        .await?
        .into_inner())
}

async fn rename(app: &TestApp, owner: &TestUser, organization: &str, name: &str) {
    crate::events::rename(app, owner, organization, name).await;
}

pub(crate) async fn deliveries(
    app: &TestApp,
    owner: &TestUser,
    webhook: &str,
) -> Vec<proto::WebhookDelivery> {
    app.webhooks(Some(&owner.token))
        .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
            webhook_id: webhook.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// Standard Webhooks' verification, written from the specification:
/// HMAC-SHA256 under the secret's base64-decoded bytes over
/// "<webhook-id>.<webhook-timestamp>.<body>", any `v1,` signature matching.
fn verifies(secret: &str, received: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    received
        .signature
        .split(' ')
        .any(|signature| signature.strip_prefix("v1,") == Some(expected.as_str()))
}

backend_test! {
    async fn a_webhook_receives_its_organizations_events_in_order_signed_as_standard_webhooks_says() {
        let receiver = Receiver::start().await;
        let app = spawn_app_with(FLAGS).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let created = create_webhook(&app, &owner, &team, &receiver.url, &[]).await.unwrap();
        let webhook = created.webhook.unwrap();
        assert_eq!(webhook.state, WebhookState::Active as i32);
        assert!(created.signing_secret.starts_with("whsec_"));

        // Only events after its creation: the webhook's own, then these.
        let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        rename(&app, &owner, &team, "hooked team").await;
        app.revoke_api_key(&owner.token, key.id).await.unwrap();
        let received = receiver.wait_for(4).await;
        let types: Vec<String> = received.iter().map(Received::event_type).collect();
        assert_eq!(
            types,
            ["webhook.create", "api_key.create", "organization.update", "api_key.revoke"]
        );

        // The same events as WatchEvents streams, id for id, each signed.
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let events = next_events(&mut stream, 6).await;
        let expected: Vec<&str> = events[2..].iter().map(|event| event.id.as_str()).collect();
        // Members watch the events: the webhook's URL shows only its origin.
        let origin = receiver.url.trim_end_matches("/hooks");
        let Some(proto::event::Resource::Webhook(shown)) = &events[2].resource else {
            panic!("{:?}", events[2]);
        };
        assert_eq!(shown.url, origin);
        assert_eq!(events[2].changes[0].new_value, origin);
        let ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, expected);
        for request in &received {
            assert!(verifies(&created.signing_secret, request), "{request:?}");
            let json = request.json();
            assert_eq!(json["data"]["id"], request.id);
            assert_eq!(json["data"]["organizationId"], team);
        }
        // The body in protobuf's JSON form, resource included.
        assert_eq!(received[1].json()["data"]["apiKey"]["id"], key.id.to_string());
        // A signature under another secret does not verify.
        let other = create_webhook(&app, &owner, &team, &receiver.url, &["chatbot.delete"])
            .await
            .unwrap();
        assert!(!verifies(&other.signing_secret, &received[0]));

        // Listed, delivered at the first attempt.
        let listed = deliveries(&app, &owner, &webhook.id).await;
        assert_eq!(listed.len(), 4);
        assert!(listed.iter().all(|d| d.state == WebhookDeliveryState::Delivered as i32
            && d.attempts == 1
            && d.last_status_code == 204), "{listed:#?}");
        // Newest first.
        assert_eq!(listed[0].event_type, "api_key.revoke");
    }
}

/// Verifies `received` with the Standard Webhooks reference library for
/// Python (`pip install standardwebhooks`), as README tells a receiver to:
/// the event's id if it verifies, the library's error if not.
fn verify_with_reference_library(secret: &str, received: &Received) -> Result<String, String> {
    use std::io::Write;
    const SCRIPT: &str = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, msg_id, timestamp, signature = sys.argv[1:5]\n\
        headers = {'webhook-id': msg_id, 'webhook-timestamp': timestamp, 'webhook-signature': signature}\n\
        event = Webhook(secret).verify(sys.stdin.buffer.read(), headers)\n\
        print(event['data']['id'])\n";
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            secret,
            &received.id,
            &received.timestamp,
            &received.signature,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (with `pip install standardwebhooks`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&received.body)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the reference library is missing: pip install standardwebhooks ({stderr})"
    );
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
        false => Err(stderr),
    }
}

backend_test! {
    async fn a_delivery_verifies_with_the_standard_webhooks_reference_library() {
        let receiver = Receiver::start().await;
        let app = spawn_app_with(FLAGS).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let created = create_webhook(&app, &owner, &team, &receiver.url, &[]).await.unwrap();
        let received = receiver.wait_for(1).await.remove(0);
        assert_eq!(received.event_type(), "webhook.create");
        assert_eq!(
            verify_with_reference_library(&created.signing_secret, &received),
            Ok(received.id.clone())
        );
        // A body changed on the way, or another secret, does not verify.
        let mut tampered = received.clone();
        tampered.body.extend_from_slice(b" ");
        let refused = verify_with_reference_library(&created.signing_secret, &tampered);
        assert!(refused.unwrap_err().contains("WebhookVerificationError"));
        let other = "whsec_".to_owned() + &base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(verify_with_reference_library(&other, &received).is_err());
    }
}

backend_test! {
    async fn a_webhook_receives_only_the_event_types_it_chose() {
        let receiver = Receiver::start().await;
        let app = spawn_app_with(FLAGS).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        create_webhook(&app, &owner, &team, &receiver.url, &["api_key.revoke"])
            .await
            .unwrap();
        let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        rename(&app, &owner, &team, "ignored").await;
        app.revoke_api_key(&owner.token, key.id).await.unwrap();
        let received = receiver.wait_for(1).await;
        assert_eq!(received[0].event_type(), "api_key.revoke");
        // Nothing else follows.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.received().len(), 1);
    }
}

backend_test! {
    async fn a_failing_endpoint_is_retried_then_disabled_with_an_event_and_a_delivery_can_be_sent_again() {
        let receiver = Receiver::start().await;
        receiver.answer(Answer::Status(503));
        let app = spawn_app_with(FLAGS).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let created = create_webhook(&app, &owner, &team, &receiver.url, &["organization.update"])
            .await
            .unwrap();
        let webhook = created.webhook.unwrap();
        rename(&app, &owner, &team, "never delivered").await;

        // Three attempts (the test's WEBHOOK_MAX_ATTEMPTS), the same id.
        let attempts = receiver.wait_for(3).await;
        assert!(attempts.iter().all(|a| a.id == attempts[0].id));
        let disabled = poll_until(
            "the webhook disabled",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                app.webhooks(Some(&owner.token))
                    .get_webhook(proto::GetWebhookRequest { id: webhook.id.clone() })
                    .await
                    .unwrap()
                    .into_inner()
                    .webhook
                    .unwrap()
            },
            |webhook: &proto::Webhook| webhook.state == WebhookState::Disabled as i32,
        )
        .await;
        assert!(disabled.disabled_reason.contains("3 attempts"), "{disabled:?}");
        let listed = deliveries(&app, &owner, &webhook.id).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, WebhookDeliveryState::Failed as i32);
        assert_eq!((listed[0].attempts, listed[0].last_status_code), (3, 503));
        assert!(listed[0].last_error.contains("503"), "{:?}", listed[0]);

        // An event says so.
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let events = next_events(&mut stream, 5).await;
        let last = events.last().unwrap();
        assert_eq!(last.r#type, "webhook.disable");
        assert_eq!(last.resource_id, webhook.id);

        // Disabled: no more attempts, even for new events.
        rename(&app, &owner, &team, "while disabled").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.received().len(), 3);

        // Fixed, enabled again: the events after the one given up on
        // arrive; that one is sent again on request, with its id.
        receiver.answer(Answer::Ok);
        app.webhooks(Some(&owner.token))
            .update_webhook(proto::UpdateWebhookRequest {
                webhook: Some(proto::Webhook {
                    id: webhook.id.clone(),
                    state: WebhookState::Active.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["state".into()] }),
            })
            .await
            .unwrap();
        let after = receiver.wait_for(4).await;
        assert_eq!(after[3].event_type(), "organization.update");
        assert_ne!(after[3].id, attempts[0].id);
        let again = app
            .webhooks(Some(&owner.token))
            .redeliver_webhook(proto::RedeliverWebhookRequest {
                delivery_id: listed[0].id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .delivery
            .unwrap();
        assert_eq!(again.state, WebhookDeliveryState::Pending as i32);
        let redelivered = receiver.wait_for(5).await;
        assert_eq!(redelivered[4].id, attempts[0].id);
        assert!(verifies(&created.signing_secret, &redelivered[4]));
    }
}
