//! TLS to PostgreSQL (`sslmode`, `sslrootcert` in `DATABASE_URL`) and to
//! Redis (`rediss://`, `REDIS_CA_FILE`), against servers of the test's own
//! with certificates it makes: a PostgreSQL with `ssl = on` (or off) and a
//! Redis on a `tls-port`. The server runs as its own process, so a refused
//! start is seen as an operator sees it: an exit and a message naming the
//! setting.

use std::time::{Duration, Instant};

use chatbot_backend::proto;
use tokio::process::Child;

use crate::shared_limits::ONE_CALL_A_SECOND_PER_ADDRESS;

use crate::helpers::{
    migrate, serving_addr, spawn_app_with, spawn_logging_json, Clients, TlsFiles, TlsPostgres,
    TlsRedis, PASSWORD, SECRET_KEY,
};
use crate::shared_limits::anonymous_call;

/// The server binary with test settings and `env`, nothing inherited that
/// could change where it connects.
fn server(env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = crate::helpers::server_command();
    command
        .arg("serve")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SECRET_KEY", SECRET_KEY)
        .env("SHUTDOWN_DRAIN_DELAY_SECS", "0")
        .env("DATABASE_POOL_SIZE", "2")
        .env("RATE_LIMIT_PER_USER", "0")
        .env("RATE_LIMIT_PER_ADDRESS", "0")
        .env("RATE_LIMIT_PER_API_KEY", "0")
        .kill_on_drop(true);
    for name in [
        "DATABASE_LISTEN_URL",
        "REDIS_URL",
        "REDIS_CA_FILE",
        "MIGRATE_ON_START",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// A server started with `env`, once it serves.
async fn serving(env: &[(&str, &str)]) -> (Child, Clients) {
    let mut child = spawn_logging_json(&mut server(env));
    let addr = serving_addr(&mut child, |_| {}).await;
    (child, Clients::connect(addr).await)
}

/// What a server started with `env` said as it failed to start; panics if
/// it started.
async fn start_fails(env: &[(&str, &str)]) -> String {
    let output = tokio::time::timeout(Duration::from_secs(60), server(env).output())
        .await
        .expect("the server gives up in time")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the server started: {said}");
    said
}

/// Sign-up, login, a chatbot and a key through `clients`: the key
/// verifies VALID.
async fn a_key_verifies(clients: &Clients) {
    let email = format!("tls-{}@example.com", uuid::Uuid::new_v4().simple());
    clients
        .users(None)
        .create_user(proto::CreateUserRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            role: 0,
        })
        .await
        .expect("sign-up succeeds");
    let token = clients.login(&email, PASSWORD).await.unwrap().access_token;
    let chatbot = clients
        .create_chatbot_from(
            &token,
            proto::CreateChatbotRequest {
                name: "over TLS".into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let key = clients
        .api_keys(Some(&token))
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot.id,
            display_name: "tls".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let answer = clients.verify(&key).await;
    assert!(answer.valid, "{answer:?}");
}

/// Waits until the server's connections to `postgres` include its pool's
/// and its listener's (whose last statement is the LISTEN, or a barrier it
/// sent itself, the only statement it sends with its text inline), and
/// returns whether each is encrypted.
async fn pool_and_listener_encryption(postgres: &TlsPostgres) -> Vec<bool> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let connections = postgres.server_connections().await;
        let listening = connections.iter().any(|(_, query)| {
            query.starts_with("LISTEN")
                || query.starts_with("SELECT pg_notify('chatbot_api_key_invalidation'")
        });
        if listening && connections.len() >= 2 {
            return connections.into_iter().map(|(ssl, _)| ssl).collect();
        }
        assert!(
            Instant::now() < deadline,
            "the pool's and the listener's connections never showed: {connections:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_with_the_right_ca_and_host_name_serves_with_every_connection_encrypted() {
    let files = TlsFiles::generate();
    let postgres = TlsPostgres::start(Some(&files)).await;
    let ca = files.ca.display().to_string();
    let url = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    // Migrations (which also create the database) run over the same TLS.
    let (_server, clients) = serving(&[("DATABASE_URL", &url)]).await;
    a_key_verifies(&clients).await;
    let encrypted = pool_and_listener_encryption(&postgres).await;
    assert!(encrypted.iter().all(|&ssl| ssl), "{encrypted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migrate_command_connects_over_tls_and_refuses_a_certificate_that_fails_the_check() {
    let files = TlsFiles::generate();
    // Plaintext to database `chatbot` is refused, so a migration that
    // connects at all connected encrypted.
    let postgres = TlsPostgres::start_refusing_plaintext(&files).await;
    let (ca, wrong_ca) = (
        files.ca.display().to_string(),
        files.wrong_ca.display().to_string(),
    );
    let plaintext = postgres.url("localhost", "sslmode=disable");
    let verified = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let another_ca = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
    );
    let (migrated, said) = migrate(&verified, &[]).await;
    assert!(migrated, "migrate over verify-full: {said}");
    // The cluster does refuse plaintext (else the line above proves
    // nothing), and the migrations are all there.
    let (migrated, said) = migrate(&plaintext, &[]).await;
    assert!(!migrated && said.contains("no encryption"), "{said}");
    let (migrated, said) = migrate(&another_ca, &[]).await;
    assert!(!migrated, "{said}");
    assert!(
        said.contains("DATABASE_URL's sslmode=verify-full")
            && said.contains("invalid peer certificate"),
        "{said}"
    );
    // Migrated once: the server over TLS starts on the schema and serves.
    let (_server, clients) =
        serving(&[("DATABASE_URL", &verified), ("MIGRATE_ON_START", "false")]).await;
    a_key_verifies(&clients).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let files = TlsFiles::generate();
    let postgres = TlsPostgres::start(Some(&files)).await;
    let ca = files.ca.display().to_string();
    // The certificate is for localhost only.
    let url = postgres.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let (_server, clients) = serving(&[("DATABASE_URL", &url)]).await;
    a_key_verifies(&clients).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_certificate_that_fails_the_check_stops_the_start_naming_the_setting() {
    let files = TlsFiles::generate();
    let postgres = TlsPostgres::start(Some(&files)).await;
    let (ca, wrong_ca) = (
        files.ca.display().to_string(),
        files.wrong_ca.display().to_string(),
    );
    let good = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let another_ca = postgres.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
    );
    let another_host = postgres.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    // As libpq: require with a root certificate checks the chain.
    let require_another_ca = postgres.url(
        "localhost",
        &format!("sslmode=require&sslrootcert={wrong_ca}"),
    );
    for (url, migrate) in [
        (&another_ca, "true"),
        (&another_ca, "false"),
        (&another_host, "true"),
        (&another_host, "false"),
        (&require_another_ca, "true"),
    ] {
        let said = start_fails(&[("DATABASE_URL", url), ("MIGRATE_ON_START", migrate)]).await;
        assert!(
            said.contains("DATABASE_URL's sslmode=") && said.contains("sslrootcert="),
            "{url} (MIGRATE_ON_START={migrate}): {said}"
        );
        assert!(said.contains("invalid peer certificate"), "{said}");
    }
    // The listener's own URL is checked as well, and named.
    let said = start_fails(&[
        ("DATABASE_URL", &good),
        ("DATABASE_LISTEN_URL", &another_ca),
    ])
    .await;
    assert!(
        said.contains("DATABASE_LISTEN_URL's sslmode=verify-full"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn require_and_verify_modes_refuse_a_postgres_without_tls_and_prefer_falls_back() {
    let files = TlsFiles::generate();
    let postgres = TlsPostgres::start(None).await;
    let ca = files.ca.display().to_string();
    for query in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let url = postgres.url("localhost", &query);
        let said = start_fails(&[("DATABASE_URL", &url)]).await;
        assert!(said.contains("DATABASE_URL's sslmode="), "{said}");
        assert!(said.contains("server does not support TLS"), "{said}");
    }
    // prefer, libpq's default: plaintext when the server refuses TLS.
    for url in [
        postgres.url("localhost", "sslmode=prefer"),
        postgres.url("localhost", ""),
    ] {
        let (server, clients) = serving(&[("DATABASE_URL", &url)]).await;
        a_key_verifies(&clients).await;
        let encrypted = pool_and_listener_encryption(&postgres).await;
        assert!(encrypted.iter().all(|&ssl| !ssl), "{encrypted:?}");
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_require_and_prefer_against_a_tls_postgres_behave_as_libpq() {
    let files = TlsFiles::generate();
    let postgres = TlsPostgres::start(Some(&files)).await;
    // (query, encrypted): disable never asks for TLS; prefer and require
    // use it without checking the certificate (no sslrootcert), whoever
    // signed it and whatever name it is for.
    for (query, encrypted) in [
        ("sslmode=disable", false),
        ("sslmode=prefer", true),
        ("sslmode=require", true),
    ] {
        let url = postgres.url("127.0.0.1", query);
        let mut server = spawn_logging_json(&mut server(&[("DATABASE_URL", &url)]));
        let addr = serving_addr(&mut server, |_| {}).await;
        a_key_verifies(&Clients::connect(addr).await).await;
        let seen = pool_and_listener_encryption(&postgres).await;
        assert!(
            seen.iter().all(|&ssl| ssl == encrypted),
            "{query}: {seen:?}"
        );
        // Its connections gone before the next one's are counted.
        server.kill().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !postgres.server_connections().await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the killed server's connections stay"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_the_right_ca_counts_rate_limits_in_redis() {
    let files = TlsFiles::generate();
    let redis = TlsRedis::start(&files).await;
    let prefix = format!("tls-{}:", uuid::Uuid::new_v4().simple());
    let redis_flags = [
        "--redis-url",
        &redis.url("localhost"),
        "--redis-ca-file",
        files.ca.to_str().unwrap(),
        "--redis-key-prefix",
        &prefix,
    ];
    let app = spawn_app_with(&[&ONE_CALL_A_SECOND_PER_ADDRESS[..], &redis_flags].concat()).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(anonymous_call(&app).await);
    }
    assert!(
        answers[..3].iter().all(Result::is_ok) && answers.iter().any(Result::is_err),
        "a burst of three, then refusals: {answers:?}"
    );
    // The counts are in that Redis, reached over TLS here too.
    let client = redis::Client::build_with_tls(
        redis.url("localhost"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&files.ca).unwrap()),
        },
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}rate:address:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_certificate_that_fails_the_check_stops_the_start_naming_the_setting() {
    let files = TlsFiles::generate();
    let redis = TlsRedis::start(&files).await;
    let dir = crate::helpers::TempDir::new("tls-sqlite");
    let database = format!("sqlite://{}", dir.0.join("chatbot.db").display());
    let (ca, wrong_ca) = (files.ca.to_str().unwrap(), files.wrong_ca.to_str().unwrap());
    for (url, ca_file) in [
        (redis.url("localhost"), wrong_ca),
        // The certificate is for localhost only.
        (redis.url("127.0.0.1"), ca),
    ] {
        let said = start_fails(&[
            ("DATABASE_URL", &database),
            ("REDIS_URL", &url),
            ("REDIS_CA_FILE", ca_file),
        ])
        .await;
        assert!(
            said.contains("REDIS_URL (rediss://, REDIS_CA_FILE="),
            "{url}: {said}"
        );
        assert!(said.contains("invalid peer certificate"), "{said}");
    }
    // A CA file without a rediss:// URL is a mistake, named at once.
    let said = start_fails(&[
        ("DATABASE_URL", &database),
        ("REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("REDIS_CA_FILE", ca),
    ])
    .await;
    assert!(said.contains("REDIS_CA_FILE needs a rediss://"), "{said}");
}
