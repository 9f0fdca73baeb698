//! The `outagewatch-tools` command: generators that exercise the service, kept out of its binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use outagewatch::app;
use outagewatch::config::Settings;

mod loadgen;
mod simulate;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "outagewatch-tools",
    version,
    about = "Scenario and load generators for outagewatch"
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
    /// Generate the report rows of a scenario file (ordinary traffic plus surges) as CSV in
    /// the format `outagewatch import` reads.
    Simulate(simulate::SimulateArgs),
    /// Post valid, varied reports to a running service and report throughput and latency.
    Loadgen(loadgen::LoadgenArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    app::init_tracing(&settings.log);
    match cli.command {
        Command::Simulate(args) => simulate::run(&args),
        Command::Loadgen(args) => loadgen::run(args, &settings).await,
    }
}
