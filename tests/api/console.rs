//! The operator console's listener (issue 32), as a browser meets it: its
//! pages with their security headers, gRPC-Web calls over HTTP/1.1 through
//! the same layers as gRPC, and pages of other origins refused unless
//! listed. The console itself is tested in Chromium (console/tests).

use bytes::{Buf, Bytes};
use chatbot_backend::proto;
use http_body_util::{BodyExt, Full};
use prost::Message;

use crate::helpers::{backend_test, spawn_app, spawn_app_with, TestApp};

/// A response as the browser gets it: status, headers, the whole body.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }

    /// A gRPC-Web answer's status (from its trailer frame, or its headers
    /// for a trailers-only answer) and its message, if any.
    fn grpc(&self) -> (String, Option<Bytes>) {
        let mut body = self.body.clone();
        let mut message = None;
        let mut status = self.header("grpc-status").to_owned();
        while body.remaining() >= 5 {
            let flags = body.get_u8();
            let len = body.get_u32() as usize;
            let frame = body.split_to(len);
            match flags & 0x80 {
                0 => message = Some(frame),
                _ => {
                    let trailers = String::from_utf8(frame.to_vec()).unwrap();
                    for line in trailers.split("\r\n") {
                        if let Some(value) = line.strip_prefix("grpc-status:") {
                            status = value.trim().to_owned();
                        }
                    }
                }
            }
        }
        (status, message)
    }
}

/// One HTTP/1.1 request to the console at `app`.
async fn send(app: &TestApp, request: http::Request<Full<Bytes>>) -> Answer {
    let addr = app.console_addr.expect("the console listens");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts
        .headers
        .insert(http::header::HOST, addr.to_string().parse().unwrap());
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A gRPC-Web call of `path` with `message`, as the console's client sends
/// it; `extra` headers (an origin, a bearer token) on top.
fn grpc_web(
    path: &str,
    message: &impl Message,
    extra: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let encoded = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let mut request = http::Request::post(path)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::from(framed))).unwrap()
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).body(Full::default()).unwrap()
}

backend_test! {
    async fn the_api_answers_grpc_web_through_the_same_authentication_and_checks() {
        let app = spawn_app().await;
        let user = app.new_user().await;

        // A signed-in call: the caller's own record.
        let bearer = format!("Bearer {}", user.token);
        let call = grpc_web(
            "/chatbot.v1.AuthService/GetCurrentUser",
            &proto::GetCurrentUserRequest {},
            &[("authorization", &bearer)],
        );
        let answer = send(&app, call).await;
        assert_eq!(answer.status, 200);
        assert!(answer.header("content-type").starts_with("application/grpc-web"));
        let (status, message) = answer.grpc();
        assert_eq!(status, "0");
        let current = proto::GetCurrentUserResponse::decode(message.unwrap()).unwrap();
        assert_eq!(current.user.unwrap().email, user.email);

        // Without a token: UNAUTHENTICATED, as on the gRPC port.
        let call = grpc_web(
            "/chatbot.v1.AuthService/GetCurrentUser",
            &proto::GetCurrentUserRequest {},
            &[],
        );
        assert_eq!(send(&app, call).await.grpc().0, "16");

        // A field violation comes back in grpc-status-details-bin.
        let call = grpc_web(
            "/chatbot.v1.ChatbotService/CreateChatbot",
            &proto::CreateChatbotRequest::default(),
            &[("authorization", &bearer)],
        );
        let answer = send(&app, call).await;
        assert_eq!(answer.grpc().0, "3");
        assert!(!answer.header("grpc-status-details-bin").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_another_origin_is_refused_unless_listed() {
    let app = spawn_app_with(&["--console-allowed-origins", "https://ops.example.com"]).await;
    let call = |origin: &'static str| {
        grpc_web(
            "/chatbot.v1.StatusService/GetDatabaseStatus",
            &proto::GetDatabaseStatusRequest {},
            &[("origin", origin)],
        )
    };

    // The console's own origin, and a listed one, go through; the listed
    // one with CORS headers so its page may read the answer.
    let own = format!("http://{}", app.console_addr.unwrap());
    let own = Box::leak(own.into_boxed_str());
    let answer = send(&app, call(own)).await;
    assert_eq!(answer.status, 200);
    assert_ne!(answer.grpc().0, "", "a gRPC answer");
    let listed = send(&app, call("https://ops.example.com")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        "https://ops.example.com"
    );
    assert!(listed
        .header("access-control-expose-headers")
        .contains("grpc-status"));

    // Another origin, and its preflight, are refused before any work.
    let foreign = send(&app, call("https://evil.example")).await;
    assert_eq!(foreign.status, 403);
    assert_eq!(foreign.header("access-control-allow-origin"), "");
    let preflight = |origin: &str| {
        http::Request::options("/chatbot.v1.StatusService/GetDatabaseStatus")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization",
            )
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        send(&app, preflight("https://evil.example")).await.status,
        403
    );
    let allowed = send(&app, preflight("https://ops.example.com")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        "https://ops.example.com"
    );
    assert!(allowed
        .header("access-control-allow-headers")
        .contains("authorization"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_can_be_turned_off() {
    let app = spawn_app_with(&["--console-listen-addr", "off"]).await;
    assert_eq!(app.console_addr, None);
    // The gRPC port serves gRPC alone: no pages.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_carries_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let index = send(&app, get("/")).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), "text/html; charset=utf-8");
    let policy = index.header("content-security-policy");
    assert_eq!(policy, chatbot_backend::console::CONTENT_SECURITY_POLICY);
    for strict in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(strict), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(index.header("x-content-type-options"), "nosniff");
    let html = String::from_utf8(index.body.to_vec()).unwrap();
    assert!(html.contains("console.js"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");

    let script = send(&app, get("/console.js")).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(!script.body.is_empty());

    let head = send(
        &app,
        http::Request::head("/").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let missing = send(&app, get("/no-such-page")).await;
    assert_eq!(missing.status, 404);
    assert!(!missing.header("content-security-policy").is_empty());
}
