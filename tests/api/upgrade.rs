//! A database written by the previous version of the service (the binary
//! `.ci/upgrade_check.sh` builds from main's previous commit, named by
//! `UPGRADE_FROM_BINARY`), with rows in every table, is migrated by this
//! version and serves the same data; and the previous version keeps
//! serving on the migrated schema, as README's rolling-upgrade rule says.

use std::time::Duration;

use chatbot_backend::proto::{self, VerifyApiKeyReason};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use tokio::process::{Child, Command};

use crate::helpers::{
    serving_addr, spawn_app_on, spawn_logging_json, Backend, Clients, TestDatabase, SECRET_KEY,
};

const PASSWORD: &str = "correct-horse-battery";

/// The previous version serving `database_url` (migrating it first unless
/// `migrate` is false), and clients of it.
async fn previous_version(binary: &str, database_url: &str, migrate: bool) -> (Child, Clients) {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SECRET_KEY", SECRET_KEY)
        .env("MIGRATE_ON_START", migrate.to_string())
        .env("SHUTDOWN_DRAIN_DELAY_SECS", "0")
        .env("USAGE_FLUSH_INTERVAL_SECS", "1")
        .env("RATE_LIMIT_PER_USER", "0")
        .env("RATE_LIMIT_PER_ADDRESS", "0")
        // A version that publishes events to NATS does (and so fills its
        // table of how far it got); an older one ignores these.
        .env(
            "NATS_URL",
            format!(
                "nats://{}",
                std::env::var("TEST_NATS_ADDR").unwrap_or_else(|_| "127.0.0.1:4222".into())
            ),
        )
        .env("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("NATS_STREAM", "UPGRADE_CHECK")
        .env("NATS_SUBJECT_PREFIX", "upgrade.check");
    let mut child = spawn_logging_json(&mut command);
    let addr = serving_addr(&mut child, |_| {}).await;
    (child, Clients::connect(addr).await)
}

/// SIGTERM, and the exit it promises (flushing what it counted).
async fn stop(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(exited.expect("exits in time").unwrap().success());
}

#[derive(QueryableByName)]
struct TableRows {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the previous version's binary: run by .ci/upgrade_check.sh"]
async fn a_database_of_the_previous_version_migrates_serves_the_same_data_and_still_serves_it() {
    let binary = std::env::var("UPGRADE_FROM_BINARY")
        .expect("UPGRADE_FROM_BINARY names the previous version's binary");
    let database = Backend::Postgres.run(TestDatabase::create_empty()).await;
    let url = database.url.clone();

    // The previous version writes a row into every table.
    let (old, clients) = previous_version(&binary, &url, true).await;
    let email = format!("upgrade-{}@example.com", uuid::Uuid::new_v4().simple());
    let user_id = clients
        .users(None)
        .create_user(proto::CreateUserRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let failed = clients.login(&email, "not the password").await;
    assert_eq!(failed.unwrap_err().code(), tonic::Code::Unauthenticated);
    let login = clients.login(&email, PASSWORD).await.unwrap();
    let token = login.access_token.clone();
    let chatbot = clients
        .create_chatbot_from(
            &token,
            proto::CreateChatbotRequest {
                name: "upgraded".into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
                // A version with request ids records it (its table gets a
                // row); an older one ignores the field.
                request_id: "3d0c8a4e-5b1f-4c2a-8e7d-9f6a1b2c3d4e".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let created = clients
        .api_keys(Some(&token))
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot.id.clone(),
            display_name: "limited".into(),
            credits: Some(proto::Credits {
                remaining: 100,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key_id = created.api_key.as_ref().unwrap().id;
    for _ in 0..3 {
        assert!(clients.verify(&created.key).await.valid);
    }
    // A previous version with reservations holds 5 in one (filling their
    // table); one without them ignores `reserve` and spends the 5.
    let held = clients
        .api_keys(None)
        .verify_api_key(proto::VerifyApiKeyRequest {
            key: created.key.clone(),
            cost: 5,
            reserve: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(held.valid, "{held:?}");
    let refreshed = clients.refresh(&login.refresh_token).await.unwrap();
    // A previous version with organizations fills their tables too; one
    // without them answers UNIMPLEMENTED, and has no such tables.
    let organizations = clients.organizations(Some(&token));
    let team = organizations
        .clone()
        .create_organization(proto::CreateOrganizationRequest {
            name: "upgraded team".into(),
            ..Default::default()
        })
        .await;
    match team {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}"),
        Ok(team) => {
            let team_id = team.into_inner().organization.unwrap().id;
            // One with organizations' limits gives the team credits too;
            // one without refuses the mask path.
            let limited = organizations
                .clone()
                .update_organization(proto::UpdateOrganizationRequest {
                    organization: Some(proto::Organization {
                        id: team_id.clone(),
                        credits: Some(proto::Credits {
                            remaining: 1000,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["credits".into()],
                    }),
                    ..Default::default()
                })
                .await;
            if let Err(status) = limited {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            }
            organizations
                .clone()
                .create_invitation(proto::CreateInvitationRequest {
                    organization_id: team_id.clone(),
                    email: "invited@example.com".into(),
                    role: proto::OrganizationRole::Viewer.into(),
                    ttl: None,
                    ..Default::default()
                })
                .await
                .unwrap();
            // One with webhooks delivers the team's next event to one
            // (filling both of their tables); one without answers
            // UNIMPLEMENTED.
            let receiver = crate::webhooks::Receiver::start().await;
            let hooked = clients
                .webhooks(Some(&token))
                .create_webhook(proto::CreateWebhookRequest {
                    organization_id: team_id.clone(),
                    webhook: Some(proto::Webhook {
                        url: receiver.url.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await;
            match hooked {
                Err(status) => assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}"),
                Ok(_) => {
                    receiver.wait_for(1).await;
                }
            }
            organizations
                .clone()
                .create_service_account(proto::CreateServiceAccountRequest {
                    organization_id: team_id,
                    name: "upgraded service".into(),
                    role: proto::OrganizationRole::Viewer.into(),
                    expire_time: None,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let mut sql =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&url)
            .await
            .unwrap();
    // A version that publishes events has published the organization's
    // (within a second or so) before it stops.
    for _ in 0..100 {
        let unpublished: Vec<TableRows> = diesel::sql_query(
            "SELECT 'organization_event_publications' AS name, count(*) AS rows \
             FROM organization_event_counters c \
             WHERE to_regclass('organization_event_publications') IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM organization_event_publications p \
             WHERE p.organization_id = c.organization_id \
             AND p.published_sequence = c.last_sequence)",
        )
        .load(&mut sql)
        .await
        .unwrap_or_default();
        if unpublished.iter().all(|table| table.rows == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(old).await;

    let mut sql =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&url)
            .await
            .unwrap();
    let tables: Vec<TableRows> = diesel::sql_query(
        "SELECT table_name::text AS name, \
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', table_name), \
         false, true, '')))[1]::text::bigint AS rows \
         FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut sql)
    .await
    .unwrap();
    assert!(tables.len() >= 9, "every table is there");
    for table in &tables {
        assert!(
            table.rows > 0,
            "the previous version left {} empty",
            table.name
        );
    }

    // This version migrates it and serves the same data.
    let new = spawn_app_on(database, &url, &[]).await;
    new.login(&email, PASSWORD)
        .await
        .expect("the same user signs in");
    let again = new.refresh(&refreshed.refresh_token).await;
    assert!(
        again.is_ok(),
        "a session of the previous version renews: {again:?}"
    );
    let token = again.unwrap().access_token;
    let migrated = new.read_chatbot(&token, &chatbot.id).await;
    assert_eq!(migrated.name, "upgraded");
    assert_eq!(
        migrated.organization_id, user_id,
        "the chatbot moved into its owner's personal organization"
    );
    let verified = new.verify(&created.key).await;
    assert_eq!(verified.reason(), VerifyApiKeyReason::Valid);
    // This version settles what the previous one reserved, at what it held.
    if !held.reservation_id.is_empty() {
        let settled = new
            .api_keys(None)
            .settle_reservation(proto::SettleReservationRequest {
                reservation_id: held.reservation_id.clone(),
                actual_cost: 5,
            })
            .await
            .expect("a reservation of the previous version settles");
        assert_eq!(settled.into_inner().reservation.unwrap().charged_cost, 5);
    }
    let usage = new
        .api_keys(Some(&token))
        .get_api_key_usage(proto::GetApiKeyUsageRequest {
            api_key_id: key_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        usage.total.unwrap().valid >= 3,
        "the previous version's counts"
    );

    // The previous version keeps serving on the migrated schema (a replica
    // not yet replaced in a rolling upgrade).
    let (old, clients) = previous_version(&binary, &url, false).await;
    clients
        .login(&email, PASSWORD)
        .await
        .expect("signs in on the old version");
    assert!(clients.verify(&created.key).await.valid);
    // What it creates lands in its owner's personal organization (the
    // migration's triggers), and a user it signs up gets one.
    let made_by_old = clients
        .create_chatbot_from(
            &token,
            proto::CreateChatbotRequest {
                name: "made by the old version".into(),
                llm_endpoint_url: "https://llm.example.com/v1/chat".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen = new.read_chatbot(&token, &made_by_old.id).await;
    assert_eq!(seen.organization_id, user_id);
    let newcomer = format!("newcomer-{}@example.com", uuid::Uuid::new_v4().simple());
    clients
        .users(None)
        .create_user(proto::CreateUserRequest {
            email: newcomer.clone(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let newcomer_token = new.login(&newcomer, PASSWORD).await.unwrap().access_token;
    let theirs = new
        .organizations(Some(&newcomer_token))
        .list_organizations(proto::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .organizations;
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].personal);
    let spent = new
        .api_keys(Some(&token))
        .get_api_key(proto::GetApiKeyRequest { id: key_id })
        .await
        .unwrap()
        .into_inner();
    let remaining = spent.api_key.unwrap().credits.unwrap().remaining;
    assert_eq!(
        remaining,
        100 - 5 - 5,
        "every spend by either version counted once, and the reservation's 5"
    );
    drop(old);
}
