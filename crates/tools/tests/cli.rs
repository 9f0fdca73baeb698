//! Black-box tests of the `outagewatch-tools` binary: what `simulate` writes, and what `loadgen` refuses before it sends anything.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_outagewatch-tools");

/// The tools binary with a clean environment (settings only from the embedded defaults).
fn tools() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTAGEWATCH__LOG__LEVEL", "warn");
    command
}

#[test]
fn simulate_writes_the_scenarios_import_csv_and_counts_its_rows() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios/city-only.toml");
    let scenario =
        outagewatch_scenario::Scenario::from_toml(&std::fs::read_to_string(&file).unwrap())
            .unwrap();
    let mut expected = Vec::new();
    let rows = outagewatch_scenario::write_csv(&scenario, &mut expected).unwrap();
    assert!(rows > 0);

    let output = tools()
        .args(["simulate", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout == expected, "stdout differs from write_csv");
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        format!("simulate: {rows} rows\n")
    );
}

#[test]
fn simulate_names_the_file_it_cannot_read() {
    let output = tools()
        .args(["simulate", "--scenario", "no/such/scenario.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot read no/such/scenario.toml"),
        "{stderr}"
    );
}

#[test]
fn loadgen_refuses_to_verify_reads() {
    let output = tools()
        .args(["loadgen", "--verify", "--get", "/healthz"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--verify checks posted reports; it cannot be combined with --get"),
        "{stderr}"
    );
}
