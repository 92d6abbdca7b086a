//! The `chatbot-backend` command line: parse, load settings, dispatch.

use clap::{Parser, Subcommand};

use chatbot_backend::auth::PasswordHasher;
use chatbot_backend::config::{Config, Settings};
use chatbot_backend::db::{self, Database};
use chatbot_backend::startup::Application;
use chatbot_backend::{admin, telemetry};

/// argon2 allocates (and frees) 19 MiB per hash. glibc's adaptive mmap
/// threshold would soon serve such blocks from per-thread arenas that keep
/// them after `free`; measured under a Login flood, resident memory grew
/// from 14 MiB to 420 MiB and stayed there. A fixed threshold turns off
/// the adaptation: every block above it is mmap'd and returned on free.
fn release_large_allocations_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; glibc serialises it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[derive(Parser)]
#[command(
    name = "chatbot-backend",
    version,
    about = "gRPC service for users, chatbots and their API keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default); applies pending migrations first unless
    /// MIGRATE_ON_START=false.
    Serve,
    /// Apply pending migrations, or revert the newest one.
    Migrate {
        /// Revert the newest applied migration instead.
        #[arg(long)]
        revert: bool,
        /// Allow a revert that drops tables or columns with their data
        /// (without it, such a revert is refused).
        #[arg(long, requires = "revert")]
        destroy_data: bool,
    },
    /// Copy a SQLite store to a new file while it serves (PostgreSQL: use
    /// pg_dump).
    Backup {
        /// The copy to write; must not exist.
        #[arg(long)]
        output: std::path::PathBuf,
    },
    /// Create idempotent demo data; prints new accounts' passwords once.
    Seed,
    /// Create an admin, or promote an existing user; reads the password
    /// from stdin.
    CreateAdmin {
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    release_large_allocations_at_once();
    // A missing .env is normal; flags and the environment still apply.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.settings.log_format);
    // In the binary only: a test harness keeps its own panic report.
    chatbot_backend::panics::log_panics();
    let outcome = run(cli).await;
    telemetry.shutdown().await;
    outcome
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Checked before any subcommand touches the store.
    let config = cli.settings.validate()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build_from(config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate { revert: false, .. } => {
            let applied = db::run_migrations(&config.database).await?;
            println!("applied {} migration(s): {applied:?}", applied.len());
            Ok(())
        }
        Command::Migrate {
            revert: true,
            destroy_data,
        } => {
            let reverted = db::revert_last_migration(&config.database, destroy_data).await?;
            println!("reverted migration {reverted}");
            Ok(())
        }
        Command::Backup { output } => {
            db::back_up(&config.database, &output).await?;
            println!("backed up to {}", output.display());
            Ok(())
        }
        Command::Seed => {
            db::run_migrations(&config.database).await?;
            let db = Database::new(&config.database, &config.settings.pool_settings())?;
            admin::seed(&db, &operator_hasher(&config)?).await
        }
        Command::CreateAdmin { email } => {
            db::run_migrations(&config.database).await?;
            let db = Database::new(&config.database, &config.settings.pool_settings())?;
            let user = admin::create_admin(
                &db,
                &operator_hasher(&config)?,
                &email,
                std::io::stdin().lock(),
            )
            .await?;
            println!("{} is now an admin (id {})", user.email, user.id);
            Ok(())
        }
    }
}

/// One hashing thread at the configured cost: accounts made by the operator
/// commands hash like the server's.
fn operator_hasher(config: &Config) -> anyhow::Result<PasswordHasher> {
    PasswordHasher::with_cost(1, config.settings.password_hash_cost())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
