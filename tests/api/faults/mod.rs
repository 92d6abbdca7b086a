//! Faults and overload (issue 25): what a store holds is judged, not
//! trusted; a Redis fault of any kind is one outage that ends by itself; a
//! limit change applies at the next call; overload is refused early; a
//! second server on one SQLite file is refused; client addresses in the
//! audit log are shown only to whom they belong.

use std::time::{Duration, Instant};

use chatbot_backend::db::models::User;
use chatbot_backend::proto;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    api_key_update, backend_test, changed_within_a_second, logs, poll_until, scrape,
    server_command, spawn_app, spawn_app_on, spawn_app_with, spawn_app_with_production_hash_cost,
    Backend, Clients, KeyOwner, PgBouncer, TcpProxy, TestApp, TestDatabase, TestUser,
};
use crate::shared_limits::{
    anonymous_call, app_and_replica_on_redis, let_through_alternating, redis_addr, redis_url,
    two_replicas_sharing_redis, RedisPrefix,
};

mod process_faults;

const DAY: i64 = 24 * 3600;

/// A key on a new owner's chatbot allowing `calls` a day.
async fn key_allowing_a_day(app: &TestApp, calls: i64) -> (TestUser, proto::CreateApiKeyResponse) {
    let KeyOwner { owner, chatbot, .. } = app.new_key_owner("bot").await;
    let request = proto::CreateApiKeyRequest {
        display_name: "limited".into(),
        rate_limit: Some(rate_limit(calls)),
        ..Default::default()
    };
    let created = app.create_api_key_with(&owner, &chatbot.id, request).await;
    (owner, created)
}

fn rate_limit(calls_a_day: i64) -> proto::RateLimit {
    proto::RateLimit {
        limit: calls_a_day,
        window: Some(prost_types::Duration {
            seconds: DAY,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// How many of `calls` verifications of `key` answer VALID, in order; the
/// others must be RATE_LIMITED.
async fn valid_calls(clients: &Clients, key: &str, calls: usize) -> usize {
    let mut valid = 0;
    for _ in 0..calls {
        let answer = clients.verify(key).await;
        match proto::VerifyApiKeyReason::try_from(answer.reason) {
            Ok(proto::VerifyApiKeyReason::Valid) => valid += 1,
            Ok(proto::VerifyApiKeyReason::RateLimited) => {}
            other => panic!("a limited key answered {other:?}"),
        }
    }
    valid
}

/// Sets `owner`'s key `id` to allow `calls` a day.
async fn set_daily_limit(app: &TestApp, owner: &TestUser, id: i64, calls: i64) {
    let changes = proto::ApiKey {
        id,
        rate_limit: Some(rate_limit(calls)),
        ..Default::default()
    };
    app.api_keys(Some(&owner.token))
        .update_api_key(api_key_update(changes, &["rate_limit"]))
        .await
        .expect("raise the limit");
}

/// A raised limit lets the next call through at once and a lowered one
/// refuses it, whether the calls are counted in process or in Redis.
async fn a_limit_change_applies_at_the_next_call(app: &TestApp) {
    let (owner, created) = key_allowing_a_day(app, 3).await;
    let id = created.api_key.as_ref().unwrap().id;
    assert_eq!(valid_calls(app, &created.key, 4).await, 3, "3 a day");

    set_daily_limit(app, &owner, id, 10).await;
    assert_eq!(
        valid_calls(app, &created.key, 8).await,
        7,
        "raised from 3 to 10 a day with 3 spent: 7 more at once, then refused"
    );

    set_daily_limit(app, &owner, id, 3).await;
    assert_eq!(
        valid_calls(app, &created.key, 1).await,
        0,
        "lowered to 3 a day with 10 spent: refused"
    );
}

backend_test! {
    async fn a_raised_rate_limit_lets_the_next_call_through_and_a_lowered_one_refuses_it() {
        let app = spawn_app_with(&[]).await;
        a_limit_change_applies_at_the_next_call(&app).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_change_applies_at_the_next_call_when_counted_in_redis() {
    let prefix = RedisPrefix::new();
    let url = redis_url(redis_addr());
    let app = spawn_app_with(&["--redis-url", &url, "--redis-key-prefix", &prefix.0]).await;
    a_limit_change_applies_at_the_next_call(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_changed_through_one_replica_applies_at_once_on_the_other() {
    let prefix = RedisPrefix::new();
    let url = redis_url(redis_addr());
    let (app, replica) = app_and_replica_on_redis(&url, &prefix, &[]).await;
    let (owner, created) = key_allowing_a_day(&app, 3).await;
    let id = created.api_key.as_ref().unwrap().id;
    // Spent on both replicas together, and the key's row is now cached on
    // both.
    let spent = [&*app, &*replica, &*app]
        .into_iter()
        .map(|clients| clients.verify(&created.key));
    for answer in futures_util::future::join_all(spent).await {
        assert!(answer.valid);
    }
    assert!(
        !replica.verify(&created.key).await.valid,
        "3 a day, on both"
    );

    // Raised through the replica: the other lets the next call through.
    let changes = proto::ApiKey {
        id,
        rate_limit: Some(rate_limit(10)),
        ..Default::default()
    };
    replica
        .api_keys(Some(&owner.token))
        .update_api_key(api_key_update(changes, &["rate_limit"]))
        .await
        .expect("raise the limit through the replica");
    assert_eq!(
        valid_calls(&app, &created.key, 8).await,
        7,
        "7 more, through the other"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_changed_through_one_replica_applies_on_the_other_when_each_counts_its_own() {
    // No Redis: each replica counts the key's calls itself, and hears of
    // the change through the database's notifications.
    let app = Backend::Postgres.run(spawn_app_with(&[])).await;
    let replica = app.spawn_replica_process(&[]).await;
    let (owner, created) = key_allowing_a_day(&app, 3).await;
    let id = created.api_key.as_ref().unwrap().id;
    assert_eq!(valid_calls(&replica, &created.key, 4).await, 3, "3 a day");

    set_daily_limit(&app, &owner, id, 10).await;
    let reason = |answer: &proto::VerifyApiKeyResponse| answer.reason;
    let first = changed_within_a_second(
        || replica.verify(&created.key),
        |answer| reason(answer) == proto::VerifyApiKeyReason::Valid as i32,
    )
    .await;
    assert!(first.valid);
    assert_eq!(
        valid_calls(&replica, &created.key, 3).await,
        3,
        "raised from 3 to 10 a day with 3 spent: more at once"
    );

    // 7 spent: lowered to 5, the next call is refused. Calls that poll for
    // the change would spend what they test, so this waits out the
    // promise (the change reaches every replica within a second) instead.
    set_daily_limit(&app, &owner, id, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        valid_calls(&replica, &created.key, 1).await,
        0,
        "lowered to 5 a day with 7 spent: refused"
    );
    set_daily_limit(&app, &owner, id, 10).await;
    let again = changed_within_a_second(
        || replica.verify(&created.key),
        |answer| reason(answer) == proto::VerifyApiKeyReason::Valid as i32,
    )
    .await;
    assert!(again.valid, "raised to 10 again: 3 more");
    assert_eq!(valid_calls(&replica, &created.key, 3).await, 2);
}

/// Writes `command` (e.g. `SET key value`) straight into the tests' Redis.
async fn redis_command(args: &[&str]) {
    let client = redis::Client::open(redis_url(redis_addr())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    let () = command.query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn values_in_redis_the_service_did_not_write_are_judged_and_never_break_a_check() {
    let prefix = RedisPrefix::new();
    let url = redis_url(redis_addr());
    let app = spawn_app_with(&["--redis-url", &url, "--redis-key-prefix", &prefix.0]).await;
    let (_, created) = key_allowing_a_day(&app, 3).await;
    let entry = format!(
        "{}rate:own_limit:{}",
        prefix.0,
        created.api_key.as_ref().unwrap().id
    );
    let warnings = || prefix.logged("Redis did not answer");
    let warnings_before = warnings();

    // A time further ahead than any call could have moved it: a full
    // bucket, which frees a call within the day, not in 10^20 seconds.
    redis_command(&["SET", &entry, "99999999999999999999999999999999"]).await;
    let answer = app.verify(&created.key).await;
    assert_eq!(answer.reason, proto::VerifyApiKeyReason::RateLimited as i32);
    let reset = std::time::SystemTime::try_from(answer.reset_time.expect("a reset time")).unwrap();
    let within = reset
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        within <= Duration::from_secs(DAY as u64),
        "resets in {within:?}"
    );

    // Text that is not a count, and a value of another type, count as no
    // calls yet: the key's limit starts afresh.
    for garbage in [
        &["SET", &entry, "not a number"][..],
        &["HSET", &entry, "f", "v"],
    ] {
        redis_command(&["DEL", &entry]).await;
        redis_command(garbage).await;
        assert_eq!(
            valid_calls(&app, &created.key, 4).await,
            3,
            "after {garbage:?}: the key's own 3 a day"
        );
    }
    assert_eq!(
        warnings(),
        warnings_before,
        "a bad value under one key is not a Redis outage"
    );
}

/// Injects `fault` into Redis's answers (through a proxy) for 1.5 s while
/// two replicas sharing it are under load: each call is still answered,
/// the outage is one WARN and its end one INFO, and the replicas share
/// their limits again by themselves.
async fn a_redis_fault_mid_load_is_one_outage_that_two_replicas_recover_from(
    fault: impl Fn(&TcpProxy),
) {
    let prefix = RedisPrefix::new();
    let proxy = TcpProxy::start(redis_addr()).await;
    let (app, replica) = two_replicas_sharing_redis(&redis_url(proxy.addr), &prefix).await;
    let ours = |message: &str| prefix.logged(message);
    let (warn, info) = ("Redis did not answer", "Redis answers again");
    let (warnings_before, recoveries_before) = (ours(warn), ours(info));

    // Load on both replicas while the fault lasts.
    fault(&proxy);
    let fault_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < fault_until {
        let started = Instant::now();
        let _ = anonymous_call(&app).await;
        let _ = anonymous_call(&replica).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "calls are answered during the fault"
        );
    }
    proxy.restore();

    // Back to Redis by itself within seconds, with one WARN and one INFO.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours(info) == recoveries_before {
        assert!(Instant::now() < deadline, "never went back to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ours(warn) - warnings_before, 1, "one WARN per outage");
    assert_eq!(ours(info) - recoveries_before, 1, "one INFO at recovery");

    // Both replicas share the limit again: wait out the buckets, then the
    // shared burst of three is all that ten calls through both get.
    let mut through = 0;
    for attempt in 0..10 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let refilled;
        (through, refilled) = let_through_alternating(&app, &replica).await;
        if (3..=3 + refilled).contains(&through) {
            return;
        }
        eprintln!("attempt {attempt}: {through} of 10 through; the replica may still be probing");
    }
    panic!("{through} of 10 calls through two replicas: the limit is not shared again");
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_from_redis_that_are_not_replies_end_in_one_outage_that_two_replicas_recover_from() {
    a_redis_fault_mid_load_is_one_outage_that_two_replicas_recover_from(TcpProxy::garble).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_stops_answering_is_one_outage_that_two_replicas_recover_from() {
    a_redis_fault_mid_load_is_one_outage_that_two_replicas_recover_from(TcpProxy::silence).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_beyond_the_batch_queue_are_refused_at_once_with_retry_info_and_counted() {
    let app = spawn_app_with(&[
        "--max-queued-batch-items",
        "1",
        "--read-batches-in-flight",
        "1",
        "--chatbot-cache-capacity",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .await;
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "busy").await;
    let reads = (0..200).map(|_| app.get_chatbot(&owner.token, &chatbot.id));
    let answers = futures_util::future::join_all(reads).await;
    some_refused_for_overload(&app, "chatbot_reads", &answers).await;
}

backend_test! {
    async fn a_user_reading_their_chatbots_audit_log_does_not_see_the_admins_address() {
        let app = spawn_app_with(&[]).await;
        let KeyOwner { owner, chatbot, .. } = app.new_key_owner("bot").await;
        let admin = app.new_admin().await;
        app.delete_api_key(&admin.token, {
            let keys = app
                .api_keys(Some(&owner.token))
                .list_api_keys(proto::ListApiKeysRequest {
                    chatbot_id: chatbot.id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            keys.api_keys[0].id
        })
        .await
        .expect("the admin deletes the key");

        let events = |token: String| {
            let app = &app;
            async move {
                app.audit(Some(&token))
                    .list_audit_events(proto::ListAuditEventsRequest {
                        action: "api_key.delete".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .audit_events
            }
        };
        let seen_by_owner = events(owner.token.clone()).await;
        assert_eq!(seen_by_owner.len(), 1, "the owner sees the deletion");
        assert_eq!(seen_by_owner[0].client_address, "", "but not where the admin called from");
        let seen_by_admin = events(admin.token.clone()).await;
        assert_eq!(seen_by_admin.len(), 1);
        assert_ne!(seen_by_admin[0].client_address, "", "the admin sees it");

        // The owner's own events keep the owner's address.
        let own = app
            .audit(Some(&owner.token))
            .list_audit_events(proto::ListAuditEventsRequest {
                action: "api_key.create".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        assert_ne!(own[0].client_address, "");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_sqlite_file_is_refused_at_start() {
    let app = Backend::Sqlite.run(spawn_app_with(&[])).await;
    let output = server_command()
        .arg("serve")
        .env("DATABASE_URL", &app.database_url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SECRET_KEY", crate::helpers::SECRET_KEY)
        .output()
        .await
        .expect("the binary runs");
    assert!(
        !output.status.success(),
        "a second server must not serve the file"
    );
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("another process is serving"), "{said}");
    // The first goes on serving.
    let _ = app.new_user().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ups_beyond_the_hash_queue_are_refused_at_once_with_retry_info_and_counted() {
    let app = spawn_app_with_production_hash_cost(&[
        "--max-concurrent-hashes",
        "1",
        "--max-queued-hashes",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .await;
    let sign_ups = (0..24).map(|n| {
        let mut users = app.users(None);
        async move {
            users
                .create_user(proto::CreateUserRequest {
                    email: format!("flood-{n}@example.com"),
                    password: "correct-horse-battery".into(),
                    ..Default::default()
                })
                .await
        }
    });
    let answers = futures_util::future::join_all(sign_ups).await;
    some_refused_for_overload(&app, "password_hash", &answers).await;
}

/// Asserts that some, not all, of `answers` were refused because the bounded
/// queue `queue` was full: RESOURCE_EXHAUSTED with a retry time, each
/// counted in the `overload_refusals` metric. Other errors are answers of
/// calls that were served (a wrong password, say).
async fn some_refused_for_overload<T>(app: &TestApp, queue: &str, answers: &[Result<T, Status>]) {
    let refused: Vec<_> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().err())
        .filter(|status| status.code() != Code::Unauthenticated)
        .collect();
    assert!(
        !refused.is_empty(),
        "{} calls at once, none refused",
        answers.len()
    );
    assert!(refused.len() < answers.len(), "the queue still takes some");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status.get_details_retry_info().expect("RetryInfo detail");
        assert!(retry.retry_delay.is_some(), "{status:?}");
    }
    let metrics = scrape(app.metrics_addr.unwrap()).await;
    let series = format!("overload_refusals_total{{queue=\"{queue}\"}} ");
    let counted: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .expect("the refusals are counted")
        .parse()
        .unwrap();
    assert_eq!(counted, refused.len() as f64);
}
