//! The `chatbot-backend` command line: parse, load settings, dispatch.

use clap::{Parser, Subcommand};

use chatbot_backend::auth::PasswordHasher;
use chatbot_backend::config::{Config, Settings};
use chatbot_backend::db::{self, Database};
use chatbot_backend::startup::Application;
use chatbot_backend::{admin, telemetry};

/// mimalloc serves the server's allocations, not glibc's malloc:
/// - a list page, a batch of spends or an answer is hundreds of small
///   allocations and frees, which glibc served at about a tenth of the
///   server's CPU (BENCHMARKS.md, "the allocator");
/// - argon2 takes 19 MiB per hash. glibc kept such blocks in per-thread
///   arenas after `free` (420 MiB resident after a Login flood) unless its
///   mmap threshold was fixed, and then every hash mapped and zeroed its
///   19 MiB anew. mimalloc reuses a hashing thread's block, so at most
///   MAX_CONCURRENT_HASHES of them stay resident, and hands other freed
///   memory back to the OS after a short delay.
///
/// Transparent huge pages are off for the process (`no_thp`): with them,
/// mimalloc's eagerly committed arenas grew the idle resident memory by
/// about 20 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
