//! One caller: the request it sends for the chosen RPC, how an outcome is
//! counted, and the shared tallies and progress line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatbot_backend::domain::ApiKeySecret;
use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::auth_service_client::AuthServiceClient;
use chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient;
use chatbot_backend::proto::{self, VerifyApiKeyReason};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Status};

use crate::connection::{Connection, Direct};
use crate::setup::{
    restricted_permission, splitmix64, Fixture, RESTRICTED_CLIENT_ADDRESS, RESTRICTIONS,
};
use crate::{Rpc, LIST_PAGE_SIZE, LLM_ENDPOINT_URL, MALFORMED_KEY, PASSWORD};

/// The result of one request: its status code and, for VerifyApiKey, the
/// reason in the response.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Outcome {
    pub(crate) code: Code,
    pub(crate) reason: Option<i32>,
}

impl Outcome {
    pub(crate) fn label(self) -> String {
        let code = code_name(self.code);
        match self.reason {
            None => code.to_owned(),
            Some(reason) => {
                let reason = VerifyApiKeyReason::try_from(reason).map_or_else(
                    |_| reason.to_string(),
                    |r| {
                        r.as_str_name()
                            .trim_start_matches("VERIFY_API_KEY_REASON_")
                            .to_owned()
                    },
                );
                format!("{code}/{reason}")
            }
        }
    }
}

pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One caller's clients; `call` sends a single request of the chosen RPC.
pub(crate) struct Caller {
    pub(crate) rpc: Rpc,
    pub(crate) fixture: Arc<Fixture>,
    pub(crate) chatbots: ChatbotServiceClient<Direct>,
    pub(crate) api_keys: ApiKeyServiceClient<Connection>,
    pub(crate) authorization: AuthorizationClient<Connection>,
    pub(crate) auth: AuthServiceClient<Connection>,
    pub(crate) id: usize,
    pub(crate) sent: u64,
    /// Made-up keys' randomness.
    pub(crate) rng: rand::rngs::SmallRng,
}

impl Caller {
    pub(crate) fn new(rpc: Rpc, fixture: Arc<Fixture>, channel: Connection, id: usize) -> Self {
        Self {
            rpc,
            chatbots: ChatbotServiceClient::new(InterceptedService::new(
                channel.clone(),
                fixture.bearer.clone(),
            )),
            api_keys: ApiKeyServiceClient::new(channel.clone()),
            authorization: AuthorizationClient::new(channel.clone()),
            auth: AuthServiceClient::new(channel),
            fixture,
            id,
            sent: 0,
            rng: rand::SeedableRng::seed_from_u64(id as u64),
        }
    }

    /// Sends one request; `Ok` holds VerifyApiKey's reason.
    pub(crate) async fn call(&mut self) -> Result<Option<i32>, Status> {
        self.sent += 1;
        let fixture = &self.fixture;
        match self.rpc {
            Rpc::GetChatbot => self
                .chatbots
                .get_chatbot(proto::GetChatbotRequest {
                    // Callers start at different rows and step together.
                    id: fixture.read_ids[(self.id + self.sent as usize) % fixture.read_ids.len()]
                        .clone(),
                })
                .await
                .map(|_| None),
            Rpc::ListChatbots => self
                .chatbots
                .list_chatbots(proto::ListChatbotsRequest {
                    page_size: LIST_PAGE_SIZE,
                    ..Default::default()
                })
                .await
                .map(|_| None),
            Rpc::CreateChatbot => self
                .chatbots
                .create_chatbot(proto::CreateChatbotRequest {
                    name: format!("loadgen {}-{}", self.id, self.sent),
                    llm_endpoint_url: LLM_ENDPOINT_URL.into(),
                    ..Default::default()
                })
                .await
                .map(|_| None),
            Rpc::Login => self
                .auth
                .login(proto::LoginRequest {
                    email: fixture.email.clone(),
                    password: PASSWORD.into(),
                })
                .await
                .map(|_| None),
            Rpc::ExtAuthzCheck => {
                let response = self
                    .authorization
                    .check(check_request(&fixture.api_keys[0]))
                    .await?
                    .into_inner();
                match response.status {
                    Some(status) if status.code != Code::Ok as i32 => {
                        Err(Status::new(Code::from_i32(status.code), status.message))
                    }
                    _ => Ok(None),
                }
            }
            Rpc::ReserveAndSettle => {
                let draw = splitmix64(((self.id as u64) << 32) | self.sent);
                let key = fixture.api_keys[(draw % fixture.api_keys.len() as u64) as usize].clone();
                let answer = self
                    .api_keys
                    .verify_api_key(proto::VerifyApiKeyRequest {
                        key,
                        cost: 50,
                        reserve: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if !answer.valid {
                    return Ok(Some(answer.reason));
                }
                self.api_keys
                    .settle_reservation(proto::SettleReservationRequest {
                        reservation_id: answer.reservation_id,
                        actual_cost: ((draw >> 32) % 101) as i64,
                    })
                    .await
                    .map(|_| Some(answer.reason))
            }
            Rpc::VerifyApiKeyValid
            | Rpc::VerifyApiKeyInvalid
            | Rpc::VerifyApiKeyInvalidFresh
            | Rpc::VerifyApiKeyMalformed
            | Rpc::VerifyApiKeyRateLimited
            | Rpc::VerifyApiKeyCredits
            | Rpc::VerifyApiKeyOrganizationCredits
            | Rpc::VerifyApiKeyRestricted => {
                let key = match self.rpc {
                    // Made up with a fast generator: the OS's, a system
                    // call per character, would take CPU from the server.
                    Rpc::VerifyApiKeyInvalid | Rpc::VerifyApiKeyInvalidFresh => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |since| since.as_secs() as i64);
                        let issued_at = match self.rpc {
                            Rpc::VerifyApiKeyInvalid => now - 86_400,
                            _ => now,
                        };
                        ApiKeySecret::generate_with(&mut self.rng, issued_at)
                            .expose()
                            .to_owned()
                    }
                    Rpc::VerifyApiKeyMalformed => MALFORMED_KEY.to_owned(),
                    // A key at random, as pgbench's `random(1, 1000)` picks
                    // its row: callers stepping through the keys together
                    // would collide on the same rows in lockstep.
                    Rpc::VerifyApiKeyCredits | Rpc::VerifyApiKeyOrganizationCredits => {
                        let draw = splitmix64(((self.id as u64) << 32) | self.sent);
                        fixture.api_keys[(draw % fixture.api_keys.len() as u64) as usize].clone()
                    }
                    _ => fixture.api_keys[0].clone(),
                };
                let (client_address, required_permissions) =
                    if self.rpc == Rpc::VerifyApiKeyRestricted {
                        (
                            RESTRICTED_CLIENT_ADDRESS.to_owned(),
                            vec![restricted_permission(RESTRICTIONS - 1)],
                        )
                    } else {
                        (String::new(), Vec::new())
                    };
                self.api_keys
                    .verify_api_key(proto::VerifyApiKeyRequest {
                        key,
                        client_address,
                        required_permissions,
                        ..Default::default()
                    })
                    .await
                    .map(|response| Some(response.into_inner().reason))
            }
        }
    }
}

/// Counters and the schedule every caller reads.
pub(crate) struct Shared {
    pub(crate) measure_start: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) request_limit: Option<u64>,
    /// Measured requests started so far (against `request_limit`).
    pub(crate) started: AtomicU64,
    /// Requests completed, warm-up included (for the progress rate).
    pub(crate) completed: AtomicU64,
    /// Measured requests completed.
    pub(crate) measured: AtomicU64,
    pub(crate) done: AtomicBool,
    /// `--rate`'s pace: each request waits for its tick.
    pub(crate) pacer: Option<tokio::sync::Mutex<tokio::time::Interval>>,
}

impl Shared {
    /// Whether a request starting now is measured, or `None` when the
    /// caller should stop.
    pub(crate) fn next(&self) -> Option<bool> {
        let now = Instant::now();
        if now < self.measure_start {
            return Some(false);
        }
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return None;
        }
        if let Some(limit) = self.request_limit {
            if self.started.fetch_add(1, Ordering::Relaxed) >= limit {
                return None;
            }
        }
        Some(true)
    }
}

/// What one caller measured.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) outcomes: HashMap<Outcome, u64>,
    /// The first error message seen per code, to explain the counts.
    pub(crate) messages: HashMap<Code, String>,
    /// When the caller's last measured request finished.
    pub(crate) finished: Option<Instant>,
}

pub(crate) async fn run_caller(mut caller: Caller, shared: Arc<Shared>) -> Record {
    let mut record = Record::default();
    while let Some(measured) = shared.next() {
        if let Some(pacer) = &shared.pacer {
            pacer.lock().await.tick().await;
        }
        let start = Instant::now();
        let result = caller.call().await;
        let end = Instant::now();
        shared.completed.fetch_add(1, Ordering::Relaxed);
        if !measured {
            continue;
        }
        shared.measured.fetch_add(1, Ordering::Relaxed);
        let micros = u32::try_from(end.duration_since(start).as_micros()).unwrap_or(u32::MAX);
        record.latencies_us.push(micros);
        let outcome = match result {
            Ok(reason) => Outcome {
                code: Code::Ok,
                reason,
            },
            Err(status) => {
                record
                    .messages
                    .entry(status.code())
                    .or_insert_with(|| status.message().to_owned());
                Outcome {
                    code: status.code(),
                    reason: None,
                }
            }
        };
        *record.outcomes.entry(outcome).or_default() += 1;
        record.finished = Some(end);
    }
    record
}

pub(crate) async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_completed = 0;
    let mut last_tick = Instant::now();
    while !shared.done.load(Ordering::Relaxed) {
        ticker.tick().await;
        let now = Instant::now();
        let completed = shared.completed.load(Ordering::Relaxed);
        let rate =
            (completed - last_completed) as f64 / now.duration_since(last_tick).as_secs_f64();
        let phase = if now < shared.measure_start {
            "warm-up"
        } else {
            "measuring"
        };
        eprintln!(
            "[{:6.1}s] {phase:<9} requests={:<9} rate={rate:.0} req/s",
            now.duration_since(start).as_secs_f64(),
            shared.measured.load(Ordering::Relaxed),
        );
        last_completed = completed;
        last_tick = now;
    }
}

/// What Envoy's ext_authz filter asks about a request carrying `key`.
pub(crate) fn check_request(key: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    headers: HashMap::from([("x-api-key".to_owned(), key.to_owned())]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
