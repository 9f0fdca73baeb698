//! Bulk import of historical reports from CSV or NDJSON: the API's validation, then the store's import path (on Postgres a COPY per batch, counted as the live path counts).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::report::{Catalog, Report, ReportFields};
use crate::ingest::{fingerprint_of_reporter, ImportHints, Ingest, IngestError, NewReport};
use crate::store::{Fingerprint, Outcome, StoreError};

/// Rows per batch: each is one transaction (on Postgres, a COPY of its reports and ids).
const ROWS_PER_SUBMISSION: usize = 10_000;
/// Batches kept in flight, so each lane has its next one while rows are parsed.
const SUBMISSIONS_IN_FLIGHT: usize = 8;
/// Lanes written at once. A row goes to the lane of its dedup window (window index modulo
/// lanes), and each lane writes its batches one at a time, in file order: two batches written
/// at once never hold the same dedup key, so neither waits on the other's.
const LANES: usize = 2;
/// Attempts per submission while the store is unavailable (busy, restarting): a batch that
/// failed committed nothing and its ids are stable, so sending it again is safe.
const ATTEMPTS_WHILE_UNAVAILABLE: u32 = 8;
/// Wait before the first retry; it doubles per attempt (0.25 s .. 32 s, about a minute in all).
const FIRST_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub rows: u64,
    pub stored: u64,
    pub counted: u64,
    /// Rows whose id was already stored (e.g. a re-run): nothing written.
    pub already_stored: u64,
    /// Rows rejected by validation, each reported with its line number.
    pub rejected: u64,
    /// Valid rows per UTC day they were received on (what retention will judge them by).
    pub rows_by_day: BTreeMap<NaiveDate, u64>,
}

impl ImportSummary {
    /// Valid rows received before `day`.
    pub fn rows_before(&self, day: NaiveDate) -> u64 {
        self.rows_by_day.range(..day).map(|(_, rows)| rows).sum()
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("CSV header: {0}")]
    Header(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("import task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One row's raw fields, borrowed from the line.
#[derive(Default)]
struct Row<'a> {
    received_at: Option<&'a str>,
    reporter: Option<&'a str>,
    fields: ReportFields<'a>,
}

/// Imports `path` (CSV with a header row, or NDJSON when the name ends in `.ndjson`/`.jsonl` or
/// the first byte is `{`). Bad rows go to `on_rejected` as `line N: field: message`; the rest are stored.
pub async fn import_file(
    path: &Path,
    ingest: &Ingest,
    catalog: &Catalog,
    mut on_rejected: impl FnMut(String),
) -> Result<ImportSummary, ImportError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| ImportError::Read {
            path: path.display().to_string(),
            source,
        })?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let ndjson =
        name.ends_with(".ndjson") || name.ends_with(".jsonl") || text.trim_start().starts_with('{');
    let mut importer = Importer::new(ingest, catalog);
    if ndjson {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    importer.summary.rows += 1;
                    importer.summary.rejected += 1;
                    on_rejected(format!("line {}: malformed JSON: {e}", i + 1));
                    continue;
                }
            };
            let text_of = |key: &str| value.get(key).and_then(Value::as_str);
            let row = Row {
                received_at: text_of("received_at"),
                reporter: text_of("reporter"),
                fields: ReportFields {
                    service: text_of("service"),
                    country: text_of("country"),
                    city: text_of("city"),
                    problem: text_of("problem"),
                    id: text_of("id"),
                },
            };
            importer.push(i + 1, &row, line, &mut on_rejected).await?;
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| ImportError::Header(e.to_string()))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let columns = [
            column("received_at"),
            column("service"),
            column("country"),
            column("city"),
            column("problem"),
            column("reporter"),
            column("id"),
        ];
        for (required, name) in [
            (columns[0], "received_at"),
            (columns[1], "service"),
            (columns[2], "country"),
            (columns[4], "problem"),
        ] {
            if required.is_none() {
                return Err(ImportError::Header(format!("missing column {name}")));
            }
        }
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    importer.summary.rows += 1;
                    importer.summary.rejected += 1;
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    on_rejected(format!("line {line}: unreadable CSV: {e}"));
                    continue;
                }
            };
            let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
            let get = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
            let row = Row {
                received_at: get(columns[0]),
                reporter: get(columns[5]),
                fields: ReportFields {
                    service: get(columns[1]),
                    country: get(columns[2]),
                    city: get(columns[3]),
                    problem: get(columns[4]),
                    id: get(columns[6]),
                },
            };
            let raw: Vec<&str> = record.iter().collect();
            importer
                .push(line, &row, &raw.join("\u{1f}"), &mut on_rejected)
                .await?;
        }
    }
    importer.finish().await
}

/// Validates rows, fills submissions and keeps a few in flight.
struct Importer<'a> {
    ingest: &'a Ingest,
    catalog: &'a Catalog,
    /// Each lane's batch being filled.
    pending: [Vec<NewReport>; LANES],
    in_flight: VecDeque<JoinHandle<Result<Vec<Outcome>, IngestError>>>,
    /// Each lane's last batch submitted: once written it hands over what the lane has learnt
    /// from its batches (their hints), and the lane's next batch waits for that.
    written: [Option<tokio::sync::oneshot::Receiver<ImportHints>>; LANES],
    /// How often each identical row has been seen, so repeated rows get distinct, stable ids.
    occurrences: HashMap<blake3::Hash, u32>,
    summary: ImportSummary,
}

impl<'a> Importer<'a> {
    fn new(ingest: &'a Ingest, catalog: &'a Catalog) -> Importer<'a> {
        Importer {
            ingest,
            catalog,
            pending: Default::default(),
            in_flight: VecDeque::new(),
            written: Default::default(),
            occurrences: HashMap::new(),
            summary: ImportSummary::default(),
        }
    }

    async fn push(
        &mut self,
        line: usize,
        row: &Row<'_>,
        raw: &str,
        on_rejected: &mut impl FnMut(String),
    ) -> Result<(), ImportError> {
        self.summary.rows += 1;
        let received_at = match row.received_at.map(DateTime::parse_from_rfc3339) {
            Some(Ok(at)) => Some(at.with_timezone(&Utc)),
            Some(Err(e)) => {
                on_rejected(format!(
                    "line {line}: received_at: not an RFC 3339 time: {e}"
                ));
                None
            }
            None => {
                on_rejected(format!("line {line}: received_at: received_at is required"));
                None
            }
        };
        let report = Report::parse(&row.fields, self.catalog);
        if let Err(errors) = &report {
            for e in errors {
                on_rejected(format!("line {line}: {}: {}", e.field, e.message));
            }
        }
        let (Some(received_at), Ok(report)) = (received_at, report) else {
            self.summary.rejected += 1;
            return Ok(());
        };
        *self
            .summary
            .rows_by_day
            .entry(received_at.date_naive())
            .or_default() += 1;
        let id = report.id.unwrap_or_else(|| self.derived_id(raw));
        let fingerprint = match row.reporter {
            Some(reporter) => fingerprint_of_reporter(reporter),
            // No reporter: every row is its own reporter.
            None => Fingerprint(*id.as_bytes()),
        };
        let lane = self
            .ingest
            .dedup_window_index(received_at)
            .rem_euclid(LANES as i64) as usize;
        self.pending[lane].push(NewReport {
            id,
            // Every imported id may already be stored by an earlier run.
            client_id: true,
            received_at,
            service: report.service,
            country: report.country,
            city: report.city.map(|c| c.name),
            problem: report.problem,
            fingerprint,
            dedup_window_start: self.ingest.dedup_window_start(received_at),
            network: None,
        });
        if self.pending[lane].len() >= ROWS_PER_SUBMISSION {
            self.submit(lane).await?;
        }
        Ok(())
    }

    /// An id that is the same for the same row on every run: a hash of its content and of
    /// how many identical rows came before it.
    fn derived_id(&mut self, raw: &str) -> Uuid {
        let content = blake3::hash(raw.as_bytes());
        let seen = self.occurrences.entry(content).or_insert(0);
        let mut hasher = blake3::Hasher::new_derive_key("outagewatch 2026 imported row id");
        hasher.update(content.as_bytes());
        hasher.update(&seen.to_le_bytes());
        *seen += 1;
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    async fn submit(&mut self, lane: usize) -> Result<(), ImportError> {
        let batch = std::mem::take(&mut self.pending[lane]);
        let ingest = self.ingest.clone();
        let (done, written) = tokio::sync::oneshot::channel();
        let previous = self.written[lane].replace(written);
        self.in_flight.push_back(tokio::spawn(async move {
            let mut hints = match previous {
                // Dropped only if the previous task panicked: go on without its hints.
                Some(previous) => previous.await.unwrap_or_default(),
                None => ImportHints::default(),
            };
            let answer = submit_retrying(&ingest, &batch, &hints).await;
            if let Ok(outcomes) = &answer {
                hints.learn(&batch, outcomes);
            }
            let _ = done.send(hints);
            answer
        }));
        while self.in_flight.len() >= SUBMISSIONS_IN_FLIGHT {
            self.collect_oldest().await?;
        }
        Ok(())
    }

    async fn collect_oldest(&mut self) -> Result<(), ImportError> {
        if let Some(handle) = self.in_flight.pop_front() {
            for outcome in handle.await?? {
                if outcome.replay {
                    self.summary.already_stored += 1;
                } else {
                    self.summary.stored += 1;
                    self.summary.counted += u64::from(outcome.counted);
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<ImportSummary, ImportError> {
        for lane in 0..LANES {
            if !self.pending[lane].is_empty() {
                self.submit(lane).await?;
            }
        }
        while !self.in_flight.is_empty() {
            self.collect_oldest().await?;
        }
        Ok(self.summary)
    }
}

/// Submits one batch, retrying with backoff while the store is unavailable: on a loaded
/// machine a batch can wait longer for the writer connection than a request may, and an
/// import should ride that out (or a database restart) rather than stop.
async fn submit_retrying(
    ingest: &Ingest,
    batch: &[NewReport],
    hints: &ImportHints,
) -> Result<Vec<Outcome>, IngestError> {
    let mut wait = FIRST_RETRY_WAIT;
    for _ in 1..ATTEMPTS_WHILE_UNAVAILABLE {
        match ingest.import(batch, hints).await {
            Err(IngestError::Store(StoreError::Unavailable(detail))) => {
                tracing::warn!(%detail, retry_in_ms = wait.as_millis() as u64, "the store is unavailable; retrying the batch");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            answer => return answer,
        }
    }
    ingest.import(batch, hints).await
}
