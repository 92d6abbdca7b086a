use chatbot_backend::proto;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

use crate::helpers::{
    assert_code, backend_test, metric_value, scrape, spawn_app_with, KeyOwner, PASSWORD,
};

backend_test! {
    async fn an_authenticated_caller_past_its_rate_gets_resource_exhausted_with_retry_info() {
        let app = spawn_app_with(&[
            "--rate-limit-per-user",
            "1",
            "--rate-limit-burst-factor",
            "3",
        ])
        .await;
        let user = app.new_user().await;
        let mut codes = Vec::new();
        for _ in 0..6 {
            let result = app
                .auth(Some(&user.token))
                .get_current_user(proto::GetCurrentUserRequest {})
                .await;
            match result {
                Ok(_) => codes.push(Code::Ok),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    assert!(status
                        .get_details_retry_info()
                        .and_then(|r| r.retry_delay)
                        .is_some());
                    codes.push(status.code());
                }
            }
        }
        assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
        // Health probes are exempt.
        let mut health = HealthClient::new(app.channel());
        for _ in 0..10 {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
        }
        // Another user has their own bucket.
        let other = app.new_user().await;
        app.auth(Some(&other.token))
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .unwrap();
    }
}

backend_test! {
    async fn anonymous_callers_are_limited_per_address() {
        let app = spawn_app_with(&[
            "--rate-limit-per-address",
            "1",
            "--rate-limit-burst-factor",
            "2",
        ])
        .await;
        let mut exhausted = false;
        for _ in 0..5 {
            if let Err(status) = app.login("nobody@example.com", PASSWORD).await {
                exhausted |= status.code() == Code::ResourceExhausted;
            }
        }
        assert!(exhausted);
    }
}

backend_test! {
    async fn verify_api_key_is_limited_per_key() {
        let app = spawn_app_with(&[
            "--rate-limit-per-api-key",
            "1",
            "--rate-limit-burst-factor",
            "2",
        ])
        .await;
        let KeyOwner { owner, chatbot, created } = app.new_key_owner("bot").await;
        let first = created.key;
        let second = app.create_api_key(&owner, &chatbot.id).await.key;
        let verify = |key: String| {
            let mut client = app.api_keys(None);
            async move {
                client
                    .verify_api_key(proto::VerifyApiKeyRequest { key, ..Default::default() })
                    .await
            }
        };
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(verify(first.clone()).await.map(drop));
        }
        assert_code(results.pop().unwrap(), Code::ResourceExhausted);
        verify(second).await.unwrap();
    }
}

backend_test! {
    async fn metrics_count_rpcs_by_method_and_code_in_go_grpc_prometheus_names() {
        let app = spawn_app_with(&["--metrics-addr", "127.0.0.1:0"]).await;
        let user = app.new_user().await;
        app.auth(Some(&user.token))
            .get_current_user(proto::GetCurrentUserRequest {})
            .await
            .unwrap();
        let _ = app.get_chatbot(&user.token, "bad").await;
        let body = scrape(app.metrics_addr.expect("metrics enabled")).await;
        assert!(body.starts_with("HTTP/1.1 200"));
        for expected in [
            r#"grpc_server_handled_total{grpc_type="unary",grpc_service="chatbot.v1.AuthService",grpc_method="GetCurrentUser",grpc_code="OK"} 1"#,
            r#"grpc_server_handled_total{grpc_type="unary",grpc_service="chatbot.v1.ChatbotService",grpc_method="GetChatbot",grpc_code="InvalidArgument"} 1"#,
            r#"grpc_server_started_total{grpc_type="unary",grpc_service="chatbot.v1.UserService",grpc_method="CreateUser"} 1"#,
            r#"grpc_server_handling_seconds_count{grpc_type="unary",grpc_service="chatbot.v1.AuthService",grpc_method="Login"} 1"#,
            "db_pool_max_connections 4",
            "health_serving 1",
            "cache_invalidations_live 1",
            "db_pool_acquire_timeouts_total 0",
        ] {
            assert!(body.contains(expected), "missing {expected}\n{body}");
        }
    }
}

backend_test! {
    async fn metrics_count_cache_hits_and_misses_and_waits_for_a_connection() {
        let app = spawn_app_with(&["--metrics-addr", "127.0.0.1:0"]).await;
        app.wait_for_api_key_cache().await;
        let KeyOwner { created, .. } = app.new_key_owner("bot").await;
        let addr = app.metrics_addr.expect("metrics enabled");
        let series = |result| format!("cache_lookups_total{{cache=\"api_keys\",result=\"{result}\"}}");
        let before = scrape(addr).await;
        let (hits, misses) = (metric_value(&before, &series("hit")), metric_value(&before, &series("miss")));
        // The first verification reads the row; the next two, the cache.
        for _ in 0..3 {
            assert!(app.verify(&created.key).await.valid);
        }
        let after = scrape(addr).await;
        assert_eq!(metric_value(&after, &series("miss")) - misses, 1.0);
        assert_eq!(metric_value(&after, &series("hit")) - hits, 2.0);
        // Every authenticated call above looked its session up.
        assert!(metric_value(&after, r#"cache_lookups_total{cache="sessions",result="hit"}"#) >= 1.0);
        assert!(metric_value(&after, "db_pool_acquire_seconds_count") >= 1.0);

        // Every series the shipped alerting rules read is one the server serves.
        let rules = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
        )
        .unwrap();
        let families = ["health_", "cache_", "rate_limit_", "db_pool_", "overload_", "grpc_server_"];
        let read: std::collections::BTreeSet<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| families.iter().any(|family| word.starts_with(family)))
            .collect();
        assert!(read.len() >= 8, "{read:?}");
        for name in read {
            assert!(after.contains(&format!("\n{name}")), "the rules read {name}, never served:\n{after}");
        }
    }
}
