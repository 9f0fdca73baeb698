//! The fault suite: crashes, database outages and stalls, overload, slow clients, abuse, fuzzing and admin auth, each against the real binary on loopback, printed as one table.
//!
//! `cargo test --test faults` runs the short version (CI, a few minutes);
//! `OUTAGEWATCH_FAULTS=full` the full one (scripts/faults, for the README's figures). Names
//! given as arguments run only the rounds whose name contains one of them. It starts its own
//! Postgres cluster (the rounds stop and stall it), so it needs the server binaries that
//! `scripts/test` needs, and `st` (schemathesis) on the PATH.

mod abuse;
mod cluster;
// The fixtures the other test targets share (the incident the admin round annotates).
#[path = "../common/mod.rs"]
mod common;
mod load;
mod service;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use load::DatabaseFault;

/// One printed row: which fault, whether its pass condition held, and its figures.
pub struct Row {
    pub test: &'static str,
    pub pass: bool,
    pub figures: String,
}

/// How long and how hard each round goes.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub full: bool,
}

impl Scale {
    /// `short` in the short suite, `full` in the full one.
    pub fn pick<T>(self, short: T, full: T) -> T {
        if self.full {
            full
        } else {
            short
        }
    }
}

type RoundFuture<'a> = Pin<Box<dyn Future<Output = Row> + 'a>>;
type Round = for<'a> fn(&'a cluster::Cluster, Scale) -> RoundFuture<'a>;

/// Every round, in the order of the table.
const ROUNDS: [(&str, Round); 10] = [
    ("kill -9", |c, s| Box::pin(load::kill_nine(c, s))),
    ("postgres stopped", |c, s| {
        Box::pin(load::database_fault(c, s, DatabaseFault::Stopped))
    }),
    ("postgres stalled", |c, s| {
        Box::pin(load::database_fault(c, s, DatabaseFault::Stalled))
    }),
    ("overload", |c, s| Box::pin(load::overload(c, s))),
    ("sigterm", |c, s| Box::pin(load::sigterm(c, s))),
    ("slowloris", |c, s| Box::pin(load::slowloris(c, s))),
    ("rate limit", |c, s| Box::pin(abuse::rate_limit(c, s))),
    ("fake network", |c, s| Box::pin(abuse::fake_network(c, s))),
    ("schemathesis", |c, s| Box::pin(abuse::schemathesis(c, s))),
    ("admin", |c, s| Box::pin(abuse::admin(c, s))),
];

fn main() -> ExitCode {
    let scale = Scale {
        full: std::env::var("OUTAGEWATCH_FAULTS").is_ok_and(|v| v == "full"),
    };
    // Arguments cargo test passes along: flags are ignored, words filter rounds by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<&(&str, Round)> = ROUNDS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    if !chosen.is_empty() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rows = runtime.block_on(async {
            let cluster = match cluster::Cluster::start() {
                Ok(cluster) => cluster,
                Err(error) => {
                    return vec![Row {
                        test: "postgres cluster",
                        pass: false,
                        figures: error,
                    }]
                }
            };
            let mut rows = Vec::new();
            for (name, round) in chosen {
                eprintln!("faults: {name} ...");
                let began = Instant::now();
                let row = round(&cluster, scale).await;
                eprintln!(
                    "faults: {name}: {} in {:.0} s",
                    if row.pass { "pass" } else { "FAIL" },
                    began.elapsed().as_secs_f64()
                );
                rows.push(row);
            }
            rows
        });
    }
    print_table(&rows, scale);
    let failed = rows.iter().filter(|r| !r.pass).count();
    // The line cargo test prints per test binary, so scripts/test counts these rows too.
    println!(
        "test result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s",
        if failed == 0 { "ok" } else { "FAILED" },
        rows.len() - failed,
        ROUNDS.len().saturating_sub(rows.len()),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(rows: &[Row], scale: Scale) {
    println!(
        "\nfault suite ({}):\n\n| test | result | figures |\n|---|---|---|",
        if scale.full { "full" } else { "short" }
    );
    for row in rows {
        println!(
            "| {} | {} | {} |",
            row.test,
            if row.pass { "pass" } else { "**FAIL**" },
            row.figures
        );
    }
    println!();
}
