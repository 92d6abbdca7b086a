//! `loadgen`: a closed-loop load generator for one RPC of a running
//! chatbot-backend.
//!
//! ```text
//! cargo run --release -p loadgen -- --addr http://127.0.0.1:50051 \
//!     --rpc get-chatbot --concurrency 64 --duration-secs 10
//! cargo run --release -p loadgen -- --rpc verify-api-key-valid --requests 100000 --json
//! ```
//!
//! It first sets up its own data through the public API: a new user
//! (`loadgen-<uuid>@example.com`, via UserService.CreateUser), a login for
//! its access token, a chatbot, and, when the RPC needs them, 60 more
//! chatbots (so ListChatbots fills a 50-item page) or an API key. Then
//! `--concurrency` callers, spread over `--connections` HTTP/2 connections,
//! each send requests back to back. Requests started during the first
//! `--warmup-secs` are not measured; measurement then lasts
//! `--duration-secs` (default 10) or until `--requests` have been started.
//!
//! With `--rate`, the callers together start at most that many requests a
//! second (open loop: a refused call does not slow the next one down),
//! which is how a flood is offered at a chosen multiple of what the server
//! can do; give enough callers that some are always free.
//!
//! Progress goes to stderr once a second; the summary (throughput, latency
//! percentiles, counts per status code) goes to stdout, followed with
//! `--json` by one JSON line for scripts. VerifyApiKey outcomes are counted
//! per reason too (`OK/VALID`, `OK/NOT_FOUND`, ...).
//!
//! The server's rate limits apply to the load generator like to anyone:
//! expect RESOURCE_EXHAUSTED beyond them (see `--rate-limit-per-user`,
//! `--rate-limit-per-address`, `--rate-limit-per-api-key`; 0 turns one off).
//!
//! RPCs (`--rpc`):
//! - `get-chatbot`: ChatbotService.GetChatbot, cycling through 100 of the
//!   user's chatbots so that concurrent callers read different rows.
//! - `list-chatbots`: ChatbotService.ListChatbots, page_size 50.
//! - `verify-api-key-valid`: ApiKeyService.VerifyApiKey with the issued key.
//! - `verify-api-key-invalid`: a well-formed key (valid checksum) that was
//!   never issued, new on every request: a database miss (NOT_FOUND).
//! - `verify-api-key-malformed`: a key failing the format check, answered
//!   without the database (MALFORMED).
//! - `verify-api-key-rate-limited`: the issued key, with a rate limit of its
//!   own too high to refuse: what checking a key's limit costs (in process,
//!   or in Redis when the server has `REDIS_URL`).
//! - `verify-api-key-credits`: 1,000 keys (on 10 chatbots) with credits,
//!   each call spending 1 from a key drawn at random (as pgbench draws its
//!   row): one database write per call.
//! - `verify-api-key-organization-credits`: 1,000 keys without credits of
//!   their own, on chatbots of 10 organizations with credits, each call
//!   spending 1 from the organization of a key drawn at random: the path
//!   that locks the key's and the organization's balances together.
//! - `ext-authz-check`: Envoy's envoy.service.auth.v3.Authorization.Check
//!   of an HTTP request carrying the issued key in `x-api-key`, as Envoy's
//!   ext_authz filter sends it. A denial counts under the code of the
//!   decision (UNAUTHENTICATED, RESOURCE_EXHAUSTED), not as OK.
//! - `create-chatbot`: ChatbotService.CreateChatbot, a new chatbot each time.
//! - `login`: AuthService.Login with the correct password.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chatbot_backend::domain::ApiKeySecret;
use chatbot_backend::proto::api_key_service_client::ApiKeyServiceClient;
use chatbot_backend::proto::auth_service_client::AuthServiceClient;
use chatbot_backend::proto::chatbot_service_client::ChatbotServiceClient;
use chatbot_backend::proto::organization_service_client::OrganizationServiceClient;
use chatbot_backend::proto::user_service_client::UserServiceClient;
use chatbot_backend::proto::{self, VerifyApiKeyReason};
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

const PASSWORD: &str = "loadgen password, not a secret";
const LLM_ENDPOINT_URL: &str = "https://llm.example.com/v1";
/// Chatbots the user owns for `list-chatbots`, so a 50-item page is full.
const LIST_CHATBOTS: usize = 60;
/// Chatbots `get-chatbot` cycles through: more than the callers usually run,
/// so concurrent reads are of different rows, as from many users' traffic.
const GET_CHATBOTS: usize = 100;
const LIST_PAGE_SIZE: i32 = 50;
/// Fails VerifyApiKey's format check (wrong prefix and length).
const MALFORMED_KEY: &str = "sk_live_0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Closed-loop load generator for one chatbot-backend RPC"
)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,

    /// The RPC to call.
    #[arg(long, value_enum)]
    rpc: Rpc,

    /// Callers sending requests back to back.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// HTTP/2 connections the callers are spread over (at most one per caller).
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Requests started per second by all callers together [default: as
    /// fast as they are answered].
    #[arg(long)]
    rate: Option<f64>,

    /// Seconds to measure after the warm-up [default: 10 unless --requests].
    #[arg(long, conflicts_with = "requests")]
    duration_secs: Option<u64>,

    /// Measure this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,

    /// Seconds of load before measuring starts, excluded from the results.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,

    /// Per-request deadline in milliseconds (sent as grpc-timeout).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,

    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    GetChatbot,
    ListChatbots,
    VerifyApiKeyValid,
    /// Well-formed keys that do not exist, issued a day before (deleted,
    /// another deployment's, made up): a new one per call.
    VerifyApiKeyInvalid,
    /// Well-formed keys that do not exist, claiming to be issued just now:
    /// the worst case, a key that might have been created on another
    /// replica a moment ago.
    VerifyApiKeyInvalidFresh,
    VerifyApiKeyMalformed,
    VerifyApiKeyRateLimited,
    VerifyApiKeyCredits,
    VerifyApiKeyOrganizationCredits,
    /// One request is a pair: VerifyApiKey with `reserve` (cost 50) on one
    /// of 1,000 keys with credits at random, then SettleReservation at a
    /// real cost from 0 to 100.
    ReserveAndSettle,
    /// A key with ten allowed networks and ten permissions, the caller in
    /// the last network and needing the last permission (every entry read).
    VerifyApiKeyRestricted,
    ExtAuthzCheck,
    CreateChatbot,
    Login,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::GetChatbot => "get-chatbot",
            Rpc::ListChatbots => "list-chatbots",
            Rpc::VerifyApiKeyValid => "verify-api-key-valid",
            Rpc::VerifyApiKeyInvalid => "verify-api-key-invalid",
            Rpc::VerifyApiKeyInvalidFresh => "verify-api-key-invalid-fresh",
            Rpc::VerifyApiKeyMalformed => "verify-api-key-malformed",
            Rpc::VerifyApiKeyRateLimited => "verify-api-key-rate-limited",
            Rpc::VerifyApiKeyCredits => "verify-api-key-credits",
            Rpc::VerifyApiKeyOrganizationCredits => "verify-api-key-organization-credits",
            Rpc::ReserveAndSettle => "reserve-and-settle",
            Rpc::VerifyApiKeyRestricted => "verify-api-key-restricted",
            Rpc::ExtAuthzCheck => "ext-authz-check",
            Rpc::CreateChatbot => "create-chatbot",
            Rpc::Login => "login",
        }
    }
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// One HTTP/2 connection the callers share, used by the generated clients
/// directly. tonic's `Channel` queues every request through a buffer task
/// (one more task hop each way), which made the load generator cost as much
/// CPU per request as the server it measures, on the same cores.
#[derive(Clone)]
struct Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    origin: Arc<http::uri::Parts>,
    /// `--timeout-ms` as gRPC's `grpc-timeout` header; the server enforces it.
    grpc_timeout: http::HeaderValue,
}

impl Connection {
    async fn open(args: &Args) -> anyhow::Result<Self> {
        let uri: http::Uri = args
            .addr
            .parse()
            .with_context(|| format!("--addr {:?} is not a URL", args.addr))?;
        let authority = uri.authority().context("--addr has no host:port")?.clone();
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(authority.as_str()),
        )
        .await
        .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        let mut origin = http::uri::Parts::default();
        origin.scheme = Some(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP));
        origin.authority = Some(authority);
        Ok(Self {
            send,
            origin: Arc::new(origin),
            grpc_timeout: format!("{}m", args.timeout_ms).parse()?,
        })
    }
}

type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>,
            > + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The generated client sets only the path; HTTP/2 needs the rest.
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.origin.scheme.clone();
        parts.authority = self.origin.authority.clone();
        parts.path_and_query = request.uri().path_and_query().cloned();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        request
            .headers_mut()
            .insert("grpc-timeout", self.grpc_timeout.clone());
        Box::pin(self.send.send_request(request))
    }
}

type Direct = InterceptedService<Connection, Bearer>;

/// What the setup created; every caller shares it.
struct Fixture {
    email: String,
    bearer: Bearer,
    /// What `get-chatbot` reads.
    read_ids: Vec<String>,
    /// What the VerifyApiKey RPCs that verify issued keys present, in turn.
    api_keys: Vec<String>,
}

/// The result of one request: its status code and, for VerifyApiKey, the
/// reason in the response.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Outcome {
    code: Code,
    reason: Option<i32>,
}

impl Outcome {
    fn label(self) -> String {
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

fn code_name(code: Code) -> &'static str {
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
struct Caller {
    rpc: Rpc,
    fixture: Arc<Fixture>,
    chatbots: ChatbotServiceClient<Direct>,
    api_keys: ApiKeyServiceClient<Connection>,
    authorization: AuthorizationClient<Connection>,
    auth: AuthServiceClient<Connection>,
    id: usize,
    sent: u64,
    /// Made-up keys' randomness.
    rng: rand::rngs::SmallRng,
}

impl Caller {
    fn new(rpc: Rpc, fixture: Arc<Fixture>, channel: Connection, id: usize) -> Self {
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
    async fn call(&mut self) -> Result<Option<i32>, Status> {
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
struct Shared {
    measure_start: Instant,
    deadline: Option<Instant>,
    request_limit: Option<u64>,
    /// Measured requests started so far (against `request_limit`).
    started: AtomicU64,
    /// Requests completed, warm-up included (for the progress rate).
    completed: AtomicU64,
    /// Measured requests completed.
    measured: AtomicU64,
    done: AtomicBool,
    /// `--rate`'s pace: each request waits for its tick.
    pacer: Option<tokio::sync::Mutex<tokio::time::Interval>>,
}

impl Shared {
    /// Whether a request starting now is measured, or `None` when the
    /// caller should stop.
    fn next(&self) -> Option<bool> {
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
struct Record {
    latencies_us: Vec<u32>,
    outcomes: HashMap<Outcome, u64>,
    /// The first error message seen per code, to explain the counts.
    messages: HashMap<Code, String>,
    /// When the caller's last measured request finished.
    finished: Option<Instant>,
}

async fn run_caller(mut caller: Caller, shared: Arc<Shared>) -> Record {
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

async fn progress(shared: Arc<Shared>, start: Instant) {
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

fn endpoint(args: &Args) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .with_context(|| format!("--addr {:?} is not a URL", args.addr))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_millis(args.timeout_ms))
        .tcp_nodelay(true);
    Ok(endpoint)
}

fn bearer(token: &str) -> anyhow::Result<Bearer> {
    let value = format!("Bearer {token}")
        .parse()
        .context("access token is not valid metadata")?;
    Ok(Bearer(value))
}

async fn create_chatbot(
    client: &mut ChatbotServiceClient<Authed>,
    name: &str,
) -> anyhow::Result<String> {
    create_chatbot_in(client, name, String::new()).await
}

/// A chatbot in `organization_id` (empty: the user's personal one).
async fn create_chatbot_in(
    client: &mut ChatbotServiceClient<Authed>,
    name: &str,
    organization_id: String,
) -> anyhow::Result<String> {
    let chatbot = client
        .create_chatbot(proto::CreateChatbotRequest {
            name: name.into(),
            llm_endpoint_url: LLM_ENDPOINT_URL.into(),
            organization_id,
            ..Default::default()
        })
        .await
        .context("CreateChatbot")?
        .into_inner()
        .chatbot
        .context("CreateChatbot returned no chatbot")?;
    Ok(chatbot.id)
}

/// Signs up a new user and creates what `rpc` needs.
/// `call`'s answer, calling again every 100 ms for up to a minute while it
/// is RESOURCE_EXHAUSTED.
async fn retry_while_busy<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

async fn set_up(channel: Channel, rpc: Rpc) -> anyhow::Result<Fixture> {
    let email = format!("loadgen-{}@example.com", uuid::Uuid::new_v4().simple());
    // Both hash a password: during a Login flood the server may be too busy
    // to take them, and says so; set-up waits its turn.
    let users = UserServiceClient::new(channel.clone());
    retry_while_busy(|| {
        let mut users = users.clone();
        let request = proto::CreateUserRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            role: 0,
        };
        async move { users.create_user(request).await }
    })
    .await
    .context("CreateUser (sign-up)")?;
    let auth = AuthServiceClient::new(channel.clone());
    let login = retry_while_busy(|| {
        let mut auth = auth.clone();
        let request = proto::LoginRequest {
            email: email.clone(),
            password: PASSWORD.into(),
        };
        async move { auth.login(request).await }
    })
    .await
    .context("Login")?
    .into_inner();
    let bearer = bearer(&login.access_token)?;
    let mut chatbots =
        ChatbotServiceClient::new(InterceptedService::new(channel.clone(), bearer.clone()));
    let chatbot_id = create_chatbot(&mut chatbots, "loadgen").await?;
    let mut read_ids = vec![chatbot_id.clone()];
    if rpc == Rpc::GetChatbot {
        for i in 1..GET_CHATBOTS {
            read_ids.push(create_chatbot(&mut chatbots, &format!("loadgen read {i}")).await?);
        }
    }

    if rpc == Rpc::ListChatbots {
        for i in 1..LIST_CHATBOTS {
            create_chatbot(&mut chatbots, &format!("loadgen list {i}")).await?;
        }
        let page = chatbots
            .list_chatbots(proto::ListChatbotsRequest {
                page_size: LIST_PAGE_SIZE,
                ..Default::default()
            })
            .await
            .context("ListChatbots")?
            .into_inner();
        if page.chatbots.len() != LIST_PAGE_SIZE as usize {
            bail!(
                "ListChatbots returned {} chatbots, expected {LIST_PAGE_SIZE}",
                page.chatbots.len()
            );
        }
    }

    let mut organizations =
        OrganizationServiceClient::new(InterceptedService::new(channel.clone(), bearer.clone()));
    let mut keys = ApiKeyServiceClient::new(InterceptedService::new(channel, bearer.clone()));
    let mut api_keys = Vec::new();
    match rpc {
        Rpc::VerifyApiKeyValid | Rpc::VerifyApiKeyRateLimited | Rpc::ExtAuthzCheck => {
            let rate_limit = (rpc == Rpc::VerifyApiKeyRateLimited).then_some(proto::RateLimit {
                limit: 1_000_000,
                window: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            });
            api_keys.push(create_key(&mut keys, &chatbot_id, rate_limit, None).await?);
        }
        Rpc::VerifyApiKeyRestricted => {
            let created = keys
                .create_api_key(proto::CreateApiKeyRequest {
                    chatbot_id: chatbot_id.clone(),
                    display_name: "loadgen restricted".into(),
                    allowed_networks: (0..RESTRICTIONS).map(restricted_network).collect(),
                    permissions: (0..RESTRICTIONS).map(restricted_permission).collect(),
                    ..Default::default()
                })
                .await
                .context("CreateApiKey (restricted)")?;
            api_keys.push(created.into_inner().key);
        }
        Rpc::VerifyApiKeyCredits | Rpc::ReserveAndSettle => {
            let credits = proto::Credits {
                remaining: 1_000_000_000_000,
                ..Default::default()
            };
            // At most 100 active keys per chatbot by default.
            for c in 0..CREDIT_KEYS / 100 {
                let owner = create_chatbot(&mut chatbots, &format!("loadgen credits {c}")).await?;
                for _ in 0..100 {
                    api_keys.push(create_key(&mut keys, &owner, None, Some(credits)).await?);
                }
            }
        }
        Rpc::VerifyApiKeyOrganizationCredits => {
            for o in 0..CREDIT_KEYS / 100 {
                let organization = organizations
                    .create_organization(proto::CreateOrganizationRequest {
                        name: format!("loadgen team {o}"),
                        ..Default::default()
                    })
                    .await
                    .context("CreateOrganization")?
                    .into_inner()
                    .organization
                    .context("CreateOrganization returned no organization")?;
                organizations
                    .update_organization(proto::UpdateOrganizationRequest {
                        organization: Some(proto::Organization {
                            id: organization.id.clone(),
                            credits: Some(proto::Credits {
                                remaining: 1_000_000_000_000,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["credits".into()],
                        }),
                        ..Default::default()
                    })
                    .await
                    .context("UpdateOrganization")?;
                let name = format!("loadgen team bot {o}");
                let chatbot = create_chatbot_in(&mut chatbots, &name, organization.id).await?;
                for _ in 0..100 {
                    api_keys.push(create_key(&mut keys, &chatbot, None, None).await?);
                }
            }
        }
        _ => {}
    }

    Ok(Fixture {
        email,
        bearer,
        read_ids,
        api_keys,
    })
}

/// What Envoy's ext_authz filter asks about a request carrying `key`.
fn check_request(key: &str) -> CheckRequest {
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

/// A well-mixed 64-bit hash (SplitMix64's finalizer): a cheap, repeatable
/// random draw per request.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Networks and permissions on `verify-api-key-restricted`'s key.
const RESTRICTIONS: usize = 10;
/// In the last of the key's networks (198.51.100.0/24 is TEST-NET-2).
const RESTRICTED_CLIENT_ADDRESS: &str = "198.51.100.7";

/// The key's networks: nine that miss `RESTRICTED_CLIENT_ADDRESS`, then
/// the one that holds it.
fn restricted_network(index: usize) -> String {
    if index + 1 == RESTRICTIONS {
        "198.51.100.0/24".into()
    } else {
        format!("10.{index}.0.0/16")
    }
}

fn restricted_permission(index: usize) -> String {
    format!("models/loadgen-model-{index}")
}

/// Keys `verify-api-key-credits` spends from.
const CREDIT_KEYS: usize = 1000;

async fn create_key(
    keys: &mut ApiKeyServiceClient<InterceptedService<Channel, Bearer>>,
    chatbot_id: &str,
    rate_limit: Option<proto::RateLimit>,
    credits: Option<proto::Credits>,
) -> anyhow::Result<String> {
    Ok(keys
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot_id.into(),
            display_name: "loadgen".into(),
            rate_limit,
            credits,
            ..Default::default()
        })
        .await
        .context("CreateApiKey")?
        .into_inner()
        .key)
}

/// The value at percentile `p` (0-100) of sorted latencies, nearest rank.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(micros: u32) -> f64 {
    f64::from(micros) / 1000.0
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    if args
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate >= 0.001))
    {
        bail!("--rate must be at least 0.001 requests a second");
    }
    let connections = args.connections.min(args.concurrency);
    let duration = match (args.duration_secs, args.requests) {
        (_, Some(_)) => None,
        (Some(secs), None) => Some(Duration::from_secs(secs)),
        (None, None) => Some(Duration::from_secs(10)),
    };

    // Setup goes through tonic's Channel; the measured calls do not.
    let setup_channel = endpoint(&args)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let fixture = Arc::new(set_up(setup_channel, args.rpc).await?);
    let mut connections_for_callers = Vec::with_capacity(connections);
    for _ in 0..connections {
        connections_for_callers.push(
            Connection::open(&args)
                .await
                .with_context(|| format!("connecting to {}", args.addr))?,
        );
    }
    eprintln!(
        "set up {}; running {} with {} callers over {connections} connection(s)",
        fixture.email,
        args.rpc.name(),
        args.concurrency,
    );

    let start = Instant::now();
    let measure_start = start + Duration::from_secs(args.warmup_secs);
    let shared = Arc::new(Shared {
        measure_start,
        deadline: duration.map(|d| measure_start + d),
        request_limit: args.requests,
        started: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        done: AtomicBool::new(false),
        pacer: args.rate.map(|per_second| {
            // Missed ticks fire at once when a caller is free again, so the
            // offered rate holds on average.
            tokio::sync::Mutex::new(tokio::time::interval(Duration::from_secs_f64(
                1.0 / per_second,
            )))
        }),
    });
    let reporter = tokio::spawn(progress(shared.clone(), start));
    let callers: Vec<_> = (0..args.concurrency)
        .map(|id| {
            let channel = connections_for_callers[id % connections].clone();
            let caller = Caller::new(args.rpc, fixture.clone(), channel, id);
            tokio::spawn(run_caller(caller, shared.clone()))
        })
        .collect();

    let mut latencies = Vec::new();
    let mut outcomes: HashMap<Outcome, u64> = HashMap::new();
    let mut messages: HashMap<Code, String> = HashMap::new();
    let mut finished = measure_start;
    for caller in callers {
        let record = caller.await.context("a caller panicked")?;
        latencies.extend(record.latencies_us);
        for (outcome, count) in record.outcomes {
            *outcomes.entry(outcome).or_default() += count;
        }
        for (code, message) in record.messages {
            messages.entry(code).or_insert(message);
        }
        if let Some(end) = record.finished {
            finished = finished.max(end);
        }
    }
    shared.done.store(true, Ordering::Relaxed);
    reporter.abort();

    latencies.sort_unstable();
    let total = latencies.len();
    let elapsed = finished.duration_since(measure_start).as_secs_f64();
    let throughput = if elapsed > 0.0 {
        total as f64 / elapsed
    } else {
        0.0
    };
    let p50 = ms(percentile(&latencies, 50.0));
    let p90 = ms(percentile(&latencies, 90.0));
    let p99 = ms(percentile(&latencies, 99.0));
    let max = ms(latencies.last().copied().unwrap_or(0));
    let mut counts: Vec<(String, u64, Option<&str>)> = outcomes
        .into_iter()
        .map(|(outcome, count)| {
            let message = messages.get(&outcome.code).map(String::as_str);
            (outcome.label(), count, message)
        })
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let ok: u64 = counts
        .iter()
        .filter(|(label, _, _)| label.starts_with("OK"))
        .map(|(_, count, _)| count)
        .sum();
    let ok_throughput = if elapsed > 0.0 {
        ok as f64 / elapsed
    } else {
        0.0
    };

    println!("rpc:          {}", args.rpc.name());
    println!(
        "concurrency:  {} ({connections} connections)",
        args.concurrency
    );
    println!("requests:     {total}");
    println!("duration:     {elapsed:.3} s");
    println!("throughput:   {throughput:.1} req/s ({ok_throughput:.1} req/s OK)");
    println!("latency (ms): p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  max {max:.3}");
    println!("status:");
    for (label, count, message) in &counts {
        match message {
            Some(message) => println!("  {label:<24} {count:>10}  (e.g. {message:?})"),
            None => println!("  {label:<24} {count:>10}"),
        }
    }

    if messages.contains_key(&Code::ResourceExhausted) {
        eprintln!(
            "note: the server's rate limits answered RESOURCE_EXHAUSTED; to measure \
             capacity, start it with --rate-limit-per-user 0 --rate-limit-per-address 0 \
             --rate-limit-per-api-key 0"
        );
    }

    if args.json {
        let status = counts
            .iter()
            .map(|(label, count, _)| format!("{}:{count}", json_string(label)))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{{\"rpc\":{},\"concurrency\":{},\"connections\":{connections},\"requests\":{total},\
             \"ok_requests\":{ok},\"duration_secs\":{elapsed:.3},\
             \"throughput_rps\":{throughput:.1},\"ok_throughput_rps\":{ok_throughput:.1},\
             \"latency_ms\":{{\"p50\":{p50:.3},\"p90\":{p90:.3},\"p99\":{p99:.3},\"max\":{max:.3}}},\
             \"status\":{{{status}}}}}",
            json_string(args.rpc.name()),
            args.concurrency,
        );
    }
    Ok(())
}
