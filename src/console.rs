//! The operator console: the browser's way in, on a listener of its own
//! (`CONSOLE_LISTEN_ADDR`). It serves the console's files, embedded in the
//! binary from console/dist, and answers gRPC-Web (tonic-web) for the same
//! API services, through the same layers (auth, limits, metrics) as the
//! gRPC port: the console can do nothing another client cannot. The gRPC
//! port itself is untouched, so its hot paths pay nothing for the console.
//!
//! Requests from a page of another origin are refused unless
//! `CONSOLE_ALLOWED_ORIGINS` lists it (then CORS lets that page read the
//! answers), so another site cannot drive a signed-in console's API.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::ConsoleOrigins;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// Every page's policy: scripts, styles and calls from this origin only,
/// nothing inline, no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded file served at `path` (`/` is index.html), and its type.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    let name = match path.strip_prefix('/')? {
        "" => "index.html",
        name => name,
    };
    let (name, bytes) = embedded::ASSETS.iter().find(|(asset, _)| *asset == name)?;
    let content_type = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    };
    Some((bytes, content_type))
}

/// The total size of the embedded files (for the start-up log).
pub fn assets_bytes() -> usize {
    embedded::ASSETS.iter().map(|(_, bytes)| bytes.len()).sum()
}

/// Origins whose pages may call the console's API besides its own.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins(Arc<[HeaderValue]>);

impl AllowedOrigins {
    /// From `CONSOLE_ALLOWED_ORIGINS`, checked when the settings were.
    pub fn new(origins: &ConsoleOrigins) -> Self {
        let parsed = origins.0.iter();
        Self(
            parsed
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect(),
        )
    }

    /// Whether a request from a page of `origin` may go on: the console's
    /// own origin (the page's host is the one the request went to), or
    /// one listed.
    fn allows(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let same_origin = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .zip(host.and_then(|host| host.to_str().ok()))
            .is_some_and(|((_, origin_host), host)| origin_host.eq_ignore_ascii_case(host));
        same_origin || self.0.iter().any(|allowed| allowed == origin)
    }

    /// CORS for the listed origins: a page there may send gRPC-Web calls
    /// and read their status.
    pub fn cors(&self) -> CorsLayer {
        let header = HeaderName::from_static;
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.0.iter().cloned()))
            .allow_methods([Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header("x-grpc-web"),
                header("x-user-agent"),
                header("grpc-timeout"),
            ])
            .expose_headers([
                header("grpc-status"),
                header("grpc-message"),
                header("grpc-status-details-bin"),
                header("x-request-id"),
            ])
            .max_age(Duration::from_secs(3600))
    }
}

/// Outermost on the console's listener: answers page requests (GET, HEAD)
/// from the embedded files and refuses requests from foreign pages; the
/// rest (gRPC-Web calls, CORS preflights) goes on.
#[derive(Clone)]
pub struct ConsoleLayer {
    origins: AllowedOrigins,
}

impl ConsoleLayer {
    pub fn new(origins: AllowedOrigins) -> Self {
        Self { origins }
    }
}

impl<S> Layer<S> for ConsoleLayer {
    type Service = ConsoleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConsoleService {
            inner,
            origins: self.origins.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ConsoleService<S> {
    inner: S,
    origins: AllowedOrigins,
}

impl<S, B> Service<Request<B>> for ConsoleService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            if !self
                .origins
                .allows(origin, request.headers().get(header::HOST))
            {
                let refused = plain(
                    StatusCode::FORBIDDEN,
                    "this origin may not call the console",
                );
                return Box::pin(async move { Ok(refused) });
            }
        }
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            let page = page(request.uri().path(), request.method() == Method::HEAD);
            return Box::pin(async move { Ok(page) });
        }
        Box::pin(self.inner.call(request))
    }
}

/// An embedded file with the headers every page carries, or 404.
fn page(path: &str, head_only: bool) -> Response<Body> {
    let Some((bytes, content_type)) = asset(path) else {
        return plain(StatusCode::NOT_FOUND, "no such page");
    };
    let body = match head_only {
        true => Body::empty(),
        false => Body::new(http_body_util::Full::new(Bytes::from_static(bytes))),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    secure(headers);
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(
        message.as_bytes(),
    ))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(headers);
    response
}

/// The policy, and no sniffing, framing, referrers or stale copies (the
/// files' names do not change between versions, so a browser asks again).
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_consoles_own_origin_or_a_listed_one_is_allowed() {
        let listed = AllowedOrigins::new(&"https://OPS.example.com:443".parse().unwrap());
        let host = HeaderValue::from_static("127.0.0.1:8080");
        let allows =
            |origin: &'static str| listed.allows(&HeaderValue::from_static(origin), Some(&host));
        assert!(allows("http://127.0.0.1:8080"));
        assert!(allows("https://ops.example.com"));
        assert!(!allows("http://127.0.0.1:8081"));
        assert!(!allows("https://evil.example"));
        assert!(!allows("null"));
        assert!(!listed.allows(&HeaderValue::from_static("http://127.0.0.1:8080"), None));
    }

    #[test]
    fn an_allowed_origin_must_be_an_origin() {
        for bad in [
            "ops.example.com",
            "https://ops.example.com/",
            "https://x/y",
            "ftp://x",
        ] {
            assert!(bad.parse::<ConsoleOrigins>().is_err(), "{bad}");
        }
        let none: ConsoleOrigins = "".parse().unwrap();
        assert!(none.0.is_empty());
        let two: ConsoleOrigins = "https://a.example, http://b.example:8080".parse().unwrap();
        assert_eq!(two.0, ["https://a.example", "http://b.example:8080"]);
    }
}
