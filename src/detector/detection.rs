//! [`Detection`]: the engine plus what it takes to turn its events into named, stored
//! incidents, stepped over a range of minute rollups; shared by the live runner
//! ([`super::live`]), `redetect` ([`mod@super::redetect`]) and the rebuild after an upgrade
//! (`rebuild`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{DetectError, CHUNK_MINUTES, QUARTER_SECONDS};
use crate::config::DetectorSettings;
use crate::detect::engine::{SnapshotError, SNAPSHOT_VERSION};
use crate::detect::{Engine, EngineEvent, IncidentEvent, MinuteCounts, PlaceCount, SeriesKey};
use crate::domain::buckets::{minute_of, TimeRange};
use crate::domain::geo::CountryCode;
use crate::domain::incidents::{self, Incident, Names, Scope, Status};
use crate::domain::report::Catalog;
use crate::runtime::webhooks::Outbox;
use crate::store::{DetectionWrite, Expectation, MinuteRollups, Store, StoreError};

/// What the runner announces to the read side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentChange {
    /// "opened", "updated", "resolved" or "reopened".
    pub kind: &'static str,
    pub incident: Incident,
}

/// The engine plus what it takes to turn its events into named, stored incidents.
pub struct Detection {
    pub(super) store: Arc<dyn Store>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) top_cities: u32,
    pub(super) engine: Engine,
    /// The record of each series' open incident.
    pub(super) open: BTreeMap<SeriesKey, Incident>,
    /// The id and first detection of each series' last resolved incident, so a reopening keeps
    /// the minute it was first detected at.
    pub(super) resolved: BTreeMap<SeriesKey, (Uuid, DateTime<Utc>)>,
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
    pub(super) fn announce(&mut self, kind: &'static str, incident: &Incident) {
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
    /// what that changes is queued for `outbox` at `now`). Returns the watermark.
    pub async fn resume(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        settings: &DetectorSettings,
        outbox: &Outbox,
        now: DateTime<Utc>,
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
                        .rebuild(checkpoint.watermark, settings.history_days, outbox, now)
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
    pub(super) fn engine_open_ids(&self) -> Vec<(SeriesKey, Uuid)> {
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

    /// Steps every minute in `[from, to)` over `rollups`, that range's counts (read ahead by
    /// the caller), and names the incidents that changed.
    pub async fn step_rows(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rollups: &MinuteRollups,
    ) -> Result<Changes, StoreError> {
        let mut changes = Changes::default();
        let first = minute_of(from).timestamp();
        let mut minutes: Vec<MinuteCounts<'_>> = (first..to.timestamp())
            .step_by(60)
            .map(|at| MinuteCounts {
                at,
                counts: Vec::new(),
            })
            .collect();
        for row in &rollups.counts {
            let Some(minute) = usize::try_from((row.minute - first).div_euclid(60))
                .ok()
                .and_then(|i| minutes.get_mut(i))
            else {
                continue;
            };
            let place = &rollups.places[row.place as usize];
            minute.counts.push(PlaceCount {
                service: &place.service,
                country: &place.country,
                city: &place.city,
                count: row.count,
            });
        }
        for minute in &minutes {
            let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
            for place in minute.counts.iter().filter(|p| p.city.is_empty()) {
                *totals.entry(place.service).or_default() += place.count;
            }
            let at = DateTime::from_timestamp(minute.at, 0).unwrap_or_default();
            changes.minute_totals.extend(
                totals
                    .into_iter()
                    .map(|(service, count)| (service.to_owned(), at, count)),
            );
        }
        // The whole range at once (on several threads where it is large), then each minute's
        // events named in order; the last minute of each quarter hour brings its expectations.
        let last_of_quarter = |at: i64| (at + 60) % QUARTER_SECONDS == 0;
        let stepped = self.engine.step_minutes(&minutes, last_of_quarter);
        for (minute, stepped) in minutes.iter().zip(stepped) {
            for event in stepped.events {
                self.record(&event, &mut changes).await?;
            }
            if let Some(expectations) = stepped.expectations {
                let quarter = DateTime::from_timestamp(minute.at, 0).unwrap_or_default()
                    - TimeDelta::minutes(14);
                changes
                    .expectations
                    .extend(expectations.into_iter().map(|(key, expected)| Expectation {
                        service: key.service,
                        country: key.country.unwrap_or_default(),
                        city: key.city.unwrap_or_default(),
                        quarter,
                        expected,
                    }));
            }
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
                &SeriesKey {
                    city: None,
                    ..key.clone()
                },
                TimeRange::new(started_at, end),
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
                    .problem_counts(key, TimeRange::new(started_at, end))
                    .await?
                    .into_iter()
                    .map(|p| (p.problem, p.count))
                    .collect::<Vec<_>>(),
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

    pub(super) fn names<'a>(&'a self, key: &'a SeriesKey) -> Names<'a> {
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
