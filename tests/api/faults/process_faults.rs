//! Faults in and around the process: a panicking call, the login hash queue
//! full, hashes upgraded under concurrent logins, a listener behind PgBouncer.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_a_call_is_answered_internal_logged_at_error_and_the_server_goes_on() {
    let app = spawn_app().await;
    let KeyOwner { created, .. } = app.new_key_owner("bot").await;
    // The real binary (a debug build) with its test hook: VerifyApiKey
    // panics while it is served.
    let replica = app
        .spawn_replica_process(&[(
            "CHATBOT_BACKEND_DEBUG_PANIC_IN",
            "/chatbot.v1.ApiKeyService/VerifyApiKey",
        )])
        .await;
    let request_id = "panic-test-request";
    let mut request = tonic::Request::new(proto::VerifyApiKeyRequest {
        key: created.key.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    let status = replica
        .api_keys(None)
        .verify_api_key(request)
        .await
        .expect_err("the call panicked");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(
        status.message(),
        "internal error",
        "nothing of the panic leaks"
    );

    // Every other call goes on, on the same connection and process.
    replica
        .users(None)
        .create_user(proto::CreateUserRequest {
            email: "after-the-panic@example.com".into(),
            password: "correct-horse-battery".into(),
            ..Default::default()
        })
        .await
        .expect("served");
    let panic_event = poll_until(
        "the panic is logged",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { replica.log_events() },
        |events| events.iter().any(|event| event["level"] == "ERROR"),
    )
    .await
    .into_iter()
    .find(|event| event["level"] == "ERROR")
    .unwrap();
    let location = panic_event["panic.location"].as_str().unwrap_or_default();
    assert!(location.starts_with("src/"), "with where: {panic_event}");
    assert!(
        panic_event.to_string().contains(request_id),
        "within the call's span: {panic_event}"
    );
    // The process has not died: the same method panics again, answered alike.
    let again = replica
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: created.key,
            ..Default::default()
        })
        .await
        .expect_err("panics again");
    assert_eq!(again.code(), Code::Internal);
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_beyond_the_hash_queue_are_refused_before_they_spend_the_login_budget() {
    const BUDGET: usize = 8;
    let app = spawn_app_with_production_hash_cost(&[
        "--max-concurrent-hashes",
        "1",
        "--max-queued-hashes",
        "2",
        "--login-max-failures-per-email",
        &BUDGET.to_string(),
        "--login-max-failures-per-address",
        "1000",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .await;
    // An unknown email is checked against the dummy hash, at the server's
    // (production) cost, so the flood outlasts the queue.
    let email = "nobody-here@example.com";
    let flood = (0..24).map(|_| app.login(email, "not the password"));
    let answers = futures_util::future::join_all(flood).await;
    let busy = |status: &Status| status.message().contains("busy hashing");
    for answer in &answers {
        let status = answer.as_ref().expect_err("no such account");
        assert!(
            status.code() == Code::Unauthenticated || busy(status),
            "only checked or refused as busy, never throttled: {status:?}"
        );
    }
    some_refused_for_overload(&app, "password_hash", &answers).await;
    let checked = answers
        .iter()
        .filter(|answer| matches!(answer, Err(status) if status.code() == Code::Unauthenticated))
        .count();
    // What the busy refusals did not spend is still there, one check at a
    // time, and then the budget ends.
    for _ in checked..BUDGET {
        let status = app.login(email, "not the password").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let status = app.login(email, "not the password").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too many failed logins"),
        "{status:?}"
    );
}

backend_test! {
    async fn a_login_upgrades_a_hash_made_at_an_older_cost_and_concurrent_logins_all_succeed() {
        let mut old_cost = spawn_app().await;
        let user = old_cost.new_user().await;
        // The same database served at a higher cost (one server at a time:
        // SQLite serves one process per file).
        old_cost.stop().await;
        let app = old_cost
            .spawn_replica(&[
                "--password-hash-memory-kib",
                "64",
                "--password-hash-iterations",
                "2",
                // Concurrent logins each reserve a check from the budget.
                "--login-max-failures-per-email",
                "100",
            ])
            .await;
        let stored_hash = || async {
            let mut conn = app.db.conn().await.unwrap();
            let found = User::find_by_email(&mut conn, &user.email).await.unwrap();
            found.expect("the user").hashed_password
        };
        assert!(stored_hash().await.contains("$m=8,t=1,p=1$"));

        // Logins at once, each with the right password: one upgrades the
        // hash, and those that checked the old one check again and succeed.
        let logins = (0..6).map(|_| app.login(&user.email, &user.password));
        for answer in futures_util::future::join_all(logins).await {
            answer.expect("the right password signs in while the hash is upgraded");
        }
        let upgraded = stored_hash().await;
        assert!(upgraded.contains("$m=64,t=2,p=1$"), "{upgraded}");

        // The new hash holds the same password, and is not replaced again.
        app.login(&user.email, &user.password).await.expect("the same password");
        assert_eq!(stored_hash().await, upgraded);
        // A wrong password upgrades nothing (and checks against the new hash).
        assert_eq!(
            app.login(&user.email, "not the password").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(stored_hash().await, upgraded);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_behind_pgbouncer_in_transaction_mode_is_noticed_and_the_caches_bypassed() {
    let database = TestDatabase::create().await;
    let bouncer = PgBouncer::start_in_transaction_mode(database.postgres_addr()).await;
    let listen_url = database.url_via(bouncer.addr);
    let url = database.url.clone();
    let warning = "does not hear its own notifications";
    let warnings_before = logs().matches(warning).count();
    // A TTL far beyond the test: only a bypassed cache explains a revoke
    // seen at once.
    let app = spawn_app_on(
        database,
        &url,
        &[
            "--database-listen-url",
            &listen_url,
            "--api-key-cache-ttl-secs",
            "600",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs().matches(warning).count() == warnings_before {
        assert!(
            Instant::now() < deadline,
            "the deaf listener was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        logs().matches(warning).count() - warnings_before,
        1,
        "one WARN"
    );
    assert!(!app.api_key_cache.is_active(), "the cache is bypassed");
    let metrics = scrape(app.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("\ncache_invalidations_live 0\n"),
        "the metric says so: {metrics}"
    );

    // A revoke through another replica (listening directly) is refused here
    // at once, though this replica heard nothing.
    let replica = app.spawn_replica_process(&[]).await;
    let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
    assert!(app.verify(&created.key).await.valid);
    replica
        .revoke_api_key(&owner.token, created.api_key.unwrap().id)
        .await
        .expect("revoke through the replica");
    assert_eq!(
        app.verify(&created.key).await.reason(),
        proto::VerifyApiKeyReason::Revoked
    );
}
