//! Process lifecycle under stress: SIGTERM with calls in flight, and a
//! database outage cut by a TCP proxy the test controls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatbot_backend::proto;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

use crate::helpers::{
    backend_test, serving_addr, spawn_app_on, spawn_logging_json, Bearer, TcpProxy, TestDatabase,
    PASSWORD, SECRET_KEY,
};

async fn health_status(channel: Channel, service: &str) -> Option<i32> {
    let mut health = HealthClient::new(channel);
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    tokio::time::timeout(Duration::from_secs(2), health.check(request))
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner().status)
}

backend_test! {
    async fn sigterm_lets_every_in_flight_call_finish_and_exits_zero() {
        let database = TestDatabase::create().await;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"));
        command
            .arg("serve")
            .env("DATABASE_URL", &database.url)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
            .env("SECRET_KEY", SECRET_KEY)
            .env("SHUTDOWN_DRAIN_DELAY_SECS", "1")
            .env("SHUTDOWN_GRACE_SECS", "10")
            .env("RATE_LIMIT_PER_USER", "0")
            .env("RATE_LIMIT_PER_ADDRESS", "0")
            // Logins in flight count against the email's budget until they
            // succeed; this test runs 12 at once.
            .env("LOGIN_MAX_FAILURES_PER_EMAIL", "100")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "100");
        let mut child = spawn_logging_json(&mut command);

        let addr = serving_addr(&mut child, |_| {}).await;

        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let users =
            || chatbot_backend::proto::user_service_client::UserServiceClient::new(channel.clone());
        users()
            .create_user(proto::CreateUserRequest {
                email: "term@example.com".into(),
                password: PASSWORD.into(),
                role: 0,
            })
            .await
            .unwrap();
        let auth =
            || chatbot_backend::proto::auth_service_client::AuthServiceClient::new(channel.clone());
        let login = || {
            let mut client = auth();
            async move {
                client
                    .login(proto::LoginRequest {
                        email: "term@example.com".into(),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let token = login().await.unwrap().access_token;

        // Slow calls (argon2, two at a time) in flight when the signal lands.
        let slow: Vec<_> = (0..12).map(|_| tokio::spawn(login())).collect();
        // Cheap calls keep coming, as from a load balancer, until health says
        // NOT_SERVING.
        let cheap = {
            let channel = channel.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    if health_status(channel.clone(), "").await != Some(ServingStatus::Serving as i32) {
                        return results;
                    }
                    let mut client = chatbot_backend::proto::auth_service_client::AuthServiceClient::with_interceptor(
                        channel.clone(),
                        Bearer(Some(token.clone())),
                    );
                    results.push(
                        client
                            .get_current_user(proto::GetCurrentUserRequest {})
                            .await
                            .map(drop),
                    );
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());

        for call in slow {
            call.await
                .unwrap()
                .expect("an in-flight login failed during shutdown");
        }
        let cheap = cheap.await.unwrap();
        assert!(!cheap.is_empty());
        for result in cheap {
            result.expect("a call made while SERVING failed");
        }
        let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
            .await
            .expect("the server exits before the hard deadline")
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
    }
}

/// Polls readiness every 100 ms until it reports `want` (at most `polls`
/// times); also reports whether liveness stayed SERVING throughout.
async fn wait_for_readiness(channel: Channel, want: ServingStatus, polls: usize) -> (bool, bool) {
    let mut liveness_stayed_up = true;
    for _ in 0..polls {
        tokio::time::sleep(Duration::from_millis(100)).await;
        liveness_stayed_up &=
            health_status(channel.clone(), "liveness").await == Some(ServingStatus::Serving as i32);
        if health_status(channel.clone(), "").await == Some(want as i32) {
            return (true, liveness_stayed_up);
        }
    }
    (false, liveness_stayed_up)
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_answers_unavailable_flips_readiness_and_loses_no_acknowledged_write() {
    let database = TestDatabase::create().await;
    let proxy = TcpProxy::start(database.postgres_addr()).await;
    let via_proxy = database.url_via(proxy.addr);
    let direct_url = database.url.clone();
    let app = spawn_app_on(
        database,
        &via_proxy,
        &[
            "--health-check-interval-secs",
            "1",
            "--database-acquire-timeout-ms",
            "1000",
            "--database-connect-timeout-ms",
            "1000",
        ],
    )
    .await;
    let user = app.new_user().await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.chatbots(Some(&user.token));
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut failures = Vec::new();
                let mut n = 0;
                while !AtomicBool::load(&stop, Ordering::SeqCst) {
                    n += 1;
                    let mut request = tonic::Request::new(proto::CreateChatbotRequest {
                        name: format!("w{w}-{n}"),
                        llm_endpoint_url: "https://llm.example.com".into(),
                        ..Default::default()
                    });
                    request.set_timeout(Duration::from_secs(5));
                    let started = Instant::now();
                    match client.create_chatbot(request).await {
                        Ok(response) => {
                            acknowledged.push(response.into_inner().chatbot.unwrap().id)
                        }
                        Err(status) => failures.push((
                            status.code(),
                            status.message().to_owned(),
                            started.elapsed(),
                        )),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (acknowledged, failures)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    let (saw_not_serving, mut liveness_stayed_up) =
        wait_for_readiness(app.channel(), ServingStatus::NotServing, 50).await;
    assert!(
        saw_not_serving,
        "readiness never reported NOT_SERVING during the outage"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.restore();
    let (serving_again, live) =
        wait_for_readiness(app.channel(), ServingStatus::Serving, 100).await;
    liveness_stayed_up &= live;
    assert!(serving_again, "readiness did not recover without a restart");
    assert!(liveness_stayed_up, "liveness must not follow the database");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);

    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    for writer in writers {
        let (ok, failed) = writer.await.unwrap();
        acknowledged.extend(ok);
        failures.extend(failed);
    }
    assert!(
        !failures.is_empty(),
        "the outage was not observed by any call"
    );
    for (code, message, elapsed) in &failures {
        assert_eq!(*code, Code::Unavailable, "{message}");
        assert!(!message.to_lowercase().contains("sql"), "leaked: {message}");
        assert!(
            *elapsed < Duration::from_secs(5),
            "a call hung for {elapsed:?}"
        );
    }

    // Requests succeed again, and every acknowledged write is stored.
    app.create_chatbot(&user, "after the outage").await;
    let mut conn = diesel_async::AsyncPgConnection::establish_direct(&direct_url).await;
    let stored: Vec<Id> = diesel::sql_query("SELECT id::text AS id FROM chatbots")
        .load(&mut conn)
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().map(|r| r.id).collect();
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged chatbot {id} was lost");
    }
    assert!(acknowledged.len() > 4);
}

trait EstablishDirect {
    async fn establish_direct(url: &str) -> Self;
}

impl EstablishDirect for diesel_async::AsyncPgConnection {
    async fn establish_direct(url: &str) -> Self {
        <Self as diesel_async::AsyncConnection>::establish(url)
            .await
            .unwrap()
    }
}

/// SQLite-only by nature: what a newcomer's `cargo run` does.
#[tokio::test(flavor = "multi_thread")]
async fn with_no_database_url_the_binary_serves_from_a_sqlite_file_in_its_working_directory() {
    let workdir = std::env::temp_dir().join(format!("cbtest_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&workdir).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"));
    command
        .current_dir(&workdir)
        .env_remove("DATABASE_URL")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        // The default console port would be shared with any other server.
        .env("CONSOLE_LISTEN_ADDR", "127.0.0.1:0");
    let mut child = spawn_logging_json(&mut command);

    let mut backend_logged = false;
    let addr = serving_addr(&mut child, |event| {
        backend_logged |= event["backend"] == "sqlite";
    })
    .await;
    assert!(backend_logged, "the log names the store in use");

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        health_status(channel.clone(), "").await,
        Some(ServingStatus::Serving as i32)
    );
    let user = chatbot_backend::proto::user_service_client::UserServiceClient::new(channel)
        .create_user(proto::CreateUserRequest {
            email: "newcomer@example.com".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("sign-up works with zero setup")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "newcomer@example.com");
    assert!(workdir.join("chatbot-backend.db").is_file());

    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&workdir);
}
