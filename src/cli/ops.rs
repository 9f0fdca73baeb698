//! `outagewatch counts` and `outagewatch incidents`: the read API's queries run against the store and printed for an operator's terminal, as CSV or as JSON.

use std::time::Duration;

use outagewatch::config::Settings;
use outagewatch::domain::report::Catalog;
use outagewatch::read::Reads;
use outagewatch::{api, app};

/// How long an operator's read may take.
const OPERATOR_DEADLINE: Duration = Duration::from_secs(3600);

/// How the ops commands print.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct CountsArgs {
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
}

#[derive(clap::Args)]
pub struct IncidentsArgs {
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
}

/// Prints a service's counts, as `GET /api/v1/counts` answers them.
pub async fn counts(settings: &Settings, args: CountsArgs) -> anyhow::Result<()> {
    let CountsArgs {
        service,
        country,
        city,
        interval,
        last,
        from,
        to,
        format,
    } = args;
    let from = match from {
        Some(from) => from,
        None => (outagewatch::runtime::clock::now() - parse_last(&last)?).to_rfc3339(),
    };
    let params = api::CountsParams {
        service: Some(service),
        country,
        city,
        interval: Some(interval),
        from: Some(from),
        to,
    };
    let (reads, catalog) = open_reads(settings).await?;
    let answer = api::counts_answer(&reads, &catalog, &params)
        .await
        .map_err(explain)?;
    print_answer(&serde_json::to_value(answer)?, format)
}

/// Lists incidents, newest first, as `GET /api/v1/incidents` answers them.
pub async fn incidents(settings: &Settings, args: IncidentsArgs) -> anyhow::Result<()> {
    let IncidentsArgs {
        open,
        service,
        country,
        limit,
        format,
    } = args;
    let params = api::IncidentsParams {
        status: Some(if open { "open" } else { "all" }.to_owned()),
        service,
        country,
        limit: Some(limit.to_string()),
        ..api::IncidentsParams::default()
    };
    let (reads, catalog) = open_reads(settings).await?;
    let page = api::incidents_page(&reads, &catalog, &params)
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

/// The read side over the settings' store, and the catalog as stored. An operator's command is
/// not a request: its read may take as long as the range needs (an hour at most), where a
/// request's gives up after `database.query_timeout_ms`.
async fn open_reads(settings: &Settings) -> anyhow::Result<(Reads, Catalog)> {
    let store = app::open_store(settings).await?;
    let catalog = app::stored_catalog(&store, settings).await?;
    let reads = Reads::new(store, OPERATOR_DEADLINE).keeping(settings.retention.retention());
    Ok((reads, catalog))
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
