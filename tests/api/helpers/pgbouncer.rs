//! A real PgBouncer (Debian's `pgbouncer`) in transaction mode in front of
//! the tests' PostgreSQL, as operators put one in front of many replicas.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running PgBouncer, stopped and its files removed on drop.
pub struct PgBouncer {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// Starts one on a free local port pooling in transaction mode to
    /// `postgres` (trust authentication, as the tests' PostgreSQL has).
    pub async fn start_in_transaction_mode(postgres: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // PgBouncer refuses to run as root; as root it is started as the
        // postgres user, which must read its files and write its log.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = trust\n\
             auth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             logfile = {dir}/pgbouncer.log\n\
             ignore_startup_parameters = extra_float_digits,options,application_name\n\
             max_client_conn = 100\ndefault_pool_size = 4\n",
            postgres.ip(),
            postgres.port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        let mut command = Command::new("pgbouncer");
        let is_root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
        if is_root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .kill_on_drop(true)
            .spawn()
            .expect("pgbouncer runs (Debian's package pgbouncer; .ci/run installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                return Self { addr, dir, child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pgbouncer did not listen on {addr}");
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
