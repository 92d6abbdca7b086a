use chatbot_backend::proto;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

use crate::helpers::{
    assert_code, backend_test, spawn_app, spawn_app_on, Backend, KeyOwner, TestDatabase,
};

backend_test! {
    async fn health_reports_serving_for_the_server_liveness_and_each_service() {
        let app = spawn_app().await;
        let mut health = HealthClient::new(app.channel());
        for service in [
            "",
            "liveness",
            "chatbot.v1.UserService",
            "chatbot.v1.ApiKeyService",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        assert_code(
            health
                .check(HealthCheckRequest {
                    service: "no.such.Service".into(),
                })
                .await,
            Code::NotFound,
        );
    }
}

backend_test! {
    async fn reflection_lists_every_service_over_v1_and_v1alpha() {
        use tokio_stream::StreamExt;
        let app = spawn_app().await;

        let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            app.channel(),
        );
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        };
        let mut stream = v1
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.next().await.unwrap().unwrap();
        let Some(
            tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
                list,
            ),
        ) = response.message_response
        else {
            panic!("unexpected reflection response");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "chatbot.v1.UserService",
            "chatbot.v1.ChatbotService",
            "chatbot.v1.ApiKeyService",
            "chatbot.v1.AuthService",
            "chatbot.v1.StatusService",
            "envoy.service.auth.v3.Authorization",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }

        // grpcurl decodes our error details, and describes and calls
        // Envoy's Check, through these.
        for symbol in ["google.rpc.BadRequest", "envoy.service.auth.v3.Authorization"] {
            let mut v1alpha =
                tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
                    app.channel(),
                );
            let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                        symbol.into(),
                    ),
                ),
            };
            let mut stream = v1alpha
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.next().await.unwrap().unwrap();
            assert!(
                matches!(
                    response.message_response,
                    Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
                ),
                "{symbol} must be resolvable by reflection"
            );
        }
    }
}

backend_test! {
    async fn database_status_reports_backend_schema_and_counts_to_admins_only() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let KeyOwner { owner: user, .. } = app.new_key_owner("bot").await;

        let status = app.database_status(&admin.token).await;
        #[allow(deprecated)] // still answered, always true
        let connected = status.connected;
        assert!(connected);
        assert_eq!(status.backend, Backend::current().name());
        assert_eq!(status.schema_version, newest_migration_version());
        assert_eq!(
            (
                status.user_count,
                status.chatbot_count,
                status.api_key_count
            ),
            (2, 1, 1)
        );
        assert!(status.latency.is_some());
        assert!(!status.server_version.is_empty());

        assert_code(
            app.status(Some(&user.token))
                .get_database_status(proto::GetDatabaseStatusRequest {})
                .await,
            Code::PermissionDenied,
        );
    }
}

/// The newest migration's version, as GetDatabaseStatus reports it: the
/// digits of `migrations/<backend>/`'s last directory name before the `_`.
fn newest_migration_version() -> String {
    let backend = match Backend::current() {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let newest = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .max()
        .expect("at least one migration");
    newest
        .split('_')
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

backend_test! {
    async fn a_server_started_on_an_empty_database_migrates_it_to_the_newest_schema() {
        // Other tests start on a copy of a migrated template; this one runs
        // the server's own migrations from nothing.
        let database = TestDatabase::create_empty().await;
        let url = database.url.clone();
        let app = spawn_app_on(database, &url, &[]).await;
        let admin = app.new_admin().await;
        let status = app.database_status(&admin.token).await;
        assert_eq!(status.schema_version, newest_migration_version());
        let user = app.new_user().await;
        app.create_chatbot(&user, "bot").await;
    }
}

backend_test! {
    async fn requests_larger_than_the_limit_are_resource_exhausted() {
        let app = spawn_app().await;
        let result = app
            .users(None)
            .create_user(proto::CreateUserRequest {
                email: "big@example.com".into(),
                password: "x".repeat(200 * 1024),
                role: 0,
            })
            .await;
        assert_code(result, Code::ResourceExhausted);
    }
}

backend_test! {
    async fn the_server_stops_gracefully_when_asked() {
        let mut app = spawn_app().await;
        let user = app.new_user().await;
        app.create_chatbot(&user, "bot").await;
        app.stop().await;
        // Nothing answers any more: the call fails to connect, not with an
        // answer from a server still half up.
        assert_code(
            app.users(None)
                .list_users(proto::ListUsersRequest::default())
                .await,
            Code::Unavailable,
        );
    }
}

/// Settings under which the server would start but could not work: each
/// stops the real binary at start, with an error naming the setting.
#[tokio::test(flavor = "multi_thread")]
async fn a_setting_that_cannot_work_stops_the_start_naming_itself() {
    let unworkable = [
        ("DEFAULT_RPC_TIMEOUT_SECS", "0"),
        ("DATABASE_CONNECT_TIMEOUT_MS", "0"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "0"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "0"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "3000000000"),
        ("MAX_CONCURRENT_REQUESTS_PER_CONNECTION", "0"),
        ("MAX_CONCURRENT_REQUESTS_PER_CONNECTION", "5000000000"),
        ("READ_BATCHES_IN_FLIGHT", "0"),
        ("LOGIN_MAX_FAILURES_PER_EMAIL", "0"),
        ("LOGIN_MAX_FAILURES_PER_ADDRESS", "0"),
        ("LOGIN_THROTTLE_WINDOW_SECS", "0"),
        ("ACCESS_TOKEN_TTL_SECS", "18446744073709551615"),
        ("REFRESH_TOKEN_TTL_SECS", "0"),
        ("RATE_LIMIT_BURST_FACTOR", "0"),
        ("MAX_CONCURRENT_HASHES", "0"),
        ("DATABASE_POOL_SIZE", "0"),
        ("MAX_REQUEST_BYTES", "10"),
        ("HEALTH_CHECK_INTERVAL_SECS", "0"),
        ("PASSWORD_HASH_MEMORY_KIB", "7"),
        ("PASSWORD_HASH_ITERATIONS", "0"),
        ("PASSWORD_HASH_MEMORY_KIB", "1048577"),
        ("PASSWORD_HASH_ITERATIONS", "101"),
        ("CONSOLE_ALLOWED_ORIGINS", "ops.example.com"),
        ("CONSOLE_LISTEN_ADDR", "localhost"),
    ];
    let scratch = std::env::temp_dir().join(format!("settings-{}", uuid::Uuid::new_v4()));
    // The starts run at once, each in a directory of its own, so a store
    // opened by one start is blamed on that start alone.
    let mut starts = tokio::task::JoinSet::new();
    for (index, (name, value)) in unworkable.into_iter().enumerate() {
        let workdir = scratch.join(index.to_string());
        std::fs::create_dir_all(&workdir).unwrap();
        starts.spawn(async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"))
                .arg("serve")
                .current_dir(&workdir)
                .env("DATABASE_URL", workdir.join("never-created.db"))
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env("CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
                .env(name, value)
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(std::time::Duration::from_secs(30), output)
                .await
                .unwrap_or_else(|_| {
                    panic!("{name}={value}: the server started instead of stopping")
                })
                .unwrap();
            let store_created = workdir.join("never-created.db").exists();
            (name, value, output, store_created)
        });
    }
    for (name, value, output, store_created) in starts.join_all().await {
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{name}={value} was accepted");
        assert!(printed.contains(name), "{name}={value}: {printed}");
        assert!(
            !store_created,
            "{name}={value}: the store was opened before the settings were checked"
        );
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}
