//! The `outagewatch` command: a table of contents of what the service can do.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::collections::BTreeMap;

use outagewatch::api;
use outagewatch::app::{self, App};
use outagewatch::config::Settings;
use outagewatch::{detect, detector, import};

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

/// How `detect` models its column.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ColumnKind {
    Auto,
    Counts,
    Metric,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load historical reports from a CSV or NDJSON file.
    Import {
        /// The file: CSV with a header row, or NDJSON (.ndjson/.jsonl).
        file: PathBuf,
    },
    /// Score one series offline: a CSV of `timestamp,value` rows at any regular interval in,
    /// the same rows with `anomaly_score` (0 to 1) and the incident state out.
    Detect {
        /// The input CSV.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the scored CSV ("-" for standard output).
        #[arg(long, default_value = "-")]
        output: PathBuf,
        /// How to model the column: `counts` (as the live detector does), `metric`, or `auto`
        /// (decided from the warm-up rows: non-negative integers at least as noisy as Poisson
        /// are counts).
        #[arg(long, value_enum, default_value_t = ColumnKind::Auto)]
        kind: ColumnKind,
    },
    /// Recompute the incidents of a time range from the stored minute rollups (replacing the
    /// stored ones that started in it), with the live detector's code, and print a summary.
    Redetect {
        /// Start of the range (RFC 3339, e.g. 2025-03-10T00:00:00Z); default: the first rollup.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the range (exclusive); default: the last complete minute.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Print a service's counts (the query behind GET /api/v1/counts).
    Counts {
        #[arg(long)]
        service: String,
        #[arg(long)]
        country: Option<String>,
        /// A city of --country, in any spelling.
        #[arg(long)]
        city: Option<String>,
        /// Bucket width: 1m, 5m, 15m, 1h or 1d.
        #[arg(long, default_value = "15m")]
        interval: String,
        /// How far back from now, e.g. 90m, 24h, 7d (when --from is not given).
        #[arg(long, default_value = "24h")]
        last: String,
        /// Start (RFC 3339); overrides --last.
        #[arg(long)]
        from: Option<String>,
        /// End (RFC 3339, exclusive); default: the end of the current bucket.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List incidents, newest first (the query behind GET /api/v1/incidents).
    Incidents {
        /// Only open incidents.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        country: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// How the ops commands print.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

/// Prints an answer in the chosen format.
fn print_answer(answer: &serde_json::Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{}", api::to_table(answer)),
        Format::Csv => print!("{}", String::from_utf8(api::to_csv(answer)?)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(answer)?),
    }
    Ok(())
}

/// Explains a rejected query parameter by parameter.
fn explain(error: api::ApiError) -> anyhow::Error {
    match error {
        api::ApiError::InvalidParameters(errors) => anyhow::anyhow!(errors
            .iter()
            .map(|e| format!("--{}: {}", e.field.replace('_', "-"), e.message))
            .collect::<Vec<_>>()
            .join("\n")),
        other => anyhow::anyhow!("{other}"),
    }
}

/// "90m", "24h", "7d" → a duration.
fn parse_last(text: &str) -> anyhow::Result<chrono::TimeDelta> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--last: expected a number and m, h or d, e.g. 24h"))?;
    match unit {
        "m" => Ok(chrono::TimeDelta::minutes(n)),
        "h" => Ok(chrono::TimeDelta::hours(n)),
        "d" => Ok(chrono::TimeDelta::days(n)),
        _ => anyhow::bail!("--last: expected a number and m, h or d, e.g. 24h"),
    }
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
        Command::Import { file } => run_import(&settings, &file).await,
        Command::Detect {
            input,
            output,
            kind,
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let kind = match kind {
                ColumnKind::Auto => None,
                ColumnKind::Counts => Some(detect::SeriesKind::Counts),
                ColumnKind::Metric => Some(detect::SeriesKind::Metric),
            };
            let scored = detect::detect_csv(&text, &settings.detector.model, kind)
                .with_context(|| format!("cannot score {}", input.display()))?;
            if output.as_os_str() == "-" {
                print!("{scored}");
            } else {
                std::fs::write(&output, scored)
                    .with_context(|| format!("cannot write {}", output.display()))?;
            }
            Ok(())
        }
        Command::Redetect { from, to } => {
            let store = app::open_store(&settings).await?;
            let catalog = app::stored_catalog(&store, &settings).await?;
            let started = std::time::Instant::now();
            let summary = detector::redetect(
                store,
                std::sync::Arc::new(catalog),
                &settings.detector,
                from,
                to,
                outagewatch::clock::now(),
            )
            .await?;
            let range = match (summary.from, summary.to) {
                (Some(from), Some(to)) => format!("{} to {}", from.to_rfc3339(), to.to_rfc3339()),
                _ => "nothing: no rollups stored".to_owned(),
            };
            println!(
                "redetect: {range}; {} minutes replayed over {} series in {:.2} s; {} incidents ({} open)",
                summary.minutes,
                summary.series,
                started.elapsed().as_secs_f64(),
                summary.incidents,
                summary.open
            );
            Ok(())
        }
        Command::Counts {
            service,
            country,
            city,
            interval,
            last,
            from,
            to,
            format,
        } => {
            let from = match from {
                Some(from) => from,
                None => (outagewatch::clock::now() - parse_last(&last)?).to_rfc3339(),
            };
            let params: BTreeMap<String, String> = [
                ("service", Some(service)),
                ("country", country),
                ("city", city),
                ("interval", Some(interval)),
                ("from", Some(from)),
                ("to", to),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
            let store = app::open_store(&settings).await?;
            let catalog = app::stored_catalog(&store, &settings).await?;
            let answer = api::counts_answer(&store, &catalog, &params)
                .await
                .map_err(explain)?;
            print_answer(&serde_json::to_value(answer)?, format)
        }
        Command::Incidents {
            open,
            service,
            country,
            limit,
            format,
        } => {
            let params: BTreeMap<String, String> = [
                ("status", Some(if open { "open" } else { "all" }.to_owned())),
                ("service", service),
                ("country", country),
                ("limit", Some(limit.to_string())),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect();
            let store = app::open_store(&settings).await?;
            let catalog = app::stored_catalog(&store, &settings).await?;
            let page = api::incidents_page(&store, &catalog, &params)
                .await
                .map_err(explain)?;
            let mut answer = serde_json::to_value(page)?;
            if matches!(format, Format::Table) {
                // The table keeps what fits a terminal; csv and json have every field.
                if let Some(list) = answer["incidents"].as_array_mut() {
                    for incident in list.iter_mut() {
                        if let Some(fields) = incident.as_object_mut() {
                            fields.retain(|k, _| {
                                matches!(
                                    k.as_str(),
                                    "started_at"
                                        | "service"
                                        | "scope"
                                        | "country"
                                        | "city"
                                        | "status"
                                        | "peak_count"
                                        | "resolved_at"
                                        | "summary"
                                )
                            });
                        }
                    }
                }
            }
            print_answer(&answer, format)
        }
    }
}

async fn run_import(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
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
