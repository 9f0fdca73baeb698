//! `outagewatch redetect`: the incidents of a time range recomputed from the stored rollups by the detector runner.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use outagewatch::config::Settings;
use outagewatch::{app, detector};

#[derive(clap::Args)]
pub struct RedetectArgs {
    /// Start of the range (RFC 3339, e.g. 2025-03-10T00:00:00Z); default: the first rollup.
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// End of the range (exclusive); default: the last complete minute.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
}

/// Replaces the range's stored incidents and prints what was replayed and found.
pub async fn run(settings: &Settings, args: &RedetectArgs) -> anyhow::Result<()> {
    let now = outagewatch::runtime::clock::now();
    // The replay reads minute counts from `detector.history_days` before `from`: past the
    // minutes retention keeps it would learn from zeros.
    if let Some(from) = args.from {
        if let Some(reason) = settings.retention.retention().redetect_refusal(
            from,
            settings.detector.history_days,
            now,
        ) {
            anyhow::bail!("redetect --from {}: {reason}", from.to_rfc3339());
        }
    }
    let store = app::open_store(settings).await?;
    let catalog = app::stored_catalog(&store, settings).await?;
    let started = std::time::Instant::now();
    let summary = detector::redetect(
        store,
        Arc::new(catalog),
        &settings.detector,
        args.from,
        args.to,
        now,
    )
    .await?;
    let range = match (summary.from, summary.to) {
        (Some(from), Some(to)) => format!("{} to {}", from.to_rfc3339(), to.to_rfc3339()),
        _ => "nothing: no rollups stored".to_owned(),
    };
    let took = started.elapsed();
    println!(
        "redetect: {range}; {} minutes replayed over {} series in {:.2} s; {} incidents ({} open)",
        summary.minutes,
        summary.series,
        took.as_secs_f64(),
        summary.incidents,
        summary.open
    );
    // Two splits, since the store's reading and writing overlap the engine: the run's time
    // (the engine's, the rest waiting on the store) and the store's own task time.
    println!(
        "redetect time: engine {:.2} s, the rest {:.2} s; store tasks {:.2} s (reading rollups \
         {:.2} s, writing {:.2} s; the reading and the expectations overlap the engine)",
        summary.engine.as_secs_f64(),
        took.saturating_sub(summary.engine).as_secs_f64(),
        (summary.store_reads + summary.store_writes).as_secs_f64(),
        summary.store_reads.as_secs_f64(),
        summary.store_writes.as_secs_f64()
    );
    Ok(())
}
