//! The `outagewatch` command: a table of contents of what the service can do.
//!
//! Each command's body is in src/cli/; the tools that exercise the service (the load and
//! scenario generators) are the separate `outagewatch-tools` binary (crates/tools).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use outagewatch::app::{self, App};
use outagewatch::config::Settings;

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "outagewatch",
    version,
    about = "Outage-report ingestion and surge detection"
)]
struct Cli {
    /// A TOML file overriding the embedded defaults (see config/default.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load historical reports from a CSV or NDJSON file.
    Import(cli::import::ImportArgs),
    /// Score one series offline: a CSV of `timestamp,value` rows at any regular interval in,
    /// the same rows with `anomaly_score` (0 to 1) and the incident state out.
    Detect(cli::detect::DetectArgs),
    /// Recompute the incidents of a time range from the stored minute rollups (replacing the
    /// stored ones that started in it), with the live detector's code, and print a summary.
    Redetect(cli::redetect::RedetectArgs),
    /// Print a service's counts (the query behind GET /api/v1/counts).
    Counts(cli::ops::CountsArgs),
    /// List incidents, newest first (the query behind GET /api/v1/incidents).
    Incidents(cli::ops::IncidentsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    app::init_tracing(&settings.log);
    match cli.command {
        Command::Serve => {
            let app = App::build(&settings).await?;
            app.run_until(app::shutdown_signal()).await
        }
        Command::Migrate => {
            app::open_store(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Import(args) => cli::import::run(&settings, &args).await,
        Command::Detect(args) => cli::detect::run(&settings, &args),
        Command::Redetect(args) => cli::redetect::run(&settings, &args).await,
        Command::Counts(args) => cli::ops::counts(&settings, args).await,
        Command::Incidents(args) => cli::ops::incidents(&settings, args).await,
    }
}
