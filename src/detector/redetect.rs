//! `outagewatch redetect` (and an admin's): the incidents of a range recomputed from the stored
//! rollups, with the live detector's code, replacing the stored ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{complete_until, DetectError, Detection, QUARTER_SECONDS};
use crate::config::DetectorSettings;
use crate::domain::buckets::{floor_to, minute_of};
use crate::domain::incidents::{Incident, Status};
use crate::domain::report::Catalog;
use crate::store::{DetectionWrite, Expectation, MinuteRollups, Store, StoreError};

/// Seconds in a UTC day: expectations are stored a series' day per row, so `redetect` writes
/// them a day at a time, each row once.
const DAY_SECONDS: i64 = 86_400;

/// Minutes of rollups `redetect` reads per query: larger, since it writes no incidents per
/// chunk. A UTC day, and the chunks are aligned to days: each query reads one day partition
/// whole (a sequential scan, 40 % cheaper than four quarter-day index scans), and each chunk's
/// end completes a day of expectations.
pub(super) const REDETECT_CHUNK_MINUTES: i64 = 1440;

/// Chunks of rollups `redetect` reads ahead of the engine.
pub(super) const READ_AHEAD_CHUNKS: usize = 2;

/// Batches of expectations `redetect` lets wait for the writer before the engine waits too.
const WRITE_BEHIND_BATCHES: usize = 2;

/// What `redetect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedetectSummary {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub minutes: i64,
    pub series: usize,
    pub incidents: usize,
    pub open: usize,
    /// Time spent stepping the engine.
    pub engine: Duration,
    /// Time spent in the store: reading rollups, and writing expectations and incidents. The
    /// reading and the expectation writing overlap the engine, so the three add to more than
    /// the run took.
    pub store_reads: Duration,
    pub store_writes: Duration,
}

/// Recomputes the incidents that started in `[from, to)` from the stored rollups, replacing
/// the stored ones; the detector first replays `history_days` before `from` so baselines are
/// learned. Defaults: from the first rollup to the last complete minute at `now`.
pub async fn redetect(
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    settings: &DetectorSettings,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<RedetectSummary, DetectError> {
    let Some(leadership) = store.try_lead_detector().await? else {
        return Err(DetectError::NotLeader);
    };
    let result = redetect_as_leader(store, catalog, settings, from, to, now).await;
    leadership.release().await;
    result
}

/// [`redetect`], once the detector lock is held.
async fn redetect_as_leader(
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    settings: &DetectorSettings,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<RedetectSummary, DetectError> {
    let mut summary = RedetectSummary {
        from: None,
        to: None,
        minutes: 0,
        series: 0,
        incidents: 0,
        open: 0,
        engine: Duration::ZERO,
        store_reads: Duration::ZERO,
        store_writes: Duration::ZERO,
    };
    let Some(first) = store.first_rollup_minute().await? else {
        return Ok(summary);
    };
    let to = minute_of(
        to.unwrap_or_else(|| complete_until(now, Duration::from_secs(settings.settle_seconds))),
    );
    let from = minute_of(from.unwrap_or(first));
    if from >= to {
        return Err(DetectError::EmptyRange);
    }
    let replay_from = first.max(from - TimeDelta::days(i64::from(settings.history_days)));
    let mut detection = Detection::fresh(store.clone(), catalog, settings);
    let mut found: BTreeMap<Uuid, Incident> = BTreeMap::new();
    // Three stages overlap, so the store's reading and writing run beside the engine rather
    // than between its steps: a reader loads the next chunks of rollups, the engine steps the
    // current one, and a writer stores the expectations of the ones before.
    let (chunks, mut chunk_rx) = mpsc::channel(READ_AHEAD_CHUNKS);
    let reader = tokio::spawn(read_chunks(
        store.clone(),
        replay_from,
        to,
        TimeDelta::minutes(REDETECT_CHUNK_MINUTES),
        chunks,
    ));
    // Every expectation of the replayed range is recomputed: the writer clears them once,
    // while the engine starts, then bulk-loads the new ones (an upsert per row cost more
    // than all the stepping).
    let (writes, write_rx) = mpsc::channel(WRITE_BEHIND_BATCHES);
    // The quarters whose expectation the replay writes: each is written at its last minute.
    let recomputed = (
        floor_to(replay_from, QUARTER_SECONDS),
        floor_to(to, QUARTER_SECONDS),
    );
    let writer = tokio::spawn(write_expectations(store.clone(), recomputed, write_rx));
    let mut expectations = Vec::new();
    let mut stepped = Ok(());
    while let Some(chunk) = chunk_rx.recv().await {
        let stepping = Instant::now();
        let (step, stepped_to) = match chunk {
            Ok((start, end, rows)) => (detection.step_rows(start, end, &rows).await, end),
            Err(error) => (Err(error), to),
        };
        summary.engine += stepping.elapsed();
        let mut changes = match step {
            Ok(changes) => changes,
            Err(error) => {
                stepped = Err(error);
                break;
            }
        };
        found.extend(changes.incidents);
        // The days stepped to their end go to the writer, a day's row of each series written
        // once (sent as they come, each row would be read back and rewritten every chunk).
        // Expectations come in quarter order.
        expectations.append(&mut changes.expectations);
        let complete = floor_to(stepped_to, DAY_SECONDS);
        let done = expectations.partition_point(|e| e.quarter < complete);
        if done > 0 {
            let rest = expectations.split_off(done);
            if writes
                .send(std::mem::replace(&mut expectations, rest))
                .await
                .is_err()
            {
                // The writer stopped on an error, which it returns below.
                break;
            }
        }
    }
    drop(chunk_rx);
    if stepped.is_ok() && !expectations.is_empty() {
        let _ = writes.send(expectations).await;
    }
    drop(writes);
    let read = reader.await.map_err(DetectError::Task)?;
    let written = writer.await.map_err(DetectError::Task)?;
    stepped?;
    summary.store_reads = read?;
    summary.store_writes = written?;
    let incidents: Vec<Incident> = found
        .into_values()
        .filter(|i| i.started_at >= from && i.started_at < to)
        .collect();
    // Move the live runner's watermark only forwards: a range in the past leaves it be.
    let last = to - TimeDelta::minutes(1);
    let moves = store
        .checkpoint()
        .await?
        .is_none_or(|c| c.watermark <= last);
    let snapshot = if moves {
        Some(detection.snapshot().map_err(DetectError::Snapshot)?)
    } else {
        None
    };
    let writing = Instant::now();
    store
        .write_detection(&DetectionWrite {
            replace: Some((from, to)),
            incidents: &incidents,
            watermark: moves.then_some(last),
            state: snapshot.as_deref().map(|s| (last, s)),
            expectations: &[],
            prune_expectations_before: None,
            // Rewriting history announces nothing: webhooks come from the live runner only.
            deliveries: &[],
        })
        .await?;
    summary.store_writes += writing.elapsed();
    summary.from = Some(from);
    summary.to = Some(to);
    summary.minutes = (to - replay_from).num_minutes();
    summary.series = detection.series_count();
    summary.incidents = incidents.len();
    summary.open = incidents
        .iter()
        .filter(|i| i.status == Status::Open)
        .count();
    Ok(summary)
}

/// A chunk of rollups for `redetect`: its range and its counts.
type Chunk = (DateTime<Utc>, DateTime<Utc>, MinuteRollups);

/// Reads `[from, to)` chunk by chunk into `chunks`, ahead of the engine, each chunk ending on
/// a multiple of its length (the first may be shorter); stops early when the engine has
/// stopped listening. Answers the time spent reading.
pub(super) async fn read_chunks(
    store: Arc<dyn Store>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    chunk: TimeDelta,
    chunks: mpsc::Sender<Result<Chunk, StoreError>>,
) -> Result<Duration, StoreError> {
    let mut reading = Duration::ZERO;
    let mut start = from;
    while start < to {
        let end = (floor_to(start, chunk.num_seconds()) + chunk).min(to);
        let began = Instant::now();
        let rows = store.minute_counts(start, end).await;
        reading += began.elapsed();
        let failed = rows.is_err();
        if chunks
            .send(rows.map(|rows| (start, end, rows)))
            .await
            .is_err()
            || failed
        {
            break;
        }
        start = end;
    }
    Ok(reading)
}

/// Clears the stored expectations of `range`, then stores each batch of recomputed ones
/// `redetect` sends, one transaction each, until the sender is dropped; the first failure
/// ends it (dropping the receiver tells the sender). Answers the time spent writing.
async fn write_expectations(
    store: Arc<dyn Store>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    mut batches: mpsc::Receiver<Vec<Expectation>>,
) -> Result<Duration, StoreError> {
    let began = Instant::now();
    store.clear_expectations(from, to).await?;
    let mut writing = began.elapsed();
    while let Some(expectations) = batches.recv().await {
        let began = Instant::now();
        store.insert_recomputed_expectations(&expectations).await?;
        writing += began.elapsed();
    }
    Ok(writing)
}
