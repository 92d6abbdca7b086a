//! TLS servers of the tests' own: a CA and certificates made with rcgen, a
//! throwaway PostgreSQL cluster (`ssl = on` or off) and a Redis on a
//! `tls-port`, each stopped and its files removed on drop. The machine's
//! own PostgreSQL and Redis are left as they are.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Where Debian's PostgreSQL 15 keeps initdb and postgres.
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A directory of a test's own, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{kind}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PEM files: a CA, a server certificate it signed for `localhost` only
/// (so connecting by 127.0.0.1 fails a host name check), its key, and a
/// second CA that signed nothing here.
pub struct TlsFiles {
    _dir: TempDir,
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> Self {
        let dir = TempDir::new("tls");
        let ca = certificate_authority("chatbot-backend test CA");
        let wrong_ca = certificate_authority("some other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = params.signed_by(&server_key, &ca).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.0.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            wrong_ca: write("wrong-ca.pem", wrong_ca.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            _dir: dir,
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(addr: SocketAddr, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {addr}");
}

/// As root (CI), PostgreSQL runs as the `postgres` user, which must own
/// its files; as anyone else, as that user.
fn postgres_user() -> Option<(u32, u32)> {
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
    if !is_root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user (Debian's postgresql package makes one)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn chown_to(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

fn as_postgres_user(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// A PostgreSQL cluster of the test's own on 127.0.0.1, with `ssl = on`
/// serving [`TlsFiles`]' server certificate, or with `ssl = off`.
pub struct TlsPostgres {
    pub port: u16,
    _dir: TempDir,
    child: Child,
}

impl TlsPostgres {
    pub async fn start(files: Option<&TlsFiles>) -> Self {
        Self::start_with(files, false).await
    }

    /// A cluster with `ssl = on` that refuses plaintext connections to
    /// every database but `postgres` (where [`Self::server_connections`]
    /// asks): a client that connects to `chatbot` at all connected
    /// encrypted.
    pub async fn start_refusing_plaintext(files: &TlsFiles) -> Self {
        Self::start_with(Some(files), true).await
    }

    async fn start_with(files: Option<&TlsFiles>, refuse_plaintext: bool) -> Self {
        let owner = postgres_user();
        let dir = TempDir::new("tls-pg");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_to(&dir.0, owner);
        let data = dir.0.join("data");
        let mut initdb = Command::new(Path::new(POSTGRES_BIN).join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--no-instructions",
            ])
            .arg("--pgdata")
            .arg(&data);
        as_postgres_user(&mut initdb, owner);
        let output = initdb
            .output()
            .await
            .expect("initdb runs (Debian's postgresql-15)");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let mut command = Command::new(Path::new(POSTGRES_BIN).join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("port={port}")])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.0.display()),
            ])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=50"]);
        if refuse_plaintext {
            let hba = dir.0.join("pg_hba.conf");
            std::fs::write(
                &hba,
                "local all all trust\n\
                 hostnossl postgres all 127.0.0.1/32 trust\n\
                 hostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            chown_to(&hba, owner);
            command.args(["-c", &format!("hba_file={}", hba.display())]);
        }
        match files {
            Some(files) => {
                // PostgreSQL reads its key only if its own user alone can.
                let key = dir.0.join("server.key");
                std::fs::copy(&files.server_key, &key).unwrap();
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
                chown_to(&key, owner);
                command
                    .args(["-c", "ssl=on"])
                    .args([
                        "-c",
                        &format!("ssl_cert_file={}", files.server_cert.display()),
                    ])
                    .args(["-c", &format!("ssl_key_file={}", key.display())]);
            }
            None => {
                command.args(["-c", "ssl=off"]);
            }
        }
        as_postgres_user(&mut command, owner);
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres runs");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "postgres").await;
        Self {
            port,
            _dir: dir,
            child,
        }
    }

    /// A URL of database `chatbot` (created by the server's migrations) on
    /// `host`, with `query` (the TLS options) and an application name the
    /// server's connections can be found by.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/chatbot?application_name=chatbot-tls-test&{query}",
            self.port
        )
    }

    /// The server's connections (found by application name): whether each
    /// is encrypted, and its last statement; asked over a plaintext
    /// connection of the test's.
    pub async fn server_connections(&self) -> Vec<(bool, String)> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT s.ssl, a.query FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'chatbot-tls-test'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A Redis of the test's own, speaking only TLS (`--port 0`), with
/// [`TlsFiles`]' server certificate.
pub struct TlsRedis {
    pub port: u16,
    _dir: TempDir,
    child: Child,
}

impl TlsRedis {
    pub async fn start(files: &TlsFiles) -> Self {
        let dir = TempDir::new("tls-redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&files.server_cert)
            .arg("--tls-key-file")
            .arg(&files.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (Debian's redis-server, built with TLS)");
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "redis-server").await;
        Self {
            port,
            _dir: dir,
            child,
        }
    }

    /// The `rediss://` URL of this Redis by `host`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}/0", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
