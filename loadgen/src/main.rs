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

mod caller;
mod connection;
mod setup;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use tonic::Code;

use caller::{progress, run_caller, Caller, Outcome, Shared};
use connection::Connection;
use setup::{endpoint, set_up};

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
