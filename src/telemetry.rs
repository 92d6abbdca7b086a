//! Logs and traces. Logs: `tracing` with RUST_LOG filtering, plain or JSON
//! output. Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the same spans (one per RPC,
//! children for database work and password hashing) are exported over
//! OTLP HTTP/protobuf, configured by the standard `OTEL_*` variables
//! (service name, resource attributes, sampler, batch sizes, headers,
//! timeout). Unset, no exporter exists and the child spans are disabled
//! call sites: nothing is recorded or sent.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Whether spans are exported; read on every RPC to decide whether an
/// incoming `traceparent` is worth parsing.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The trace exporter, flushed by [`Telemetry::shutdown`].
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

/// Installs the global subscriber; a second call (tests) installs nothing.
/// An exporter that cannot be built is reported and traces stay off: the
/// service must not refuse to start for want of its traces.
pub fn init(format: LogFormat) -> Telemetry {
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let (tracer_provider, trace_error) = match tracer_provider_from_env() {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    // Boxed into one list, so that without traces there is no layer at all:
    // an absent `Option` layer still tells `tracing` it wants every call
    // site, which would create the RPC span even when the log filter drops
    // it.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![match format {
        LogFormat::Plain => fmt::layer()
            .with_target(false)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(log_filter)
            .boxed(),
    }];
    // This crate's spans down to DEBUG (the database and hashing children)
    // and its INFO events (as span events); nothing of the libraries below.
    if let Some(provider) = &tracer_provider {
        let traces = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("chatbot-backend"))
            .with_filter(
                filter_fn(|meta| {
                    meta.target().starts_with("chatbot_backend")
                        && (*meta.level() <= tracing::Level::INFO
                            || meta.is_span() && *meta.level() <= tracing::Level::DEBUG)
                })
                .with_max_level_hint(LevelFilter::DEBUG),
            );
        layers.push(traces.boxed());
    }
    let installed = tracing_subscriber::registry().with(layers).try_init();
    if let Some(error) = trace_error {
        tracing::error!(
            error = format!("{error:#}"),
            "traces are off: the OTLP exporter could not be built"
        );
    }
    if installed.is_err() {
        return Telemetry {
            tracer_provider: None,
        };
    }
    if tracer_provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces over OTLP HTTP/protobuf");
    }
    Telemetry { tracer_provider }
}

impl Telemetry {
    /// Exports the spans still batched. Blocks (the exporter's HTTP client
    /// is blocking), so it runs off the async runtime.
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer_provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Continues the caller's trace: `span`'s parent becomes the span a W3C
/// `traceparent` header names. Nothing is parsed while traces are off.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only if the span already started, which a new span has not.
    let _ = span.set_parent(parent);
}

/// The standard variables' tracer provider, or none without an endpoint (or
/// with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
fn tracer_provider_from_env() -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    // reqwest's rustls (compiled in for the webhooks) takes the process's
    // default provider: ring, the one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The endpoint, headers and timeout come from the OTEL_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .context("building the OTLP span exporter")?;
    // The default detectors read OTEL_SERVICE_NAME and
    // OTEL_RESOURCE_ATTRIBUTES; without either naming the service, it is
    // this package rather than "unknown_service".
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let resource = if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(env!("CARGO_PKG_NAME"))
            .build()
    };
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}
