//! `outagewatch-tools loadgen`: drives a running service with the load generator and, with `--verify`, checks in its database that every acknowledged report is stored.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use outagewatch::app;
use outagewatch::config::Settings;
use outagewatch_loadgen::LoadgenOptions;

#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured warm-up seconds before.
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Reports per request (1 = single-report bodies).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Distinct reporters (user agents) to spread reports over.
    #[arg(long, default_value_t = 100_000)]
    reporters: u32,
    /// Afterwards, check in the configured database that every acknowledged id is stored.
    #[arg(long)]
    verify: bool,
    /// GET this path (with its query) instead of posting reports; repeat for several,
    /// one is picked at random per request.
    #[arg(long = "get", value_name = "PATH")]
    reads: Vec<String>,
    /// Read GET paths from this file, one per line (added to --get).
    #[arg(long, value_name = "FILE")]
    get_file: Option<PathBuf>,
    /// With --get: ask for gzip-compressed answers, as browsers do.
    #[arg(long)]
    gzip: bool,
    /// Open loop: send this many requests a second in all, each connection at an even
    /// pace, instead of each connection sending back to back.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
}

/// Runs the load over the configured catalog's services, prints the table, and verifies.
pub async fn run(args: LoadgenArgs, settings: &Settings) -> anyhow::Result<()> {
    let LoadgenArgs {
        url,
        connections,
        seconds,
        warmup_seconds,
        batch,
        reporters,
        verify,
        mut reads,
        get_file,
        gzip,
        rate,
    } = args;
    if let Some(file) = get_file {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        reads.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    anyhow::ensure!(
        !verify || reads.is_empty(),
        "--verify checks posted reports; it cannot be combined with --get"
    );
    let options = LoadgenOptions {
        url,
        connections,
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_secs(warmup_seconds),
        batch,
        distinct_reporters: reporters,
        reads,
        gzip,
        rate_per_second: rate,
        services: settings.services.iter().map(|s| s.slug.clone()).collect(),
        ..LoadgenOptions::default()
    };
    let summary = outagewatch_loadgen::run(options).await?;
    println!("{}", summary.table());
    if verify {
        let store = app::open_store(settings).await?;
        let stored = store.stored_ids(&summary.acknowledged_ids).await?;
        let rejected_stored = store.stored_ids(&summary.rejected_ids).await?;
        // Every id is acknowledged once: an id answered twice would mean a retry that
        // was taken for a new report.
        let distinct: HashSet<_> = summary.acknowledged_ids.iter().collect();
        let twice = summary.acknowledged_ids.len() - distinct.len();
        println!(
            "verify: {} of {} acknowledged ids stored; {} rejected ids stored; {} acknowledged twice",
            stored.len(),
            distinct.len(),
            rejected_stored.len(),
            twice
        );
        anyhow::ensure!(
            stored.len() == distinct.len() && rejected_stored.is_empty() && twice == 0,
            "verification failed"
        );
    }
    Ok(())
}
