//! What the in-process servers log: kept for the whole test binary, so a
//! test can assert that no secret reaches a log line, and shown on stdout
//! when `TEST_LOG` is set.

use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, Once};

/// Everything the server logged during this test binary's run, so tests
/// can assert that no secret ever reaches a log line.
static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(Arc::default);

#[derive(Clone)]
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the servers' logs to [`LOGS`]; the first call wins, later ones do
/// nothing.
pub(super) fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,h2=info,hyper=info,tower=info,hyper_util=info",
        );
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| LogSink)
            .init();
    });
}

/// Everything logged so far, as text.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}
