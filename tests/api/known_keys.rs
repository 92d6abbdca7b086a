//! Made-up keys cost no query (issue 28): a well-formed key that does not
//! exist is answered NOT_FOUND from the set of known keys, and a key created
//! on one replica verifies at once on every other, whatever the listener
//! between them is doing.

use std::time::Duration;

use chatbot_backend::domain::ApiKeySecret;
use chatbot_backend::proto;
use futures_util::future::join_all;

use crate::helpers::{backend_test, spawn_app, Clients, TcpProxy, TestApp};

fn issued_a_day_ago() -> String {
    let a_day_ago = chrono::Utc::now().timestamp() - 86_400;
    ApiKeySecret::generate_issued_at(a_day_ago)
        .expose()
        .to_owned()
}

fn issued_now() -> String {
    ApiKeySecret::generate().expose().to_owned()
}

async fn not_found(clients: &Clients, key: String) {
    let answer = clients.verify(&key).await;
    assert!(!answer.valid);
    assert_eq!(answer.reason, proto::VerifyApiKeyReason::NotFound as i32);
}

/// A key CreateApiKey made through `through` on a new chatbot of a new
/// user of `app`.
async fn create_key_through(app: &TestApp, through: &Clients) -> String {
    let owner = app.new_user().await;
    let chatbot = app.create_chatbot(&owner, "bot").await;
    through
        .api_keys(Some(&owner.token))
        .create_api_key(proto::CreateApiKeyRequest {
            chatbot_id: chatbot.id,
            display_name: "key".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
}

backend_test! {
    async fn made_up_keys_of_any_issue_time_are_not_found_and_created_ones_are() {
        let app = spawn_app().await;
        let key = app.new_key_owner("bot").await.created.key;
        for made_up in [issued_a_day_ago(), issued_now()] {
            not_found(&app, made_up).await;
        }
        let far_future = chrono::Utc::now().timestamp() + 86_400 * 365;
        not_found(&app, ApiKeySecret::generate_issued_at(far_future).expose().to_owned()).await;
        assert!(app.verify(&key).await.valid);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_keys_issued_before_the_last_sync_cost_no_query_postgres() {
    let app = spawn_app().await;
    app.wait_for_known_keys().await;
    not_found(&app, issued_a_day_ago()).await;
    const CALLS: u64 = 50;
    let before = app.db.statements_executed();
    for _ in 0..CALLS {
        not_found(&app, issued_a_day_ago()).await;
    }
    // A lookup each would be 50 statements; the listener's heartbeat adds
    // about one a second.
    let executed = app.db.statements_executed() - before;
    assert!(
        executed < CALLS / 5,
        "{executed} statements for {CALLS} made-up keys"
    );
    // A key made meanwhile is found at once, though never looked up before.
    let key = app.new_key_owner("bot").await.created.key;
    assert!(app.verify(&key).await.valid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_made_up_keys_issued_just_now_shares_its_barriers_postgres() {
    let app = spawn_app().await;
    app.wait_for_known_keys().await;
    const CALLERS: usize = 32;
    const ROUNDS: usize = 8;
    let before = app.db.statements_executed();
    for _ in 0..ROUNDS {
        join_all((0..CALLERS).map(|_| not_found(&app, issued_now()))).await;
    }
    let calls = (CALLERS * ROUNDS) as u64;
    let executed = app.db.statements_executed() - before;
    assert!(
        executed < calls / 4,
        "{executed} statements for {calls} made-up keys"
    );
}

/// The guarantee across replicas: after CreateApiKey answers on one
/// server process, the key verifies on another at once, each way, also
/// while many are created together, and while the other's notifications
/// arrive late (its listener behind a slow network), so that the key's
/// announcement cannot have arrived when it is presented.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_created_on_one_replica_verifies_at_once_on_another_postgres() {
    let app = spawn_app().await;
    app.wait_for_known_keys().await;
    let proxy = TcpProxy::start(app.database_postgres_addr()).await;
    let listen_url = app.database_url_via(proxy.addr);
    let replica = app
        .spawn_replica_process(&[("DATABASE_LISTEN_URL", &listen_url)])
        .await;
    // The replica's set is loaded once it answers made-up keys without
    // waiting; give it the same chance as this one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.delay(Duration::from_millis(300));
    for _ in 0..10 {
        let key = create_key_through(&app, &app).await;
        assert!(
            replica.verify(&key).await.valid,
            "made here, verified there"
        );
        let key = create_key_through(&app, &replica).await;
        assert!(app.verify(&key).await.valid, "made there, verified here");
    }
    let keys = join_all((0..16).map(|_| create_key_through(&app, &replica))).await;
    let answers = join_all(keys.iter().map(|key| app.verify(key))).await;
    assert!(answers.iter().all(|answer| answer.valid));
}

/// While the listener hears nothing (its connection withheld, garbled or
/// cut), a new key still verifies: the set is distrusted or its barrier
/// never comes back, and the key is looked up.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_created_elsewhere_verifies_while_the_listener_is_deaf_postgres() {
    let app = spawn_app().await;
    let proxy = TcpProxy::start(app.database_postgres_addr()).await;
    let listen_url = app.database_url_via(proxy.addr);
    let replica = app
        .spawn_replica(&["--database-listen-url", &listen_url])
        .await;
    replica.wait_for_known_keys().await;
    for fault in [TcpProxy::silence, TcpProxy::garble, TcpProxy::cut] {
        fault(&proxy);
        for _ in 0..3 {
            let key = create_key_through(&app, &app).await;
            assert!(replica.verify(&key).await.valid);
            not_found(&replica, issued_now()).await;
            not_found(&replica, issued_a_day_ago()).await;
        }
        proxy.restore();
        replica.wait_for_known_keys().await;
    }
}

/// A flood of keys that each need a barrier sends the listener hundreds of
/// notifications of its own a second, and they overtake its heartbeats
/// (which wait for a pooled connection): the listener must still count
/// those heartbeats when they come back, not call itself deaf and turn the
/// caches off in the middle of the flood.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_barriers_does_not_make_the_listener_look_deaf_postgres() {
    let app = spawn_app().await;
    app.wait_for_known_keys().await;
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let flood = async {
        let callers = (0..32).map(|_| async {
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                not_found(&app, issued_now()).await;
            }
        });
        join_all(callers).await;
    };
    let watch = async {
        // Three heartbeat timeouts' worth.
        for _ in 0..90 {
            assert!(
                app.api_key_cache.is_active(),
                "the caches went off mid-flood"
            );
            assert!(
                app.known_keys.is_trusted(),
                "the known keys were distrusted mid-flood"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(flood, watch);
}
