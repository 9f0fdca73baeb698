//! Closed-loop HTTP/1.1 load generator: posts reports to `POST /api/v1/reports` and records every report id's fate so a later check can verify what the server stored, or GETs read endpoints to measure their latency.
//!
//! A tool beside the service, not part of it: `outagewatch-tools loadgen` and the fault suite
//! (tests/faults) use it; it speaks to the service only over HTTP. Reading order: this file (the
//! options, the summary and [`run`]) → `plan` (the URL and the request bodies, prepared once) →
//! `connection` (one keep-alive connection's send/answer loop) → `stats` (what each connection
//! saw, merged into the summary).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use uuid::Uuid;

use crate::connection::{connection_loop, Schedule, Times, CONNECT_TIMEOUT};
use crate::plan::Plan;
use crate::stats::ConnStats;

mod connection;
mod plan;
mod stats;

/// Problem kinds the generated reports cycle through; they must be in the server's vocabulary.
pub const PROBLEMS: &[&str] = &[
    "app",
    "website",
    "login",
    "server_connection",
    "notifications",
    "other",
];

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`; only `http` is supported.
    pub url: String,
    /// Keep-alive connections, each sending one request at a time, back to back.
    pub connections: usize,
    /// Length of the measuring phase, after the warm-up.
    pub duration: Duration,
    /// Length of the warm-up: its answers are recorded but not its latency or throughput.
    pub warmup: Duration,
    /// Service slugs the reports vary over.
    pub services: Vec<String>,
    /// `(country, city)` pairs the reports vary over.
    pub places: Vec<(String, Option<String>)>,
    /// Number of distinct `User-Agent` values, so the server's dedup sees that many reporters.
    pub distinct_reporters: u32,
    /// Reports per request: 1 sends one report per body, more sends `{"reports":[...]}`.
    pub batch: usize,
    /// Request targets (path and query, e.g. `/api/v1/regions?service=x`) to GET, one picked
    /// at random per request, instead of posting reports; empty posts reports.
    pub reads: Vec<String>,
    /// Ask for gzip-compressed reads (`Accept-Encoding: gzip`), as browsers do.
    pub gzip: bool,
    /// Open loop: the requests per second all connections send together, each connection at
    /// an even pace (a slow answer delays only its own connection's next request); None sends
    /// back to back (closed loop).
    pub rate_per_second: Option<f64>,
    /// Keep every answer's send time, latency and status in [`LoadgenSummary::answers`].
    pub record_answers: bool,
}

/// One answer (or transport error), for looking at a run over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// When the request was sent, after the start of the run (warm-up included).
    pub sent_after: Duration,
    pub latency: Duration,
    /// The HTTP status, or 0 for a transport error (failed connect, broken connection, timeout).
    pub status: u16,
}

impl Default for LoadgenOptions {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            connections: 256,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            // The CLI passes the configured catalog instead.
            services: vec!["x".to_owned(), "youtube".to_owned()],
            places: vec![
                ("PK".to_owned(), Some("Lahore".to_owned())),
                ("PK".to_owned(), Some("Karachi".to_owned())),
                ("PK".to_owned(), Some("Rawalpindi".to_owned())),
                ("PK".to_owned(), None),
                ("US".to_owned(), Some("Chicago".to_owned())),
                ("US".to_owned(), Some("Los Angeles".to_owned())),
                ("US".to_owned(), None),
                ("GB".to_owned(), Some("London".to_owned())),
                ("GB".to_owned(), Some("Manchester".to_owned())),
                ("IN".to_owned(), Some("Mumbai".to_owned())),
                ("DE".to_owned(), Some("Berlin".to_owned())),
                ("BR".to_owned(), Some("São Paulo".to_owned())),
                ("BR".to_owned(), None),
            ],
            distinct_reporters: 10_000,
            batch: 1,
            reads: Vec::new(),
            gzip: false,
            rate_per_second: None,
            record_answers: false,
        }
    }
}

/// Outcome of a run.
///
/// `sent`, `by_status`, `transport_errors` and the id lists cover the whole run, warm-up
/// included; latencies and `acknowledged_per_second` cover the measuring phase only, i.e.
/// requests sent after the warm-up.
#[derive(Debug, Clone, Default)]
pub struct LoadgenSummary {
    /// HTTP requests sent, retries included.
    pub sent: u64,
    /// Length of the measuring phase, up to the last answer to a request sent in it.
    pub elapsed: Duration,
    /// Answers counted by HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed connects, broken connections and timed-out requests.
    pub transport_errors: u64,
    /// Every report id answered 201 or 200, i.e. stored by the server.
    pub acknowledged_ids: Vec<Uuid>,
    /// Every report id answered 4xx other than 429, i.e. not stored.
    pub rejected_ids: Vec<Uuid>,
    /// Report ids whose fate is unknown: the run ended while they awaited a retry after a
    /// 429, a 503 or a transport error, or they got an unexpected status such as a 500.
    pub unresolved_ids: Vec<Uuid>,
    /// Median latency of answered requests.
    pub latency_p50: Duration,
    /// 90th percentile latency of answered requests.
    pub latency_p90: Duration,
    /// 99th percentile latency of answered requests.
    pub latency_p99: Duration,
    /// Largest latency of an answered request.
    pub latency_max: Duration,
    /// Acknowledged reports (not requests) per second.
    pub acknowledged_per_second: f64,
    /// Requests answered per second, whatever their status.
    pub answered_per_second: f64,
    /// The longest latency seen for each status (warm-up included).
    pub max_latency_by_status: BTreeMap<u16, Duration>,
    /// Every answer in the order the connections saw them, when `record_answers` is set.
    pub answers: Vec<Answer>,
}

impl LoadgenSummary {
    /// Renders the figures as a human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("requests sent".into(), self.sent.to_string()),
            ("transport errors".into(), self.transport_errors.to_string()),
        ];
        for (status, count) in &self.by_status {
            let slowest = self
                .max_latency_by_status
                .get(status)
                .map_or_else(String::new, |d| format!(" (max {})", millis(*d)));
            rows.push((format!("status {status}"), format!("{count}{slowest}")));
        }
        rows.extend([
            (
                "acknowledged ids".into(),
                self.acknowledged_ids.len().to_string(),
            ),
            ("rejected ids".into(), self.rejected_ids.len().to_string()),
            (
                "unresolved ids".into(),
                self.unresolved_ids.len().to_string(),
            ),
            (
                "measured for".into(),
                format!("{:.2} s", self.elapsed.as_secs_f64()),
            ),
            (
                "acknowledged/s".into(),
                format!("{:.0}", self.acknowledged_per_second),
            ),
            (
                "answered/s".into(),
                format!("{:.0}", self.answered_per_second),
            ),
            ("latency p50".into(), millis(self.latency_p50)),
            ("latency p90".into(), millis(self.latency_p90)),
            ("latency p99".into(), millis(self.latency_p99)),
            ("latency max".into(), millis(self.latency_max)),
        ]);
        let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{label:<label_width$}  {value:>value_width$}");
        }
        out
    }
}

impl fmt::Display for LoadgenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// An option is out of range, e.g. no connections or no services.
    #[error("invalid load generator options: {0}")]
    InvalidOptions(String),
    /// The base URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to any address.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// Host and port looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not accept a probe connection before the run.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// A connection task panicked or was cancelled.
    #[error("a load generator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Sends reports as fast as `options.connections` closed-loop connections allow and
/// accounts for every answer; the run stops by itself after `warmup + duration`, plus at
/// most one request timeout for the last answers.
///
/// Must be called inside a Tokio runtime with I/O and timers enabled; the connections are
/// spawned onto it, so a multi-thread runtime spreads them over its workers.
pub async fn run(options: LoadgenOptions) -> Result<LoadgenSummary, LoadgenError> {
    let plan = Arc::new(Plan::new(&options).await?);

    // Fail fast with a clear error rather than run a whole load test of refused connects.
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(plan.addr)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(source)) => {
            return Err(LoadgenError::Connect {
                addr: plan.addr,
                source,
            })
        }
        Err(_) => {
            return Err(LoadgenError::Connect {
                addr: plan.addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })
        }
    }

    let start = Instant::now();
    let measure_start = start + options.warmup;
    let end = measure_start + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    // Open loop: each connection sends every `connections / rate` seconds, the connections'
    // phases spread evenly over one such interval.
    let pace = options
        .rate_per_second
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(options.connections as f64 / rate));
    for i in 0..options.connections {
        let plan = Arc::clone(&plan);
        let schedule = pace.map(|every| Schedule {
            next: start + every.mul_f64(i as f64 / options.connections as f64),
            every,
        });
        tasks.spawn(connection_loop(
            plan,
            Times {
                start,
                measure_start,
                end,
            },
            schedule,
        ));
    }

    let mut total = ConnStats::new();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined?);
    }
    Ok(total.into_summary(measure_start, options.duration))
}

#[cfg(test)]
mod tests;
