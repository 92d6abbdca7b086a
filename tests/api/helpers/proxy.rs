//! A TCP proxy in front of PostgreSQL or Redis, so a test can take the
//! store away from a running server, garble or delay what it answers, and
//! give it back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// What a garbled answer is made of: not a reply in any protocol.
const GARBAGE: &[u8] = b"\x00\xff?!garbled\r\n";

/// A TCP proxy the test can cut (dropping every connection and refusing new
/// ones), make garble or withhold what the store answers, and restore.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    garbled: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    /// A proxy on a free local port that forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let garbled = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (cut_flag, registry) = (cut.clone(), connections.clone());
        let faults = Faults {
            garbled: garbled.clone(),
            silent: silent.clone(),
            delay_ms: delay_ms.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if AtomicBool::load(&cut_flag, Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let faults = faults.clone();
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        forward(inbound, outbound, faults).await;
                    }
                });
                registry.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            cut,
            garbled,
            silent,
            delay_ms,
            connections,
        }
    }

    /// Drops every open connection and refuses new ones until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Replaces every answer of the store with bytes that are not a reply,
    /// on open connections and new ones, until [`restore`](Self::restore).
    pub fn garble(&self) {
        self.garbled.store(true, Ordering::SeqCst);
    }

    /// Keeps every connection open but passes on nothing the store answers
    /// (a store that hangs), until [`restore`](Self::restore).
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Passes on what the store answers `lag` late (a slow network), until
    /// [`restore`](Self::restore).
    pub fn delay(&self, lag: Duration) {
        self.delay_ms
            .store(lag.as_millis() as u64, Ordering::SeqCst);
    }

    /// Forwards new connections again, and answers as the store does.
    pub fn restore(&self) {
        self.delay_ms.store(0, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
        self.garbled.store(false, Ordering::SeqCst);
        self.silent.store(false, Ordering::SeqCst);
    }
}

/// The faults a proxy injects into what the store answers.
#[derive(Clone)]
struct Faults {
    garbled: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

/// Copies both ways until either side closes; what the store sends is
/// replaced by [`GARBAGE`] while garbled, dropped while silent, and held
/// back while delayed.
async fn forward(inbound: TcpStream, outbound: TcpStream, faults: Faults) {
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut store_read, mut store_write) = outbound.into_split();
    let requests = async move {
        let _ = tokio::io::copy(&mut client_read, &mut store_write).await;
    };
    // Answers pass through a queue, each held until its time: a constant
    // lag while delayed, however many there are.
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let answers = async move {
        let mut buffer = vec![0; 16 * 1024];
        while let Ok(read) = store_read.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if faults.silent.load(Ordering::SeqCst) {
                continue;
            }
            let bytes = match faults.garbled.load(Ordering::SeqCst) {
                true => GARBAGE.to_vec(),
                false => buffer[..read].to_vec(),
            };
            let due =
                Instant::now() + Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst));
            if queue.send((due, bytes)).is_err() {
                break;
            }
        }
    };
    let delivered = async move {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = async { tokio::join!(answers, delivered); } => {}
    }
}
