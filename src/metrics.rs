//! Prometheus metrics in the names go-grpc-prometheus made familiar
//! (grpc_server_started_total, grpc_server_handled_total,
//! grpc_server_handling_seconds), plus pool and health gauges, served as
//! text on METRICS_ADDR by a minimal HTTP endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::db::Database;

/// Histogram bounds in seconds, as go-grpc-prometheus' defaults.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct MethodStats {
    started: u64,
    handled: BTreeMap<&'static str, u64>,
    bucket_counts: Vec<u64>,
    seconds_sum: f64,
    seconds_count: u64,
}

/// Counters shared by the RPC layer and the exporter.
#[derive(Clone, Default)]
pub struct Metrics {
    methods: Arc<Mutex<BTreeMap<String, MethodStats>>>,
    serving: Arc<AtomicBool>,
}

/// The stats of `path`, allocating its key only the first time: this runs
/// twice per RPC.
fn method_stats<'a>(
    methods: &'a mut BTreeMap<String, MethodStats>,
    path: &str,
) -> &'a mut MethodStats {
    if !methods.contains_key(path) {
        methods.insert(path.to_owned(), MethodStats::default());
    }
    methods.get_mut(path).expect("inserted above")
}

fn split(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

impl Metrics {
    pub fn rpc_started(&self, path: &str) {
        let mut methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        method_stats(&mut methods, path).started += 1;
    }

    pub fn rpc_handled(&self, path: &str, code: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        let stats = method_stats(&mut methods, path);
        *stats.handled.entry(code).or_default() += 1;
        if stats.bucket_counts.is_empty() {
            stats.bucket_counts = vec![0; BUCKETS.len()];
        }
        for (count, bound) in stats.bucket_counts.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        stats.seconds_sum += seconds;
        stats.seconds_count += 1;
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, db: &Database) -> String {
        let mut out = String::new();
        let methods = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter\n");
        for (path, stats) in methods.iter() {
            let (service, method) = split(path);
            let _ = writeln!(out, "grpc_server_started_total{{grpc_type=\"unary\",grpc_service=\"{service}\",grpc_method=\"{method}\"}} {}", stats.started);
        }
        out.push_str("# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter\n");
        for (path, stats) in methods.iter() {
            let (service, method) = split(path);
            for (code, count) in &stats.handled {
                let _ = writeln!(out, "grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"{service}\",grpc_method=\"{method}\",grpc_code=\"{code}\"}} {count}");
            }
        }
        out.push_str("# HELP grpc_server_handling_seconds Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.\n# TYPE grpc_server_handling_seconds histogram\n");
        for (path, stats) in methods.iter() {
            let (service, method) = split(path);
            let labels =
                format!("grpc_type=\"unary\",grpc_service=\"{service}\",grpc_method=\"{method}\"");
            for (count, bound) in stats.bucket_counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "grpc_server_handling_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "grpc_server_handling_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.seconds_count
            );
            let _ = writeln!(
                out,
                "grpc_server_handling_seconds_sum{{{labels}}} {}",
                stats.seconds_sum
            );
            let _ = writeln!(
                out,
                "grpc_server_handling_seconds_count{{{labels}}} {}",
                stats.seconds_count
            );
        }
        drop(methods);
        let pool = db.pool_status();
        let in_use = pool.size.saturating_sub(pool.available);
        let _ = write!(
            out,
            "# HELP db_pool_connections Database connections by state.\n# TYPE db_pool_connections gauge\n\
             db_pool_connections{{state=\"open\"}} {}\ndb_pool_connections{{state=\"in_use\"}} {in_use}\n\
             db_pool_connections{{state=\"idle\"}} {}\n\
             # HELP db_pool_max_connections Configured pool size.\n# TYPE db_pool_max_connections gauge\ndb_pool_max_connections {}\n\
             # HELP db_pool_waiting Requests waiting for a connection.\n# TYPE db_pool_waiting gauge\ndb_pool_waiting {}\n\
             # HELP health_serving 1 while the server reports SERVING (database reachable).\n# TYPE health_serving gauge\nhealth_serving {}\n",
            pool.size,
            pool.available,
            pool.max_size,
            pool.waiting,
            u8::from(self.serving.load(Ordering::Relaxed)),
        );
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics, db: Database) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving Prometheus metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let db = db.clone();
            tokio::spawn(async move {
                let mut request = [0_u8; 1024];
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
                let body = metrics.render(&db);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(bound)
}
