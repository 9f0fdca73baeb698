//! The detector runner: reads the minute rollups after its watermark, steps the engine, names and stores incidents, and announces their changes.
//!
//! One code path serves the live runner (`serve`, every minute, as the one leader among the
//! replicas) and `outagewatch redetect` (a range, from scratch): [`Detection::step_range`].
//! Incident ids derive from the series and the start, so re-running over the same rollups
//! writes the same records. The live runner keeps a watermark (the last minute processed) and
//! a snapshot of the engine in the store; on start it restores the snapshot and replays the
//! minutes after it, so a restart changes no outcome. A snapshot of another model version
//! (an upgrade) is rebuilt instead, from the rollups of `history_days` before the watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::DetectorSettings;
use crate::detect::engine::{SnapshotError, SNAPSHOT_VERSION};
use crate::detect::{Engine, EngineEvent, IncidentEvent, PlaceCount, SeriesKey};
use crate::events::{EventBus, LiveEvent};
use crate::geo::CountryCode;
use crate::incidents::{self, Incident, Names, Scope, Status};
use crate::report::Catalog;
use crate::store::{
    floor_to, minute_of, DetectionWrite, Expectation, Leadership, MinuteCount, NewDelivery, Store,
    StoreError,
};
use crate::webhooks::Outbox;

mod rebuild;

/// Minute counts are announced live for minutes this recent (catching up, older ones are not).
const LIVE_COUNT_MINUTES: i64 = 5;

/// Expectations are stored per quarter hour: the detector's window.
const QUARTER_SECONDS: i64 = 900;

/// Expectation rows `redetect` collects before writing them in one transaction: enough that
/// commits are rare, few enough that the writer's backlog at the end is short.
const EXPECTATIONS_PER_WRITE: usize = 25_000;

/// Minutes of rollups read per query (and, live, written per transaction while catching up).
const CHUNK_MINUTES: i64 = 60;

/// Minutes of rollups `redetect` reads per query: larger, since it writes no incidents per chunk.
const REDETECT_CHUNK_MINUTES: i64 = 360;

/// Chunks of rollups `redetect` reads ahead of the engine.
const READ_AHEAD_CHUNKS: usize = 2;

/// Batches of expectations `redetect` lets wait for the writer before the engine waits too.
const WRITE_BEHIND_BATCHES: usize = 2;

/// What the runner announces to the read side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentChange {
    /// "opened", "updated", "resolved" or "reopened".
    pub kind: &'static str,
    pub incident: Incident,
}

/// Why detection stopped.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine's state could not be serialized into a snapshot.
    #[error("the detector state cannot be serialized: {0}")]
    Snapshot(serde_json::Error),
    #[error("another process holds the detector lock (a running `serve`); stop it first")]
    NotLeader,
    #[error("--from must be before --to")]
    EmptyRange,
    /// A reader or writer task of `redetect` panicked.
    #[error("a redetect task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// The engine plus what it takes to turn its events into named, stored incidents.
pub struct Detection {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    top_cities: u32,
    engine: Engine,
    /// The record of each series' open incident.
    open: BTreeMap<SeriesKey, Incident>,
    /// The id and first detection of each series' last resolved incident, so a reopening keeps
    /// the minute it was first detected at.
    resolved: BTreeMap<SeriesKey, (Uuid, DateTime<Utc>)>,
}

/// The changes of one stepped range: records to store and events to announce.
#[derive(Default)]
pub struct Changes {
    pub incidents: BTreeMap<Uuid, Incident>,
    pub events: Vec<IncidentChange>,
    /// Every series' expectation for each quarter hour completed in the range.
    pub expectations: Vec<Expectation>,
    /// Each service's worldwide count of each minute stepped (services with reports only).
    pub minute_totals: Vec<(String, DateTime<Utc>, i64)>,
}

impl Changes {
    /// Records `incident` as changed by `kind`: to store, and to announce.
    fn announce(&mut self, kind: &'static str, incident: &Incident) {
        self.incidents.insert(incident.id, incident.clone());
        self.events.push(IncidentChange {
            kind,
            incident: incident.clone(),
        });
    }
}

impl Detection {
    /// A detector that has seen nothing yet.
    pub fn fresh(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        settings: &DetectorSettings,
    ) -> Self {
        Self {
            store,
            catalog,
            top_cities: settings.top_cities,
            engine: Engine::new(&settings.model),
            open: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }

    /// The last minute stepped, if any.
    pub fn last_minute(&self) -> Option<DateTime<Utc>> {
        self.engine
            .last_minute()
            .and_then(|at| DateTime::from_timestamp(at, 0))
    }

    /// How many series the engine tracks.
    pub fn series_count(&self) -> usize {
        self.engine.series_count()
    }

    /// Every series' expected window count at the last minute stepped, in key order.
    pub fn expectations(&self) -> impl Iterator<Item = (&SeriesKey, f64)> {
        self.engine.expectations()
    }

    /// Restores the state the live runner stored, replaying (and re-storing, idempotently) the
    /// minutes between its snapshot and its watermark. A snapshot of another version, or one
    /// that cannot be read, is rebuilt from the stored rollups instead (see `rebuild.rs`;
    /// what that changes is queued for `outbox`). Returns the watermark.
    pub async fn resume(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        settings: &DetectorSettings,
        outbox: &Outbox,
    ) -> Result<(Self, Option<DateTime<Utc>>), DetectError> {
        let mut detection = Self::fresh(store.clone(), catalog, settings);
        let Some(checkpoint) = store.checkpoint().await? else {
            return Ok((detection, None));
        };
        let replay_from = match &checkpoint.state {
            Some((state_at, state)) => match Engine::restore(&settings.model, state) {
                Ok(engine) => {
                    detection.engine = engine;
                    detection.reload_open().await?;
                    *state_at + TimeDelta::minutes(1)
                }
                Err(error) => {
                    let found = match &error {
                        SnapshotError::Version { found } => found.to_string(),
                        SnapshotError::Unreadable(_) => "unreadable".to_owned(),
                    };
                    tracing::warn!(
                        found_version = %found,
                        expected_version = SNAPSHOT_VERSION,
                        %error,
                        "the stored detector snapshot cannot be restored; rebuilding the detector state from the stored rollups"
                    );
                    detection
                        .rebuild(checkpoint.watermark, settings.history_days, outbox)
                        .await?;
                    return Ok((detection, Some(checkpoint.watermark)));
                }
            },
            None => match store.first_rollup_minute().await? {
                Some(first) => first,
                None => return Ok((detection, Some(checkpoint.watermark))),
            },
        };
        let until = checkpoint.watermark + TimeDelta::minutes(1);
        let mut from = replay_from;
        while from < until {
            let to = (from + TimeDelta::minutes(CHUNK_MINUTES)).min(until);
            let changes = detection.step_range(from, to).await?;
            let incidents: Vec<Incident> = changes.incidents.into_values().collect();
            store
                .write_detection(&DetectionWrite {
                    incidents: &incidents,
                    expectations: &changes.expectations,
                    ..DetectionWrite::default()
                })
                .await?;
            from = to;
        }
        Ok((detection, Some(checkpoint.watermark)))
    }

    /// Rebuilds the open-incident records of a restored engine from the store: each open
    /// series' incident by its id, else (a series that continues a stored incident it dates
    /// differently, since a rebuild) the series' stored open incident.
    async fn reload_open(&mut self) -> Result<(), StoreError> {
        self.open.clear();
        let mut stored_open = None;
        for (key, id) in self.engine_open_ids() {
            let record = match self.store.incident(id).await? {
                Some(record) => Some(record),
                None => {
                    if stored_open.is_none() {
                        stored_open = Some(self.stored_open_by_series().await?);
                    }
                    stored_open.as_mut().and_then(|open| open.remove(&key))
                }
            };
            if let Some(record) = record {
                self.open.insert(key, record);
            }
        }
        Ok(())
    }

    /// The id of each series' open incident in the engine, in key order.
    fn engine_open_ids(&self) -> Vec<(SeriesKey, Uuid)> {
        self.engine
            .open_series()
            .filter_map(|key| {
                let started_at = self.engine.open_incident(key)?.started_at;
                let started_at = DateTime::from_timestamp(started_at, 0).unwrap_or_default();
                let id = incidents::incident_id(
                    &key.service,
                    key.country.as_deref(),
                    key.city.as_deref(),
                    started_at,
                );
                Some((key.clone(), id))
            })
            .collect()
    }

    /// Steps every minute in `[from, to)` and names the incidents that changed.
    pub async fn step_range(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Changes, StoreError> {
        let rows = self.store.minute_counts(from, to).await?;
        self.step_rows(from, to, &rows).await
    }

    /// Steps every minute in `[from, to)` over `rows`, that range's rollups in minute order
    /// (read ahead by the caller), and names the incidents that changed.
    pub async fn step_rows(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rows: &[MinuteCount],
    ) -> Result<Changes, StoreError> {
        let mut changes = Changes::default();
        let mut rows = rows;
        let mut minute = minute_of(from);
        while minute < to {
            let split = rows
                .iter()
                .position(|r| r.minute != minute)
                .unwrap_or(rows.len());
            let (now, rest) = rows.split_at(split);
            rows = rest;
            let counts: Vec<PlaceCount<'_>> = now.iter().map(place_count).collect();
            let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
            for place in counts.iter().filter(|p| p.city.is_empty()) {
                *totals.entry(place.service).or_default() += place.count;
            }
            changes.minute_totals.extend(
                totals
                    .into_iter()
                    .map(|(service, count)| (service.to_owned(), minute, count)),
            );
            let events = self.engine.step(minute.timestamp(), &counts);
            for event in events {
                self.record(&event, &mut changes).await?;
            }
            if (minute.timestamp() + 60) % QUARTER_SECONDS == 0 {
                let quarter = minute - TimeDelta::minutes(14);
                changes
                    .expectations
                    .extend(
                        self.engine
                            .expectations()
                            .map(|(key, expected)| Expectation {
                                service: key.service.clone(),
                                country: key.country.clone().unwrap_or_default(),
                                city: key.city.clone().unwrap_or_default(),
                                quarter,
                                expected,
                            }),
                    );
            }
            minute += TimeDelta::minutes(1);
        }
        Ok(changes)
    }

    /// Turns one engine event into the incident's new record.
    async fn record(
        &mut self,
        event: &EngineEvent,
        changes: &mut Changes,
    ) -> Result<(), StoreError> {
        let key = &event.key;
        let summary = event.summary();
        let at = DateTime::from_timestamp(event.at, 0).unwrap_or_default();
        let time = |seconds: i64| DateTime::from_timestamp(seconds, 0).unwrap_or_default();
        // While open, an incident keeps the id and start of its record: they are the engine's,
        // except where a rebuild made a series continue a stored incident it dates differently.
        let current = match event.event {
            IncidentEvent::Updated(_) | IncidentEvent::Resolved(_) => self
                .open
                .get(key)
                .map(|record| (record.id, record.started_at)),
            IncidentEvent::Opened(_) | IncidentEvent::Reopened(_) => None,
        };
        let (id, started_at) = current.unwrap_or_else(|| {
            let started_at = time(summary.started_at);
            let id = incidents::incident_id(
                &key.service,
                key.country.as_deref(),
                key.city.as_deref(),
                started_at,
            );
            (id, started_at)
        });
        let (kind, status) = match event.event {
            IncidentEvent::Opened(_) => ("opened", Status::Open),
            IncidentEvent::Updated(_) => ("updated", Status::Open),
            IncidentEvent::Reopened(_) => ("reopened", Status::Open),
            IncidentEvent::Resolved(_) => ("resolved", Status::Resolved),
        };
        let resolved_at = summary.resolved_at.map(time);
        let end = resolved_at.unwrap_or(at + TimeDelta::minutes(1));
        let scope = match (&key.country, &key.city) {
            (None, _) => Scope::Global,
            (Some(_), None) => Scope::Country,
            (Some(_), Some(_)) => Scope::City,
        };
        let mut top_cities = self
            .store
            .top_cities(
                &key.service,
                key.country.as_deref(),
                started_at,
                end,
                if scope == Scope::City {
                    u32::MAX
                } else {
                    self.top_cities
                },
            )
            .await?;
        if let Some(city) = &key.city {
            top_cities.retain(|c| &c.city == city);
        }
        // The problem mix reads raw reports, so it is computed when an incident opens,
        // reopens and resolves; a peak update keeps the last mix.
        let previous = self.open.get(key).filter(|_| kind == "updated");
        let problems = match previous {
            Some(record) => record.problems.clone(),
            None => incidents::problem_shares(
                &self
                    .store
                    .problem_counts(
                        &key.service,
                        key.country.as_deref(),
                        key.city.as_deref(),
                        started_at,
                        end,
                    )
                    .await?,
            ),
        };
        let detected_at = match event.event {
            IncidentEvent::Opened(_) => at,
            _ => self.first_detected(key, id, at).await?,
        };
        let mut incident = Incident {
            id,
            service: key.service.clone(),
            scope,
            country: key.country.clone(),
            city: key.city.clone(),
            status,
            started_at,
            detected_at,
            peak_at: time(summary.peak_at),
            peak_count: summary.peak_count,
            expected_at_peak: summary.expected_at_peak,
            start_count: event.start_count,
            excess_reports: summary.excess_reports,
            resolved_at,
            top_cities,
            problems,
            // Once linked, an incident stays linked (its parent may resolve first).
            parent_id: self
                .open
                .get(key)
                .and_then(|i| i.parent_id)
                .or_else(|| self.parent_of(key)),
            summary: String::new(),
            updated_at: at,
            note: None,
            resolved_by: None,
        };
        incident.summary = incidents::summary(&incident, &self.names(key));
        if status == Status::Open {
            self.open.insert(key.clone(), incident.clone());
            self.resolved.remove(key);
            if scope != Scope::City && kind != "updated" {
                self.adopt_orphans(key, incident.id, at, changes);
            }
        } else {
            self.open.remove(key);
            self.resolved
                .insert(key.clone(), (incident.id, incident.detected_at));
        }
        changes.incidents.insert(incident.id, incident.clone());
        changes.events.push(IncidentChange { kind, incident });
        Ok(())
    }

    /// When the incident `id` of series `key` was first detected: from its open record, from
    /// the series' last resolved incident (a reopening), or from the store (the first change
    /// after a restart); `at` for one none of them knows.
    async fn first_detected(
        &self,
        key: &SeriesKey,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        if let Some(record) = self.open.get(key).filter(|r| r.id == id) {
            return Ok(record.detected_at);
        }
        if let Some((_, detected_at)) = self.resolved.get(key).filter(|(i, _)| *i == id) {
            return Ok(*detected_at);
        }
        Ok(self.store.incident(id).await?.map_or(at, |r| r.detected_at))
    }

    /// The open incident this series' incident belongs to: its country's (for a city) or else
    /// its service's global one.
    fn parent_of(&self, key: &SeriesKey) -> Option<Uuid> {
        let parent = key.parent()?;
        if let Some(incident) = self.open.get(&parent) {
            return Some(incident.id);
        }
        let grandparent = parent.parent()?;
        self.open.get(&grandparent).map(|i| i.id)
    }

    /// A parent that opens after its children adopts them: a global incident the open country
    /// (and city) incidents of its service without a parent, a country incident the open
    /// incidents of its cities that had none or the global one.
    fn adopt_orphans(
        &mut self,
        parent: &SeriesKey,
        parent_id: Uuid,
        at: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let global_id = self
            .open
            .get(&SeriesKey::global(&parent.service))
            .map(|i| i.id);
        for (key, incident) in self.open.iter_mut() {
            if key.service != parent.service || key == parent {
                continue;
            }
            let adopt = match &parent.country {
                None => key.country.is_some() && incident.parent_id.is_none(),
                Some(country) => {
                    key.country.as_ref() == Some(country)
                        && key.city.is_some()
                        && (incident.parent_id.is_none() || incident.parent_id == global_id)
                }
            };
            if adopt {
                incident.parent_id = Some(parent_id);
                incident.updated_at = at;
                changes.incidents.insert(incident.id, incident.clone());
            }
        }
    }

    fn names<'a>(&'a self, key: &'a SeriesKey) -> Names<'a> {
        let service = self
            .catalog
            .services()
            .iter()
            .find(|s| s.slug.as_str() == key.service)
            .map_or(key.service.as_str(), |s| s.name.as_str());
        let country = key.country.as_deref().map(|code| {
            CountryCode::parse(code)
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|_| code.to_owned())
        });
        let place = match (country, &key.city) {
            (Some(country), Some(city)) => Some(format!("{city}, {country}")),
            (Some(country), None) => Some(country),
            (None, _) => None,
        };
        Names { service, place }
    }

    /// The engine's state, to store as a snapshot.
    pub fn snapshot(&self) -> Result<String, serde_json::Error> {
        self.engine.snapshot()
    }
}

fn place_count(row: &MinuteCount) -> PlaceCount<'_> {
    PlaceCount {
        service: &row.service,
        country: &row.country,
        city: &row.city,
        count: row.count,
    }
}

/// The first minute that is not yet complete at `now`: every report of an earlier minute has
/// had `settle` to commit.
pub fn complete_until(now: DateTime<Utc>, settle: Duration) -> DateTime<Utc> {
    minute_of(now - TimeDelta::from_std(settle).unwrap_or_default())
}

/// Once a day (when `[from, to)` crosses midnight UTC), the time before which expectations
/// are deleted; None on other chunks or when they are kept forever.
fn prune_before(
    settings: &DetectorSettings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let days = i64::from(settings.expectations_days);
    let crosses_midnight = from.date_naive() != (to - TimeDelta::minutes(1)).date_naive();
    (days > 0 && crosses_midnight).then(|| to - TimeDelta::days(days))
}

/// What `redetect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedetectSummary {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub minutes: i64,
    pub series: usize,
    pub incidents: usize,
    pub open: usize,
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
        let step = match chunk {
            Ok((start, end, rows)) => detection.step_rows(start, end, &rows).await,
            Err(error) => Err(error),
        };
        let mut changes = match step {
            Ok(changes) => changes,
            Err(error) => {
                stepped = Err(error);
                break;
            }
        };
        found.extend(changes.incidents);
        // Expectations go in large transactions: one per chunk would mean a commit (and an
        // fsync) per few hours replayed.
        expectations.append(&mut changes.expectations);
        if expectations.len() >= EXPECTATIONS_PER_WRITE
            && writes
                .send(std::mem::take(&mut expectations))
                .await
                .is_err()
        {
            // The writer stopped on an error, which it returns below.
            break;
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
    read?;
    written?;
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

/// A chunk of rollups for `redetect`: its range and its rows in minute order.
type Chunk = (DateTime<Utc>, DateTime<Utc>, Vec<MinuteCount>);

/// Reads `[from, to)` chunk by chunk into `chunks`, ahead of the engine; stops early when the
/// engine has stopped listening.
async fn read_chunks(
    store: Arc<dyn Store>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    chunk: TimeDelta,
    chunks: mpsc::Sender<Result<Chunk, StoreError>>,
) -> Result<(), StoreError> {
    let mut start = from;
    while start < to {
        let end = (start + chunk).min(to);
        let rows = store.minute_counts(start, end).await;
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
    Ok(())
}

/// Clears the stored expectations of `range`, then stores each batch of recomputed ones
/// `redetect` sends, one transaction each, until the sender is dropped; the first failure
/// ends it (dropping the receiver tells the sender).
async fn write_expectations(
    store: Arc<dyn Store>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    mut batches: mpsc::Receiver<Vec<Expectation>>,
) -> Result<(), StoreError> {
    store.clear_expectations(from, to).await?;
    while let Some(expectations) = batches.recv().await {
        store.insert_recomputed_expectations(&expectations).await?;
    }
    Ok(())
}

/// Runs the live detector until `shutdown` turns true: become the leader (retrying while
/// another replica is), resume from the stored state, then each minute process every complete
/// minute after the watermark, announce the changes on `events` and queue them for `outbox`'s
/// webhooks.
pub async fn run(
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    settings: DetectorSettings,
    events: EventBus,
    outbox: Outbox,
    mut shutdown: watch::Receiver<bool>,
) {
    let retry = Duration::from_secs(settings.leader_retry_seconds);
    while !*shutdown.borrow() {
        match lead(&store, &catalog, &settings, &events, &outbox, &mut shutdown).await {
            Ok(()) => {}
            Err(DetectError::NotLeader) => {
                tracing::debug!("another replica runs the detector; retrying");
            }
            Err(error) => {
                tracing::warn!(%error, "detector stopped; restarting from the stored state")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

/// One term as leader: returns when leadership is lost, on a store error, or at shutdown.
async fn lead(
    store: &Arc<dyn Store>,
    catalog: &Arc<Catalog>,
    settings: &DetectorSettings,
    events: &EventBus,
    outbox: &Outbox,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DetectError> {
    let Some(mut leadership) = store.try_lead_detector().await? else {
        return Err(DetectError::NotLeader);
    };
    tracing::info!("this process now runs the detector");
    let term = serve_term(
        store,
        catalog,
        settings,
        events,
        outbox,
        shutdown,
        leadership.as_mut(),
    )
    .await;
    // Let a standby take over at once rather than when the connection times out.
    leadership.release().await;
    term
}

/// The minute counts to announce for the processed minutes `from..to`: only recent ones (a
/// catch-up over days is history), and for every catalog service (and any other that had
/// reports) each minute, a quiet minute as 0, so a client following the stream sees every
/// minute the detector processed.
fn live_counts(
    catalog: &Catalog,
    totals: Vec<(String, DateTime<Utc>, i64)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>, i64)> {
    let recent = (until - TimeDelta::minutes(LIVE_COUNT_MINUTES)).max(from);
    let mut counts: BTreeMap<(DateTime<Utc>, String), i64> = BTreeMap::new();
    let mut minute = recent;
    while minute < to {
        for service in catalog.services() {
            counts.insert((minute, service.slug.as_str().to_owned()), 0);
        }
        minute += TimeDelta::minutes(1);
    }
    for (service, minute, count) in totals {
        if minute >= recent && minute < to {
            *counts.entry((minute, service)).or_default() += count;
        }
    }
    counts
        .into_iter()
        .map(|((minute, service), count)| (service, minute, count))
        .collect()
}

/// The leader's work until shutdown, a lost lock or a store error.
async fn serve_term(
    store: &Arc<dyn Store>,
    catalog: &Arc<Catalog>,
    settings: &DetectorSettings,
    events: &EventBus,
    outbox: &Outbox,
    shutdown: &mut watch::Receiver<bool>,
    leadership: &mut dyn Leadership,
) -> Result<(), DetectError> {
    // A rebuild can replay weeks of rollups: shutdown does not wait for it. Stopping it midway
    // loses nothing (a rebuild stores everything in one transaction at its end, a replay each
    // chunk idempotently), and the next start does it again.
    let (mut detection, mut watermark) = tokio::select! {
        resumed = Detection::resume(store.clone(), catalog.clone(), settings, outbox) => resumed?,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    let settle = Duration::from_secs(settings.settle_seconds);
    let snapshot_every = TimeDelta::minutes(i64::from(settings.snapshot_every_minutes));
    let mut snapshot_at = watermark;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if !leadership.still_held().await {
            tracing::warn!("lost the detector lock");
            return Ok(());
        }
        let until = complete_until(crate::clock::now(), settle);
        let next = match watermark {
            Some(w) => Some(w + TimeDelta::minutes(1)),
            None => store.first_rollup_minute().await?,
        };
        if let Some(mut from) = next {
            while from < until && !*shutdown.borrow() {
                let to = (from + TimeDelta::minutes(CHUNK_MINUTES)).min(until);
                let changes = detection.step_range(from, to).await?;
                let last = to - TimeDelta::minutes(1);
                // A snapshot serializes every series: while catching up over days take one a
                // day of data (bounding the replay after a crash), else when due at the tick's end.
                let since = |limit: TimeDelta| snapshot_at.is_none_or(|s| last - s >= limit);
                let due = since(snapshot_every) && (to == until || since(TimeDelta::days(1)));
                let snapshot = if due {
                    Some(detection.snapshot().map_err(DetectError::Snapshot)?)
                } else {
                    None
                };
                let incidents: Vec<Incident> = changes.incidents.into_values().collect();
                // Queued with the changes and the watermark in one transaction: each change is
                // queued exactly once, however the process stops.
                let now = crate::clock::now();
                let deliveries: Vec<NewDelivery> = changes
                    .events
                    .iter()
                    .flat_map(|change| outbox.deliveries(change.kind, &change.incident, now))
                    .collect();
                store
                    .write_detection(&DetectionWrite {
                        replace: None,
                        incidents: &incidents,
                        watermark: Some(last),
                        state: snapshot.as_deref().map(|s| (last, s)),
                        expectations: &changes.expectations,
                        prune_expectations_before: prune_before(settings, from, to),
                        deliveries: &deliveries,
                    })
                    .await?;
                if snapshot.is_some() {
                    snapshot_at = Some(last);
                }
                watermark = Some(last);
                for change in changes.events {
                    tracing::info!(kind = change.kind, id = %change.incident.id, summary = %change.incident.summary, "incident");
                    events
                        .publish(LiveEvent::Incident {
                            kind: change.kind.to_owned(),
                            incident: Box::new(change.incident),
                        })
                        .await;
                }
                for (service, minute, count) in
                    live_counts(catalog, changes.minute_totals, from, to, until)
                {
                    events
                        .publish(LiveEvent::Counts {
                            service,
                            minute,
                            count,
                        })
                        .await;
                }
                from = to;
            }
        }
        // Wake when the next minute has settled.
        let now = crate::clock::now();
        let next_due = complete_until(now, settle)
            + TimeDelta::minutes(1)
            + TimeDelta::from_std(settle).unwrap_or_default();
        let wait = (next_due - now).to_std().unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("valid time")
    }

    #[test]
    fn recent_minutes_are_announced_for_every_service_a_quiet_one_as_zero() {
        let catalog = Catalog::new([("x", "X"), ("youtube", "YouTube")]);
        let totals = vec![
            ("x".to_owned(), at("2025-03-10T09:50:00Z"), 7),
            ("x".to_owned(), at("2025-03-10T09:58:00Z"), 3),
            ("bluesky".to_owned(), at("2025-03-10T09:59:00Z"), 2),
        ];
        let counts = live_counts(
            &catalog,
            totals,
            at("2025-03-10T09:40:00Z"),
            at("2025-03-10T10:00:00Z"),
            at("2025-03-10T10:00:00Z"),
        );
        let minute = |m: &str| at(&format!("2025-03-10T09:{m}:00Z"));
        let row = |service: &str, m: &str, count: i64| (service.to_owned(), minute(m), count);
        // The last five minutes only (09:55-09:59); 09:50 is history.
        assert_eq!(
            counts,
            vec![
                row("x", "55", 0),
                row("youtube", "55", 0),
                row("x", "56", 0),
                row("youtube", "56", 0),
                row("x", "57", 0),
                row("youtube", "57", 0),
                row("x", "58", 3),
                row("youtube", "58", 0),
                row("bluesky", "59", 2),
                row("x", "59", 0),
                row("youtube", "59", 0),
            ]
        );
    }

    #[test]
    fn expectations_are_pruned_once_a_day_unless_kept_forever() {
        let mut settings = Settings::from_toml(&[]).expect("defaults load").detector;
        assert_eq!(settings.expectations_days, 90);
        let (from, to) = (at("2025-03-10T23:30:00Z"), at("2025-03-11T00:30:00Z"));
        assert_eq!(
            prune_before(&settings, from, to),
            Some(at("2024-12-11T00:30:00Z"))
        );
        // A chunk within one day, or one ending exactly at midnight, prunes nothing.
        assert_eq!(
            prune_before(
                &settings,
                at("2025-03-10T10:00:00Z"),
                at("2025-03-10T11:00:00Z")
            ),
            None
        );
        assert_eq!(
            prune_before(
                &settings,
                at("2025-03-10T23:00:00Z"),
                at("2025-03-11T00:00:00Z")
            ),
            None
        );
        settings.expectations_days = 0;
        assert_eq!(prune_before(&settings, from, to), None);
    }
}
