//! `outagewatch-tools simulate`: a scenario file in, the CSV `outagewatch import` reads out.

use std::path::PathBuf;

use anyhow::Context;
use outagewatch_scenario::{write_csv, Scenario};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The scenario (TOML; see tests/scenarios/).
    #[arg(long)]
    scenario: PathBuf,
    /// Where to write the CSV ("-" for standard output).
    #[arg(long, default_value = "-")]
    output: PathBuf,
}

/// Writes the scenario's rows and says how many on standard error.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let SimulateArgs { scenario, output } = args;
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("cannot read {}", scenario.display()))?;
    let parsed = Scenario::from_toml(&text)
        .with_context(|| format!("invalid scenario {}", scenario.display()))?;
    let rows = if output.as_os_str() == "-" {
        write_csv(&parsed, std::io::stdout().lock())?
    } else {
        let file = std::fs::File::create(output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        write_csv(&parsed, std::io::BufWriter::new(file))?
    };
    eprintln!("simulate: {rows} rows");
    Ok(())
}
