//! What the edge does with what clients send that no handler sees: invented
//! method paths, bodies that are not protobuf, calls abandoned mid-flight.
//! Requests here are raw HTTP/2, so they can be what no generated client
//! would send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chatbot_backend::proto;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;

use crate::helpers::{assert_code, scrape, spawn_app_with, spawn_logging_json, SECRET_KEY};

/// One gRPC call over its own HTTP/2 connection, built by hand.
pub struct RawCall {
    stream: h2::SendStream<Bytes>,
    response: h2::client::ResponseFuture,
}

/// `message` framed as one gRPC length-prefixed message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

impl RawCall {
    /// Sends the headers of a call to `path`; the body is up to the caller.
    pub async fn start(addr: SocketAddr, path: &str, request_id: &str) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request-id", request_id)
            .body(())
            .unwrap();
        let (response, stream) = client.send_request(request, false).unwrap();
        Self { stream, response }
    }

    /// Sends request data; a server that answered from the headers alone
    /// may have closed the stream already, which is no failure here.
    pub fn send(&mut self, data: Bytes, end: bool) {
        let _ = self.stream.send_data(data, end);
    }

    /// Resets the stream, as a client does when it cancels the call.
    pub fn cancel(mut self) {
        self.stream.send_reset(h2::Reason::CANCEL);
    }

    /// The call's gRPC status code, from the headers of a trailers-only
    /// answer or from the trailers.
    pub async fn code(self) -> Code {
        let response = self.response.await.unwrap();
        if let Some(status) = response.headers().get("grpc-status") {
            return Code::from_bytes(status.as_bytes());
        }
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.unwrap().expect("trailers");
        Code::from_bytes(trailers["grpc-status"].as_bytes())
    }
}

/// A whole call with `message` as its request.
pub async fn raw_unary(addr: SocketAddr, path: &str, message: &[u8]) -> Code {
    let mut call = RawCall::start(addr, path, "raw").await;
    call.send(grpc_frame(message), true);
    call.code().await
}

/// The value of each series of `metric` in a scrape, by its labels.
fn series(scrape: &str, metric: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix(metric))
        .filter_map(|rest| rest.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once("} "))
        .map(|(labels, value)| (labels.to_owned(), value.parse().unwrap()))
        .collect()
}

/// Scrapes until `metric` has the series `labels` with `value` (10 s at
/// most): a condition to wait for, not a time to measure.
async fn wait_for_series(addr: SocketAddr, metric: &str, labels: &str, value: f64) {
    for _ in 0..200 {
        if series(&scrape(addr).await, metric).get(labels) == Some(&value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{metric}{{{labels}}} never reached {value}:\n{}",
        scrape(addr).await
    );
}

const LOGIN: &str =
    r#"grpc_type="unary",grpc_service="chatbot.v1.AuthService",grpc_method="Login""#;
const GET_CHATBOT: &str =
    r#"grpc_type="unary",grpc_service="chatbot.v1.ChatbotService",grpc_method="GetChatbot""#;
const CREATE_USER: &str =
    r#"grpc_type="unary",grpc_service="chatbot.v1.UserService",grpc_method="CreateUser""#;
const UNKNOWN: &str = r#"grpc_type="unknown",grpc_service="unknown",grpc_method="unknown""#;

#[tokio::test(flavor = "multi_thread")]
async fn invented_method_paths_share_one_unknown_series_set_and_served_methods_keep_their_names() {
    let app = spawn_app_with(&["--metrics-addr", "127.0.0.1:0"]).await;
    let metrics_addr = app.metrics_addr.unwrap();
    let _ = app.login("nobody@example.com", "wrong password").await;
    let before = scrape(metrics_addr).await.lines().count();

    for n in 0..200 {
        let path = format!("/invented.v{n}.Service{n}/Method{n}");
        assert_eq!(raw_unary(app.addr, &path, b"").await, Code::Unauthenticated);
    }

    let after = scrape(metrics_addr).await;
    assert!(!after.contains("invented"), "{after}");
    let started = series(&after, "grpc_server_started_total");
    assert_eq!(started.get(UNKNOWN), Some(&200.0), "{after}");
    let handled = series(&after, "grpc_server_handled_total");
    assert_eq!(
        handled.get(&format!(r#"{UNKNOWN},grpc_code="Unauthenticated""#)),
        Some(&200.0),
        "{after}"
    );
    // At most the one handled series of the code they got is new.
    assert!(after.lines().count() <= before + 1, "{after}");
    assert_eq!(
        handled.get(&format!(r#"{LOGIN},grpc_code="Unauthenticated""#)),
        Some(&1.0),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_is_not_protobuf_is_invalid_argument() {
    let app = spawn_app_with(&["--metrics-addr", "127.0.0.1:0"]).await;
    // Garbage: an invalid varint where the first field's tag should be.
    let garbage = [0xff; 11];
    assert_eq!(
        raw_unary(app.addr, "/chatbot.v1.UserService/CreateUser", &garbage).await,
        Code::InvalidArgument
    );
    // LoginRequest.email (field 1, a string) holding bytes that are not UTF-8.
    let not_utf8 = [0x0a, 0x02, 0xc3, 0x28];
    assert_eq!(
        raw_unary(app.addr, "/chatbot.v1.AuthService/Login", &not_utf8).await,
        Code::InvalidArgument
    );
    // A message cut short of the length its frame announced.
    let mut truncated = RawCall::start(app.addr, "/chatbot.v1.AuthService/Login", "cut").await;
    truncated.send(grpc_frame(b"\x0a\x02ab").slice(..6), true);
    assert_eq!(truncated.code().await, Code::InvalidArgument);

    let handled = series(
        &scrape(app.metrics_addr.unwrap()).await,
        "grpc_server_handled_total",
    );
    assert_eq!(
        handled.get(&format!(r#"{LOGIN},grpc_code="InvalidArgument""#)),
        Some(&2.0)
    );
    assert!(!handled.keys().any(|labels| labels.contains("Internal")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_cancelled_while_its_handler_waits_is_counted_as_canceled() {
    // One connection, held by the test: GetChatbot waits for it.
    let app = spawn_app_with(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-pool-size",
        "1",
        "--database-acquire-timeout-ms",
        "60000",
    ])
    .await;
    let metrics_addr = app.metrics_addr.unwrap();
    let user = app.new_user().await;
    let chatbot = app.create_chatbot(&user, "bot").await;
    let held = app.db.conn().await.unwrap();

    let mut client = app.chatbots(Some(&user.token));
    let call = tokio::spawn(async move {
        client
            .get_chatbot(proto::GetChatbotRequest { id: chatbot.id })
            .await
    });
    wait_for_series(metrics_addr, "grpc_server_started_total", GET_CHATBOT, 1.0).await;
    // Dropping the client's call resets its stream.
    call.abort();
    wait_for_series(
        metrics_addr,
        "grpc_server_handled_total",
        &format!(r#"{GET_CHATBOT},grpc_code="Canceled""#),
        1.0,
    )
    .await;
    drop(held);
    let handled = series(&scrape(metrics_addr).await, "grpc_server_handled_total");
    assert!(
        !handled
            .keys()
            .any(|labels| labels.starts_with(GET_CHATBOT) && !labels.ends_with("\"Canceled\"")),
        "{handled:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_servers_deadline_is_deadline_exceeded() {
    // The handler waits for the one connection, held by the test, for
    // longer than the server's 1 s deadline.
    let app = spawn_app_with(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--default-rpc-timeout-secs",
        "1",
        "--database-pool-size",
        "1",
        "--database-acquire-timeout-ms",
        "60000",
    ])
    .await;
    let user = app.new_user().await;
    let chatbot = app.create_chatbot(&user, "bot").await;
    let held = app.db.conn().await.unwrap();
    let result = app.get_chatbot(&user.token, &chatbot.id).await;
    drop(held);
    assert_code(result, Code::DeadlineExceeded);
    let handled = series(
        &scrape(app.metrics_addr.unwrap()).await,
        "grpc_server_handled_total",
    );
    assert_eq!(
        handled.get(&format!(r#"{GET_CHATBOT},grpc_code="DeadlineExceeded""#)),
        Some(&1.0),
        "{handled:?}"
    );
}

/// The server binary, logging JSON, with each line it printed so far.
struct LoggingServer {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    _child: tokio::process::Child,
    _workdir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl LoggingServer {
    async fn start() -> Self {
        let workdir =
            std::env::temp_dir().join(format!("cbtest_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&workdir).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-backend"));
        command
            .arg("serve")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", workdir.join("db.sqlite").display()),
            )
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("CONSOLE_LISTEN_ADDR", "127.0.0.1:0")
            .env("SECRET_KEY", SECRET_KEY)
            .env("RATE_LIMIT_PER_ADDRESS", "0");
        let mut child = spawn_logging_json(&mut command);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let events: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the server starts")
                .unwrap()
                .expect("the server runs");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let field = |name: &str| event[name].as_str().map(|a| a.parse().unwrap());
            match event["message"].as_str() {
                Some("serving gRPC") => addr = field("local_addr"),
                Some("serving Prometheus metrics") => metrics_addr = field("bound"),
                _ => {}
            }
        }
        let sink = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        Self {
            addr: addr.unwrap(),
            metrics_addr: metrics_addr.unwrap(),
            events,
            _child: child,
            _workdir: tempdir::Dir(workdir),
        }
    }

    /// The completion line of the RPC with `request_id` (10 s at most).
    async fn completion(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..200 {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|event| {
                    event["span"]["request_id"] == request_id && event.get("code").is_some()
                })
                .cloned();
            if let Some(event) = found {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no completion line for {request_id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_faults_and_cancelled_calls_are_logged_below_error_in_their_rpc_span() {
    let server = LoggingServer::start().await;

    let mut garbage =
        RawCall::start(server.addr, "/chatbot.v1.UserService/CreateUser", "garbage").await;
    garbage.send(grpc_frame(&[0xff; 11]), true);
    assert_eq!(garbage.code().await, Code::InvalidArgument);
    let line = server.completion("garbage").await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["code"], "InvalidArgument", "{line}");

    // Cancelled half-way through sending its request.
    let mut abandoned = RawCall::start(
        server.addr,
        "/chatbot.v1.UserService/CreateUser",
        "abandoned",
    )
    .await;
    abandoned.send(grpc_frame(b"\x0a\x10half-an-email").slice(..8), false);
    wait_for_series(
        server.metrics_addr,
        "grpc_server_started_total",
        CREATE_USER,
        2.0,
    )
    .await;
    abandoned.cancel();
    let line = server.completion("abandoned").await;
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["code"], "Canceled", "{line}");
    assert_eq!(line["span"]["rpc.method"], "CreateUser", "{line}");
    wait_for_series(
        server.metrics_addr,
        "grpc_server_handled_total",
        &format!(r#"{CREATE_USER},grpc_code="Canceled""#),
        1.0,
    )
    .await;

    let errors: Vec<_> = server
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|event| event["level"] == "ERROR")
        .cloned()
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
