//! Rate limits shared through Redis (`REDIS_URL`): one limit for every
//! replica, and an in-process fallback while Redis does not answer. Each
//! test writes under its own key prefix in its own Redis database and
//! deletes what it wrote.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatbot_backend::proto;
use tonic::Code;

use crate::helpers::{
    finish_in_drop, logs, scrape, spawn_app_with, Clients, ReplicaProcess, TcpProxy, TestApp,
};

/// Redis database the tests use, apart from anything else on the server.
const TEST_REDIS_DB: u32 = 9;

pub fn redis_addr() -> SocketAddr {
    std::env::var("TEST_REDIS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:6379".into())
        .parse()
        .expect("TEST_REDIS_ADDR is host:port")
}

pub fn redis_url(addr: SocketAddr) -> String {
    format!("redis://{addr}/{TEST_REDIS_DB}")
}

/// A key prefix of this test's own, whose keys are deleted on drop.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(format!("test-{}:", uuid::Uuid::new_v4().simple()))
    }

    /// How many lines the in-process servers of this prefix have logged
    /// with `message` (other tests' servers log into the same capture).
    pub fn logged(&self, message: &str) -> usize {
        logs()
            .lines()
            .filter(|line| line.contains(message) && line.contains(&self.0))
            .count()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url(redis_addr())) else {
            return;
        };
        let pattern = format!("{}*", self.0);
        finish_in_drop(async move {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        });
    }
}

/// An anonymous call, counted against the client's address: `Ok` if the
/// limit let it through (the server then answers UNAUTHENTICATED), `Err`
/// if the limit refused it.
pub async fn anonymous_call(clients: &Clients) -> Result<(), ()> {
    let status = clients
        .auth(None)
        .get_current_user(proto::GetCurrentUserRequest {})
        .await
        .expect_err("no token, no user");
    match status.code() {
        Code::Unauthenticated => Ok(()),
        Code::ResourceExhausted => Err(()),
        other => panic!("a rate-limited anonymous call answered {other:?}: {status:?}"),
    }
}

/// One anonymous call a second per client address, in bursts of three.
pub const ONE_CALL_A_SECOND_PER_ADDRESS: [&str; 4] = [
    "--rate-limit-per-address",
    "1",
    "--rate-limit-burst-factor",
    "3",
];

/// A server and a replica process sharing Redis at `url` under `prefix`,
/// each started with `flags` (the replica with each flag's environment
/// variable).
pub async fn app_and_replica_on_redis(
    url: &str,
    prefix: &RedisPrefix,
    flags: &[&str],
) -> (TestApp, ReplicaProcess) {
    let redis = ["--redis-url", url, "--redis-key-prefix", &prefix.0];
    let app = spawn_app_with(&[flags, &redis].concat()).await;
    let env: Vec<(String, &str)> = flags
        .chunks(2)
        .chain(redis.chunks(2))
        .map(|pair| {
            let name = pair[0].trim_start_matches("--").replace('-', "_");
            (name.to_uppercase(), pair[1])
        })
        .collect();
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), *value))
        .collect();
    let replica = app.spawn_replica_process(&env).await;
    (app, replica)
}

/// A server and a replica process sharing Redis at `url` under `prefix`,
/// each allowing one anonymous call a second per address, in bursts of
/// three.
pub async fn two_replicas_sharing_redis(
    url: &str,
    prefix: &RedisPrefix,
) -> (TestApp, ReplicaProcess) {
    app_and_replica_on_redis(url, prefix, &ONE_CALL_A_SECOND_PER_ADDRESS).await
}

/// Ten anonymous calls alternating between `one` and `other`: how many the
/// address limit let through, and the whole seconds they took (each
/// refills one call).
pub async fn let_through_alternating(one: &Clients, other: &Clients) -> (usize, usize) {
    let started = Instant::now();
    let mut allowed = 0;
    for call in 0..10 {
        let through = if call % 2 == 0 { one } else { other };
        allowed += usize::from(anonymous_call(through).await.is_ok());
    }
    (
        allowed,
        usize::try_from(started.elapsed().as_secs()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sharing_redis_enforce_one_limit_between_them() {
    let prefix = RedisPrefix::new();
    let (app, replica) = two_replicas_sharing_redis(&redis_url(redis_addr()), &prefix).await;
    let (allowed, refilled) = let_through_alternating(&app, &replica).await;
    // Each replica counting alone would let 3 + 3 through; shared, the
    // burst of 3 (plus one per second the calls took) is all.
    assert!(
        (3..=3 + refilled).contains(&allowed),
        "{allowed} of 10 calls through two replicas were let through; the shared burst is 3 (+{refilled} refilled)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_falls_back_to_counting_in_process_and_recovers() {
    let prefix = RedisPrefix::new();
    let proxy = TcpProxy::start(redis_addr()).await;
    let app = spawn_app_with(&[
        "--rate-limit-per-address",
        "1",
        "--rate-limit-burst-factor",
        "3",
        "--metrics-addr",
        "127.0.0.1:0",
        "--redis-url",
        &redis_url(proxy.addr),
        "--redis-key-prefix",
        &prefix.0,
    ])
    .await;
    let fallback_warning = "Redis did not answer a rate-limit check";
    let warnings_before = prefix.logged(fallback_warning);
    let store_up = |metrics: &str| metrics.contains("\nrate_limit_store_up 1\n");
    assert!(
        store_up(&scrape(app.metrics_addr.unwrap()).await),
        "Redis in use"
    );

    // Shared counts: two of the burst of three spent in Redis.
    for _ in 0..2 {
        anonymous_call(&app).await.expect("within the burst");
    }

    proxy.cut();
    // Every call is still answered at once, now by this process's own
    // bucket, which still limits: a fresh burst of three, then refusals.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        answers.push(anonymous_call(&app).await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a check during the outage waited {:?}",
            started.elapsed()
        );
    }
    assert!(
        answers.iter().any(Result::is_ok) && answers.iter().any(Result::is_err),
        "during the outage the in-process limit should let some calls through and refuse others: {answers:?}"
    );
    assert_eq!(
        prefix.logged(fallback_warning) - warnings_before,
        1,
        "one WARN per outage, not one per call"
    );
    let metrics = scrape(app.metrics_addr.unwrap()).await;
    let fallbacks: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("rate_limit_store_fallbacks_total "))
        .expect("the fallback counter is exported")
        .parse()
        .unwrap();
    assert!(
        fallbacks >= 6.0,
        "{fallbacks} fallbacks counted for 6 checks during the outage"
    );
    assert!(metrics.contains("\nrate_limit_store_up 0\n"), "{metrics}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while prefix.logged("Redis answers again") == 0 {
        assert!(Instant::now() < deadline, "never went back to Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = anonymous_call(&app).await;
    }
    assert!(
        store_up(&scrape(app.metrics_addr.unwrap()).await),
        "Redis in use again"
    );
}

/// A key's limit in credits (tokens an hour) is one budget for every
/// replica when Redis counts it: each call weighs its cost, wherever it
/// lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_limit_in_credits_is_shared_by_two_replicas_through_redis() {
    let prefix = RedisPrefix::new();
    let (app, replica) = two_replicas_sharing_redis(&redis_url(redis_addr()), &prefix).await;
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "tokens").await;
    let limit = proto::RateLimit {
        limit: 100,
        window: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        unit: proto::RateLimitUnit::Credits.into(),
    };
    let created = app
        .create_api_key_with(
            &owner,
            &chatbot.id,
            proto::CreateApiKeyRequest {
                rate_limit: Some(limit),
                ..Default::default()
            },
        )
        .await;
    let key = created.key.as_str();
    use crate::helpers::verify_costing as verify;
    assert!(verify(&app, key, 60).await.valid);
    let over = verify(&replica, key, 50).await;
    assert_eq!(
        over.reason(),
        proto::VerifyApiKeyReason::RateLimited,
        "60 + 50 through two replicas"
    );
    assert!(verify(&replica, key, 40).await.valid);
    assert_eq!(
        verify(&app, key, 1).await.reason(),
        proto::VerifyApiKeyReason::RateLimited
    );
}
