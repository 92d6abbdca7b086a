//! Events published to NATS JetStream (issue 30): with NATS_URL set, every
//! organization's events reach a real JetStream consumer in the
//! organization's order, once each, with the event id as the message id;
//! across two replicas, through a NATS cut mid-load, and kept in the outbox
//! past their retention until published.

use std::time::Duration;

use async_nats::jetstream;
use chatbot_backend::db::retention::{purge_expired, Retention};
use chatbot_backend::proto;
use futures_util::StreamExt;
use prost::Message;

use crate::events::{next_events, rename, watch};
use crate::helpers::{backend_test, poll_until, spawn_app_with, TcpProxy, TestApp};
use crate::organization_limits::team_with_chatbot;

/// The test NATS server (`.ci/run` starts one): TEST_NATS_ADDR or the
/// default port.
fn nats_addr() -> std::net::SocketAddr {
    std::env::var("TEST_NATS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:4222".into())
        .parse()
        .expect("TEST_NATS_ADDR is host:port")
}

/// A stream and subject prefix of the test's own, deleted at its end.
struct TestStream {
    name: String,
    prefix: String,
    jetstream: jetstream::Context,
}

/// One message as the consumer received it.
#[derive(Debug)]
struct Published {
    subject: String,
    message_id: String,
    event: proto::Event,
}

impl TestStream {
    async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let client = async_nats::connect(nats_addr().to_string())
            .await
            .expect("the test NATS server answers");
        Self {
            name: format!("TEST_{id}"),
            prefix: format!("test.{id}"),
            jetstream: jetstream::new(client),
        }
    }

    /// The server's flags to publish to this stream through `addr`.
    fn flags(&self, addr: std::net::SocketAddr) -> Vec<String> {
        vec![
            "--nats-url".into(),
            format!("nats://{addr}"),
            "--nats-stream".into(),
            self.name.clone(),
            "--nats-subject-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// The same, as a replica process's environment.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", format!("nats://{}", nats_addr())),
            ("NATS_STREAM", self.name.clone()),
            ("NATS_SUBJECT_PREFIX", self.prefix.clone()),
        ]
    }

    /// The stream, once the server has created it.
    async fn stream(&self) -> jetstream::stream::Stream {
        for _ in 0..100 {
            if let Ok(stream) = self.jetstream.get_stream(&self.name).await {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server never created stream {}", self.name);
    }

    /// The first `count` messages of the stream, read by a new consumer
    /// from the start, each within ten seconds.
    async fn read(&self, count: usize) -> Vec<Published> {
        let consumer = self
            .stream()
            .await
            .create_consumer(jetstream::consumer::pull::Config {
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut read = Vec::new();
        while read.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .unwrap_or_else(|_| panic!("{} messages, then none: {read:#?}", read.len()))
                .expect("the consumer stays up")
                .expect("a message");
            let headers = message.headers.clone().unwrap_or_default();
            read.push(Published {
                subject: message.subject.to_string(),
                message_id: headers
                    .get("Nats-Msg-Id")
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
                event: proto::Event::decode(message.payload.clone())
                    .expect("the payload is a chatbot.v1.Event"),
            });
        }
        read
    }

    /// How many messages the stream holds.
    async fn stored(&self) -> u64 {
        self.stream().await.info().await.unwrap().state.messages
    }

    async fn delete(self) {
        let _ = self.jetstream.delete_stream(&self.name).await;
    }
}

/// All of `organization`'s events so far, as WatchEvents gives them.
async fn watched(
    app: &TestApp,
    owner: &crate::helpers::TestUser,
    organization: &str,
    count: usize,
) -> Vec<proto::Event> {
    let mut stream = watch(app, owner, organization, None).await.unwrap();
    next_events(&mut stream, count).await
}

backend_test! {
    async fn every_event_reaches_a_jetstream_consumer_once_in_order_with_its_id_as_message_id() {
        let nats = TestStream::new().await;
        let flags = nats.flags(nats_addr());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let app = spawn_app_with(&flags).await;
        let (owner, team, chatbot) = team_with_chatbot(&app).await;
        let key = app.create_api_key(&owner, &chatbot).await.api_key.unwrap();
        rename(&app, &owner, &team, "published team").await;
        app.revoke_api_key(&owner.token, key.id).await.unwrap();

        let expected = watched(&app, &owner, &team, 5).await;
        let published = nats.read(5).await;
        for (event, message) in expected.iter().zip(&published) {
            // The whole event, resource included, as WatchEvents gives it.
            assert_eq!(&message.event, event);
            assert_eq!(message.message_id, event.id);
            assert_eq!(
                message.subject,
                format!("{}.{team}.{}", nats.prefix, event.r#type)
            );
        }
        // Nothing published twice.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(nats.stored().await, 5);
        nats.delete().await;
    }
}

/// Two server processes on one database both publish; each organization's
/// events reach the stream once each, in number order.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_publish_every_event_once_in_each_organizations_order_postgres() {
    let nats = TestStream::new().await;
    let flags = nats.flags(nats_addr());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = spawn_app_with(&flags).await;
    let env = nats.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let replica = app.spawn_replica_process(&env).await;
    let (owner, team, chatbot) = team_with_chatbot(&app).await;
    let (other_owner, other_team, other_chatbot) = team_with_chatbot(&app).await;
    let on = [
        (&owner, chatbot.as_str()),
        (&other_owner, other_chatbot.as_str()),
    ];
    crate::helpers::create_keys_through_both(&app, &replica, &on, 40).await;

    // Two events each before the keys: the organization and its chatbot.
    let published = nats.read(44).await;
    for organization in [&team, &other_team] {
        let numbers: Vec<i64> = published
            .iter()
            .filter(|message| &message.event.organization_id == organization)
            .map(|message| message.event.cursor.parse().unwrap())
            .collect();
        assert_eq!(numbers, (1..=22).collect::<Vec<_>>(), "{organization}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(nats.stored().await, 44);
    drop(replica);
    nats.delete().await;
}

backend_test! {
    async fn events_made_while_nats_is_cut_or_garbled_are_published_in_order_when_it_returns() {
        let nats = TestStream::new().await;
        let proxy = TcpProxy::start(nats_addr()).await;
        let flags = nats.flags(proxy.addr);
        let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        flags.extend(["--metrics-addr", "127.0.0.1:0"]);
        let app = spawn_app_with(&flags).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        assert_eq!(nats.read(2).await.len(), 2);

        // Changes go on while NATS is away, then while it answers garbage:
        // requests never wait for it.
        proxy.cut();
        for i in 0..5 {
            rename(&app, &owner, &team, &format!("while cut {i}")).await;
        }
        proxy.restore();
        proxy.garble();
        for i in 0..5 {
            rename(&app, &owner, &team, &format!("while garbled {i}")).await;
        }
        // The outage is noticed (within the acknowledgement's timeout).
        let metrics_addr = app.metrics_addr.unwrap();
        poll_until(
            "event_publisher_up 0",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || crate::helpers::scrape(metrics_addr),
            |metrics: &String| metrics.contains("event_publisher_up 0"),
        )
        .await;
        proxy.restore();

        // Every event arrives, in order, once.
        let expected = watched(&app, &owner, &team, 12).await;
        let published = nats.read(12).await;
        let ids = |events: Vec<&proto::Event>| events.into_iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(published.iter().map(|message| &message.event).collect()),
            ids(expected.iter().collect())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(nats.stored().await, 12);
        let metrics = crate::helpers::scrape(metrics_addr).await;
        assert!(metrics.contains("event_publisher_up 1"), "{metrics}");
        assert!(!metrics.contains("event_publish_failures_total 0\n"), "{metrics}");
        nats.delete().await;
    }
}

backend_test! {
    async fn an_unpublished_event_outlives_its_retention_until_it_is_published() {
        // NATS configured but never reachable: nothing gets published.
        let nats = TestStream::new().await;
        let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let flags = nats.flags(unreachable);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let app = spawn_app_with(&flags).await;
        let (owner, team, _) = team_with_chatbot(&app).await;
        let retention = |keep_unpublished_events| Retention {
            audit_events: chrono::TimeDelta::zero(),
            ended_sessions: chrono::TimeDelta::zero(),
            usage: chrono::TimeDelta::days(400),
            keep_unpublished_events,
        };

        purge_expired(&app.db, &retention(true)).await;
        assert_eq!(watched(&app, &owner, &team, 2).await.len(), 2);

        // Without NATS, the retention alone decides.
        purge_expired(&app.db, &retention(false)).await;
        let mut stream = watch(&app, &owner, &team, None).await.unwrap();
        let nothing = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
        assert!(nothing.is_err(), "{nothing:?}");
    }
}
