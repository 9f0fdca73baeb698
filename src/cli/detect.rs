//! `outagewatch detect`: one series scored offline from a CSV, with the live detector's model.

use std::path::PathBuf;

use anyhow::Context;
use outagewatch::config::Settings;
use outagewatch::detect;

/// How `detect` models its column.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ColumnKind {
    Auto,
    Counts,
    Metric,
}

#[derive(clap::Args)]
pub struct DetectArgs {
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
}

/// Scores the input and writes the scored rows.
pub fn run(settings: &Settings, args: &DetectArgs) -> anyhow::Result<()> {
    let DetectArgs {
        input,
        output,
        kind,
    } = args;
    let text = std::fs::read_to_string(input)
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
        std::fs::write(output, scored)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    Ok(())
}
