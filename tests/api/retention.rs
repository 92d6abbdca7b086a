//! Tables that grow with traffic are purged: each kind of expired row goes
//! and the live rows beside it stay.

use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::helpers::{migrate, poll_until, spawn_app, Backend, KeyOwner};

#[derive(QueryableByName, Debug, PartialEq)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

async fn texts(conn: &mut AsyncPgConnection, query: &str) -> Vec<String> {
    let rows: Vec<Text> = diesel::sql_query(query).load(conn).await.unwrap();
    rows.into_iter().map(|row| row.value).collect()
}

async fn run(conn: &mut AsyncPgConnection, statement: &str) {
    diesel::sql_query(statement).execute(conn).await.unwrap();
}

/// The id of `email`'s newest session.
async fn newest_session(conn: &mut AsyncPgConnection, email: &str) -> String {
    texts(
        conn,
        &format!(
            "SELECT s.id::text AS value FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.email = '{email}' ORDER BY s.created_at DESC LIMIT 1"
        ),
    )
    .await
    .remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_ended_sessions_old_usage_and_old_audit_events_are_purged_and_live_rows_stay(
) {
    let mut app = Backend::Postgres.run(spawn_app()).await;
    let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
    let key_id = created.api_key.as_ref().unwrap().id;
    let mut conn = app.sql().await;
    // A live session, started long ago but renewed since: it stays.
    let live = newest_session(&mut conn, &owner.email).await;
    // A session logged out long ago.
    let logged_out = app.login(&owner.email, &owner.password).await.unwrap();
    let ended = newest_session(&mut conn, &owner.email).await;
    app.logout(&logged_out.access_token, &logged_out.refresh_token)
        .await
        .unwrap();
    // A session never renewed, whose refresh token expired long ago.
    app.login(&owner.email, &owner.password).await.unwrap();
    let abandoned = newest_session(&mut conn, &owner.email).await;
    for (session, started, ended_at) in [
        (&live, "60 days", None),
        (&ended, "60 days", Some("40 days")),
        (&abandoned, "60 days", None),
    ] {
        run(
            &mut conn,
            &format!("UPDATE sessions SET created_at = now() - interval '{started}' WHERE id = '{session}'"),
        )
        .await;
        if let Some(ended_at) = ended_at {
            run(
                &mut conn,
                &format!(
                    "UPDATE sessions SET revoked_at = now() - interval '{ended_at}' WHERE id = '{session}'"
                ),
            )
            .await;
        }
    }
    // The abandoned session's tokens expired 40 days ago; the logged-out
    // one's yesterday, which is kept (within the 30 days).
    for (family, expired) in [(&abandoned, "40 days"), (&ended, "1 day")] {
        run(
            &mut conn,
            &format!(
                "UPDATE refresh_tokens SET expires_at = now() - interval '{expired}' \
                 WHERE family_id = '{family}'"
            ),
        )
        .await;
    }
    // Usage: an hour 500 days ago goes, one 10 days ago stays.
    for age in ["500 days", "10 days"] {
        run(
            &mut conn,
            &format!(
                "INSERT INTO api_key_usage (api_key_id, hour, chatbot_id, valid, revoked, expired, \
                 rate_limited, usage_exceeded, credits_spent) \
                 SELECT id, date_trunc('hour', now() - interval '{age}'), chatbot_id, 1, 0, 0, 0, 0, 0 \
                 FROM api_keys WHERE id = {key_id}"
            ),
        )
        .await;
    }
    // The oldest audit event is made 400 days old; the rest are new.
    let audit_ids = texts(
        &mut conn,
        "SELECT id::text AS value FROM audit_events ORDER BY id",
    )
    .await;
    assert!(audit_ids.len() > 2);
    run(
        &mut conn,
        &format!(
            "UPDATE audit_events SET occurred_at = now() - interval '400 days', \
             last_occurred_at = now() - interval '400 days' WHERE id = {}",
            audit_ids[0]
        ),
    )
    .await;

    // Invitations: one that expired 40 days ago goes, one expired
    // yesterday stays.
    let team = app.create_organization(&owner, "team").await;
    let mut invitations = Vec::new();
    for (email, expired) in [
        ("old@example.com", "40 days"),
        ("recent@example.com", "1 day"),
    ] {
        let invitation = app
            .invite(
                &owner,
                &team.id,
                email,
                chatbot_backend::proto::OrganizationRole::Viewer,
            )
            .await
            .invitation
            .unwrap();
        run(
            &mut conn,
            &format!(
                "UPDATE organization_invitations SET expires_at = now() - interval '{expired}' \
                 WHERE id = '{}'",
                invitation.id
            ),
        )
        .await;
        invitations.push(invitation.id);
    }

    // Servers starting on the database purge at once; two starting
    // together only find less to delete each.
    app.stop().await;
    let (replica, _other) = tokio::join!(app.spawn_replica(&[]), app.spawn_replica(&[]));
    let sessions = || async {
        let mut conn = replica.sql().await;
        let mut ids = texts(&mut conn, "SELECT id::text AS value FROM sessions").await;
        ids.sort();
        ids
    };
    // Only the live session stays. The logged-out one ended 40 days ago and
    // goes, though its (revoked) tokens stay until 30 days past expiry.
    let expected = vec![live.clone()];
    poll_until(
        "the ended sessions are purged",
        Duration::from_secs(10),
        Duration::from_millis(50),
        sessions,
        |ids| *ids == expected,
    )
    .await;
    // Invitations are purged last: once they are, every table is.
    let invitations_left = || async {
        let mut conn = replica.sql().await;
        texts(
            &mut conn,
            "SELECT id::text AS value FROM organization_invitations",
        )
        .await
    };
    let recent = vec![invitations[1].clone()];
    poll_until(
        "the expired invitation is purged",
        Duration::from_secs(10),
        Duration::from_millis(50),
        invitations_left,
        |ids| *ids == recent,
    )
    .await;
    let mut conn = replica.sql().await;
    let families = texts(
        &mut conn,
        "SELECT DISTINCT family_id::text AS value FROM refresh_tokens",
    )
    .await;
    assert!(
        !families.contains(&abandoned),
        "expired 40 days ago: purged"
    );
    assert!(families.contains(&live), "the live session's tokens stay");
    assert!(families.contains(&ended), "expired yesterday: kept");
    let usage_ages = texts(
        &mut conn,
        "SELECT (extract(day FROM now() - hour))::int::text AS value FROM api_key_usage",
    )
    .await;
    assert_eq!(
        usage_ages,
        vec!["10".to_owned()],
        "only the recent hour stays"
    );
    let audit_left = texts(
        &mut conn,
        "SELECT id::text AS value FROM audit_events ORDER BY id",
    )
    .await;
    assert!(!audit_left.contains(&audit_ids[0]), "400 days old: purged");
    assert!(
        audit_ids[1..].iter().all(|id| audit_left.contains(id)),
        "new ones stay"
    );

    // The live session still works through the new server.
    let me = replica
        .auth(Some(&owner.token))
        .get_current_user(chatbot_backend::proto::GetCurrentUserRequest {})
        .await;
    assert!(me.is_ok(), "{me:?}");
}

crate::helpers::backend_test! {
    async fn migrate_revert_undoes_an_index_only_migration_but_refuses_to_drop_data_unless_told() {
        let mut app = crate::helpers::spawn_app().await;
        let user = app.new_user().await;
        let chatbot = app.create_chatbot(&user, "kept").await;
        app.stop().await;
        let url = app.database_url.clone();

        // Newest first, each migration and whether reverting it drops data
        // (refused, then done when told) or not (done at once): 000020 only
        // drops the chatbot changes' triggers; the next nine drop the
        // creates' request ids, the lifecycle notices, the
        // webhooks, the events' publication and state, the organizations'
        // events and limits, the replacement link, the rate limits' unit and
        // the credit reservations; 000010 only drops the key announcements'
        // trigger; 000009 and 000008 drop key restrictions and
        // organizations; 000007 only drops indexes; 000006 drops the audit
        // log with its events.
        for (version, drops_data) in [
            ("20261214000020", false),
            ("20261213000019", true),
            ("20261212000018", true),
            ("20261211000017", true),
            ("20261210000016", true),
            ("20261209000015", true),
            ("20261208000014", true),
            ("20261207000013", true),
            ("20261207000012", true),
            ("20261207000011", true),
            ("20261206000010", false),
            ("20261205000009", true),
            ("20261205000008", true),
            ("20261204000007", false),
            ("20261130000006", true),
        ] {
            let (mut ok, mut said) = migrate(&url, &["--revert"]).await;
            if drops_data {
                assert!(!ok, "{version} refused: {said}");
                assert!(said.contains("--destroy-data"), "{said}");
                (ok, said) = migrate(&url, &["--revert", "--destroy-data"]).await;
            }
            assert!(ok, "{said}");
            assert!(said.contains(&format!("reverted migration {version}")), "{said}");
        }

        // Applied again, the data that was never dropped is all there, and
        // the chatbot is in its owner's personal organization again.
        let (ok, said) = migrate(&url, &[]).await;
        assert!(ok, "{said}");
        let replica = app.spawn_replica(&[]).await;
        let login = replica.login(&user.email, &user.password).await.expect("the user is still there");
        let again = replica.read_chatbot(&login.access_token, &chatbot.id).await;
        assert_eq!(again.organization_id, user.id);
    }
}

/// Raw SQL on either store: what the server wrote is aged by hand.
enum Store {
    Postgres(AsyncPgConnection),
    Sqlite(diesel::SqliteConnection),
}

impl Store {
    async fn open(app: &crate::helpers::TestApp) -> Self {
        match app.database_url.strip_prefix("sqlite://") {
            Some(path) => Self::Sqlite(
                <diesel::SqliteConnection as diesel::Connection>::establish(path).unwrap(),
            ),
            None => Self::Postgres(app.sql().await),
        }
    }

    async fn run(&mut self, statement: &str) {
        match self {
            Self::Postgres(conn) => run(conn, statement).await,
            Self::Sqlite(conn) => {
                diesel::RunQueryDsl::execute(diesel::sql_query(statement), conn).unwrap();
            }
        }
    }

    async fn count(&mut self, table: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            rows: i64,
        }
        let query = diesel::sql_query(format!("SELECT COUNT(*) AS rows FROM {table}"));
        let counted: Vec<Count> = match self {
            Self::Postgres(conn) => query.load(conn).await.unwrap(),
            Self::Sqlite(conn) => diesel::RunQueryDsl::load(query, conn).unwrap(),
        };
        counted[0].rows
    }
}

/// An instant `days` ago as both stores read it in a literal.
fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

crate::helpers::backend_test! {
    async fn the_purges_run_on_both_stores() {
        let mut app = spawn_app().await;
        let KeyOwner { owner, .. } = app.new_key_owner("bot").await;
        let ended = app.login(&owner.email, &owner.password).await.unwrap();
        app.logout(&ended.access_token, &ended.refresh_token).await.unwrap();
        let mut store = Store::open(&app).await;
        let (sessions, audit_events) = (store.count("sessions").await, store.count("audit_events").await);
        let (long_ago, old_hour) = (days_ago(60), days_ago(500));
        let (ended_at, stale) = (days_ago(40), days_ago(400));
        store.run(&format!("UPDATE sessions SET created_at = '{long_ago}'")).await;
        store.run(&format!("UPDATE sessions SET revoked_at = '{ended_at}' WHERE revoked_at IS NOT NULL")).await;
        store.run(&format!("UPDATE refresh_tokens SET expires_at = '{ended_at}' WHERE revoked_at IS NOT NULL")).await;
        store.run(&format!(
            "UPDATE audit_events SET occurred_at = '{stale}', last_occurred_at = '{stale}' \
             WHERE id = (SELECT MIN(id) FROM audit_events)"
        )).await;
        store.run(&format!(
            "INSERT INTO api_key_usage (api_key_id, hour, chatbot_id, valid, revoked, expired, \
             rate_limited, usage_exceeded, credits_spent) \
             SELECT id, '{old_hour}', chatbot_id, 1, 0, 0, 0, 0, 0 FROM api_keys"
        )).await;
        drop(store);

        app.stop().await;
        let _restarted = app.spawn_replica(&[]).await;
        let app = &app;
        crate::helpers::eventually(0, || async move {
            Store::open(app).await.count("api_key_usage").await
        })
        .await;
        let mut store = Store::open(app).await;
        assert_eq!(store.count("sessions").await, sessions - 1, "the ended session goes, the live one stays");
        assert_eq!(store.count("audit_events").await, audit_events - 1);
        assert_eq!(
            store.count("refresh_tokens").await,
            1,
            "the live session's token stays; the expired one goes"
        );
    }
}

crate::helpers::backend_test! {
    async fn finished_reservations_old_deliveries_old_request_ids_and_ended_login_windows_go_and_live_ones_stay() {
        use crate::helpers::{reserve, settle};
        use crate::webhooks::{create_webhook, Receiver, FLAGS};

        let receiver = Receiver::start().await;
        let mut app = crate::helpers::spawn_app_with(FLAGS).await;
        let KeyOwner { owner, created, .. } = app.new_key_owner("bot").await;
        let key = created.key;
        create_webhook(&app, &owner, &owner.id, &receiver.url, &[]).await.unwrap();
        // Two creates with request ids (each also a webhook delivery).
        for (request_id, name) in [
            ("0b7f6a52-8f0e-4f4e-9b7e-1c2d3e4f5a61", "first"),
            ("0b7f6a52-8f0e-4f4e-9b7e-1c2d3e4f5a62", "second"),
        ] {
            crate::retried_creates::create_chatbot(&app, &owner, &owner.id, request_id, name)
                .await
                .unwrap();
        }
        // Two reservations settled and one left open.
        for _ in 0..2 {
            let reserved = reserve(&app, &key, 10).await;
            settle(&app, &reserved.reservation_id, 5).await.unwrap();
        }
        let open = reserve(&app, &key, 10).await;
        assert!(open.valid, "{open:?}");
        // Failed logins: a window for each email and one for the address.
        for email in ["nobody@example.com", &owner.email] {
            let refused = app.login(email, "wrong password").await;
            assert!(refused.is_err());
        }
        // The webhook's own event and the two creates, delivered.
        receiver.wait_for(3).await;

        let mut store = Store::open(&app).await;
        let before = [
            ("credit_reservations", store.count("credit_reservations").await),
            ("webhook_deliveries", store.count("webhook_deliveries").await),
            ("create_requests", store.count("create_requests").await),
            ("login_attempts", store.count("login_attempts").await),
        ];
        assert_eq!(
            before.map(|(_, rows)| rows),
            [3, 3, 2, 3],
            "what the calls left: {before:?}"
        );
        // One of each is aged past its retention: a reservation and a
        // delivery finished 40 days ago (30 are kept), a request id 2 days
        // old (one is kept), a login window that started 2 days ago (15
        // minutes long). The open reservation is made as old: it stays.
        let (long_ago, days_ago_2) = (days_ago(40), days_ago(2));
        store.run(&format!(
            "UPDATE credit_reservations SET created_at = '{long_ago}', finished_at = '{long_ago}' \
             WHERE token_hash = (SELECT token_hash FROM credit_reservations WHERE state = 'settled' LIMIT 1)"
        )).await;
        store.run(&format!(
            "UPDATE credit_reservations SET created_at = '{long_ago}' WHERE state = 'open'"
        )).await;
        store.run(&format!(
            "UPDATE webhook_deliveries SET created_at = '{long_ago}', last_attempt_at = '{long_ago}' \
             WHERE id = (SELECT id FROM webhook_deliveries LIMIT 1)"
        )).await;
        store.run(&format!(
            "UPDATE create_requests SET created_at = '{days_ago_2}' \
             WHERE request_id = '0b7f6a52-8f0e-4f4e-9b7e-1c2d3e4f5a61'"
        )).await;
        store.run(&format!(
            "UPDATE login_attempts SET window_start = '{days_ago_2}' \
             WHERE subject = (SELECT subject FROM login_attempts LIMIT 1)"
        )).await;
        drop(store);

        // Servers starting on the database purge at once; on PostgreSQL
        // two start together and only find less to delete each (a SQLite
        // file has one server). The login windows go with the throttle's
        // sweep (every flush interval).
        app.stop().await;
        let mut flags = FLAGS.to_vec();
        flags.extend(["--last-used-flush-interval-secs", "1"]);
        let _replicas = match app.database_url.starts_with("sqlite://") {
            true => vec![app.spawn_replica(&flags).await],
            false => {
                let (first, second) =
                    tokio::join!(app.spawn_replica(&flags), app.spawn_replica(&flags));
                vec![first, second]
            }
        };
        let app = &app;
        let counts = || async move {
            let mut store = Store::open(app).await;
            [
                store.count("credit_reservations").await,
                store.count("webhook_deliveries").await,
                store.count("create_requests").await,
                store.count("login_attempts").await,
            ]
        };
        crate::helpers::eventually([2, 2, 1, 2], counts).await;
        let mut store = Store::open(app).await;
        let states = {
            #[derive(QueryableByName)]
            struct State {
                #[diesel(sql_type = diesel::sql_types::Text)]
                state: String,
            }
            let query = diesel::sql_query("SELECT state FROM credit_reservations ORDER BY state");
            let rows: Vec<State> = match &mut store {
                Store::Postgres(conn) => query.load(conn).await.unwrap(),
                Store::Sqlite(conn) => diesel::RunQueryDsl::load(query, conn).unwrap(),
            };
            rows.into_iter().map(|row| row.state).collect::<Vec<_>>()
        };
        assert_eq!(states, ["open", "settled"], "the open one stays, however old");
    }
}
