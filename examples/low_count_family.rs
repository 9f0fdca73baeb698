//! Measures the detector on seeds of the low-count surge family and prints the README's Markdown table: `cargo run --release --example low_count_family -- 21 40 [DATABASE_URL] [--family FILE]`.
//!
//! Seeds 21–40 are the held-out ones (never used to tune; `tests/low_count_family.rs` asserts
//! seeds 1–20). Without a URL it measures on a fresh SQLite file; a URL must name an empty
//! database (e.g. a new Postgres database), since the measurement counts every incident in it.
//! `--family FILE` measures another family file instead of `tests/scenarios/low-count.toml`.

#[path = "../tests/family_measure/mod.rs"]
mod family_measure;

use anyhow::{bail, Context};
use outagewatch_scenario::Family;

/// The family file, as the test reads it.
const FAMILY: &str = include_str!("../tests/scenarios/low-count.toml");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let family_text = match args.iter().position(|a| a == "--family") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?
        }
        Some(_) => bail!("--family needs a file"),
        None => FAMILY.to_owned(),
    };
    let (first, last, url) = match args.as_slice() {
        [first, last] => (first, last, None),
        [first, last, url] => (first, last, Some(url.clone())),
        _ => bail!("usage: low_count_family FIRST_SEED LAST_SEED [DATABASE_URL] [--family FILE]"),
    };
    let first: u64 = first.parse().context("FIRST_SEED")?;
    let last: u64 = last.parse().context("LAST_SEED")?;
    let family = Family::from_toml(&family_text)?;
    let dir = tempfile::tempdir()?;
    let url = url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("family.db").display()));
    let measurement = family_measure::measure(&family, first..=last, &url).await?;
    println!(
        "{}, seeds {first}–{last} ({} reports; import {:.1} s, redetect {:.1} s):\n",
        measurement.family,
        measurement.imported.rows,
        measurement.import_time.as_secs_f64(),
        measurement.redetect_time.as_secs_f64(),
    );
    print!("{}", measurement.markdown());
    for outcome in &measurement.outcomes {
        for incident in &outcome.false_incidents {
            println!(
                "\nfalse incident, seed {}: {} {:?} {} {} from {} (peak {} against {:.1} expected)",
                outcome.seed,
                incident.service,
                incident.scope,
                incident.country.as_deref().unwrap_or("world"),
                incident.city.as_deref().unwrap_or(""),
                incident.started_at,
                incident.peak_count,
                incident.expected_at_peak,
            );
        }
    }
    Ok(())
}
