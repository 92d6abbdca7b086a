//! The load generator's connections: a bearer token on every call, and
//! channels that each keep one HTTP/2 connection of their own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::Args;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub(crate) struct Bearer(pub(crate) tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Bearer>;

/// One HTTP/2 connection the callers share, used by the generated clients
/// directly. tonic's `Channel` queues every request through a buffer task
/// (one more task hop each way), which made the load generator cost as much
/// CPU per request as the server it measures, on the same cores.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    pub(crate) origin: Arc<http::uri::Parts>,
    /// `--timeout-ms` as gRPC's `grpc-timeout` header; the server enforces it.
    pub(crate) grpc_timeout: http::HeaderValue,
}

impl Connection {
    pub(crate) async fn open(args: &Args) -> anyhow::Result<Self> {
        let uri: http::Uri = args
            .addr
            .parse()
            .with_context(|| format!("--addr {:?} is not a URL", args.addr))?;
        let authority = uri.authority().context("--addr has no host:port")?.clone();
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(authority.as_str()),
        )
        .await
        .context("connect timed out")??;
        tcp.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        let mut origin = http::uri::Parts::default();
        origin.scheme = Some(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP));
        origin.authority = Some(authority);
        Ok(Self {
            send,
            origin: Arc::new(origin),
            grpc_timeout: format!("{}m", args.timeout_ms).parse()?,
        })
    }
}

pub(crate) type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>,
            > + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The generated client sets only the path; HTTP/2 needs the rest.
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.origin.scheme.clone();
        parts.authority = self.origin.authority.clone();
        parts.path_and_query = request.uri().path_and_query().cloned();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        request
            .headers_mut()
            .insert("grpc-timeout", self.grpc_timeout.clone());
        Box::pin(self.send.send_request(request))
    }
}

pub(crate) type Direct = InterceptedService<Connection, Bearer>;
