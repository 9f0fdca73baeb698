//! `outagewatch import`: historical reports from a CSV or NDJSON file, through the ingest path into the store.

use std::path::PathBuf;

use anyhow::Context;
use outagewatch::app;
use outagewatch::config::Settings;
use outagewatch::ingest::import;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row, or NDJSON (.ndjson/.jsonl).
    file: PathBuf,
}

/// Imports the file, printing progress to standard error and a summary with the rate.
pub async fn run(settings: &Settings, args: &ImportArgs) -> anyhow::Result<()> {
    let file = args.file.as_path();
    let store = app::open_store(settings).await?;
    let catalog = app::stored_catalog(&store, settings).await?;
    let (ingest, writer) = app::start_ingest(store, settings);
    let started = std::time::Instant::now();
    let summary = import::import_file(file, &ingest, &catalog, |line| eprintln!("{line}"))
        .await
        .with_context(|| format!("import of {} stopped", file.display()))?;
    drop(ingest);
    writer.await?;
    let seconds = started.elapsed().as_secs_f64();
    warn_past_retention(settings, &summary);
    println!(
        "{} rows in {seconds:.2} s ({:.0} rows/s): {} stored ({} counted), {} already stored, {} rejected",
        summary.rows,
        summary.rows as f64 / seconds.max(1e-9),
        summary.stored,
        summary.counted,
        summary.already_stored,
        summary.rejected
    );
    Ok(())
}

/// Warns, with a count, of imported rows that retention will delete at `serve`'s next upkeep.
fn warn_past_retention(settings: &Settings, summary: &import::ImportSummary) {
    let cutoffs = settings
        .retention
        .retention()
        .cutoffs(outagewatch::runtime::clock::now());
    for (from, what, key) in [
        (cutoffs.reports_from, "reports", "retention.reports_days"),
        (
            cutoffs.minute_rollups_from,
            "minute counts",
            "retention.minute_rollups_days",
        ),
        (
            cutoffs.coarse_rollups_from,
            "quarter-hour and hourly counts",
            "retention.coarse_rollups_days",
        ),
    ] {
        let Some(from) = from else { continue };
        let rows = summary.rows_before(from);
        if rows > 0 {
            eprintln!(
                "warning: {rows} rows were received before {from}: their {what} are past {key} \
                 and will be deleted at serve's next upkeep (set it to 0 to keep them)"
            );
        }
    }
}
