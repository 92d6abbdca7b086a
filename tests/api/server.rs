use chatbot_backend::proto;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;

use crate::helpers::{assert_code, backend_test, spawn_app, Backend};

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
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }

        let mut v1alpha =
            tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
                app.channel(),
            );
        let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "google.rpc.BadRequest".into(),
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
            "google.rpc error details must be resolvable for grpcurl"
        );
    }
}

backend_test! {
    async fn database_status_reports_backend_schema_and_counts_to_admins_only() {
        let app = spawn_app().await;
        let admin = app.new_admin().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "bot").await;
        app.create_api_key(&user, &chatbot.id).await;

        let status = app
            .status(Some(&admin.token))
            .get_database_status(proto::GetDatabaseStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(status.connected);
        assert_eq!(status.backend, Backend::current().name());
        assert_eq!(status.schema_version, "20261128000002");
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
        assert!(app
            .users(None)
            .list_users(proto::ListUsersRequest::default())
            .await
            .is_err());
    }
}
