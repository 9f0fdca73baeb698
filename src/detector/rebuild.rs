//! Rebuilding the detector state after an upgrade: when the stored snapshot is of another model version (or unreadable), replay the stored rollups before the watermark through a fresh engine and make the stored incidents agree with it.
//!
//! The replay is `redetect`'s (the rollups of `detector.history_days` before the watermark, read
//! ahead of the engine), but it rewrites no history: only the state it leaves is kept. Incident
//! ids derive from the series and the start, so a series the new engine holds open continues the
//! stored incident with that id, or else the series' stored open one (a changed model may date
//! the start differently): an incident is never stored twice, and one still open at the
//! watermark resolves later as usual.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::redetect::{read_chunks, READ_AHEAD_CHUNKS, REDETECT_CHUNK_MINUTES};
use super::{Changes, DetectError, Detection};
use crate::detect::engine::SNAPSHOT_VERSION;
use crate::detect::SeriesKey;
use crate::domain::incidents::{self, Incident, Status};
use crate::runtime::webhooks::Outbox;
use crate::store::{DetectionWrite, IncidentQuery, NewDelivery, StoreError};

impl Detection {
    /// The stored open incidents, the newest of each series.
    pub(super) async fn stored_open_by_series(
        &self,
    ) -> Result<BTreeMap<SeriesKey, Incident>, StoreError> {
        let mut query = IncidentQuery {
            status: Some(Status::Open),
            limit: 1000,
            ..IncidentQuery::default()
        };
        let mut open = BTreeMap::new();
        loop {
            let page = self.store.incidents(&query).await?;
            let more = page.len() == query.limit as usize;
            query.after = page.last().map(|i| (i.started_at, i.id));
            for incident in page {
                let key = SeriesKey {
                    service: incident.service.clone(),
                    country: incident.country.clone(),
                    city: incident.city.clone(),
                };
                // Pages are newest first.
                open.entry(key).or_insert(incident);
            }
            if !more {
                return Ok(open);
            }
        }
    }

    /// Rebuilds the state a stored snapshot could not restore (an upgrade changed the model):
    /// replays the last `history_days` of rollups up to the watermark through this fresh
    /// engine, as `redetect` does, reconciles the incidents it holds open with the stored ones
    /// ([`Detection::reconcile`]), and stores those changes, their webhook deliveries and a
    /// snapshot of this version at the watermark in one transaction. History is not rewritten:
    /// the replay's other incidents are dropped (`redetect` recomputes them when wanted).
    pub(super) async fn rebuild(
        &mut self,
        watermark: DateTime<Utc>,
        history_days: u32,
        outbox: &Outbox,
        now: DateTime<Utc>,
    ) -> Result<(), DetectError> {
        let until = watermark + TimeDelta::minutes(1);
        let from = self
            .store
            .first_rollup_minute()
            .await?
            .map(|first| first.max(until - TimeDelta::days(i64::from(history_days))))
            .filter(|from| *from < until);
        if let Some(from) = from {
            self.replay(from, until).await?;
        }
        let changes = self.reconcile(watermark).await?;
        let snapshot = self.snapshot().map_err(DetectError::Snapshot)?;
        let deliveries: Vec<NewDelivery> = changes
            .events
            .iter()
            .flat_map(|change| outbox.deliveries(change.kind, &change.incident, now))
            .collect();
        let incidents: Vec<Incident> = changes.incidents.into_values().collect();
        self.store
            .write_detection(&DetectionWrite {
                incidents: &incidents,
                state: Some((watermark, &snapshot)),
                deliveries: &deliveries,
                ..DetectionWrite::default()
            })
            .await?;
        for change in &changes.events {
            tracing::info!(kind = change.kind, id = %change.incident.id, summary = %change.incident.summary, "incident reconciled after the rebuild");
        }
        tracing::info!(
            version = SNAPSHOT_VERSION,
            from = ?from,
            watermark = %watermark,
            minutes_replayed = from.map_or(0, |from| (until - from).num_minutes()),
            series = self.series_count(),
            open = self.open.len(),
            "rebuilt the detector state from the stored rollups"
        );
        Ok(())
    }

    /// Steps `[from, to)` chunk by chunk with the store reading ahead (as `redetect` does),
    /// keeping only the state the steps leave, not their changes.
    async fn replay(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), DetectError> {
        let (chunks, mut chunk_rx) = mpsc::channel(READ_AHEAD_CHUNKS);
        let reader = tokio::spawn(read_chunks(
            self.store.clone(),
            from,
            to,
            TimeDelta::minutes(REDETECT_CHUNK_MINUTES),
            chunks,
        ));
        let mut stepped = Ok(());
        while let Some(chunk) = chunk_rx.recv().await {
            let step = match chunk {
                Ok((start, end, rows)) => self.step_rows(start, end, &rows).await.map(drop),
                Err(error) => Err(error),
            };
            if step.is_err() {
                stepped = step;
                break;
            }
        }
        drop(chunk_rx);
        reader.await.map_err(DetectError::Task)??;
        Ok(stepped?)
    }

    /// After a rebuild's replay, makes the stored incidents agree with the engine at
    /// `watermark`. Each series the engine holds open continues the stored incident it stands
    /// for: the one with its id, else the series' stored open incident (the model may date the
    /// start differently), so no incident is stored twice; one the detector had resolved reopens,
    /// one an admin resolved stays resolved (the store ignores the detector's writes to it), and
    /// one the store does not know opens. A stored open incident no series holds open is
    /// resolved at the watermark rather than left open forever. Returns the changes to store and
    /// announce.
    async fn reconcile(&mut self, watermark: DateTime<Utc>) -> Result<Changes, StoreError> {
        let replayed = std::mem::take(&mut self.open);
        // A reopening from now on finds the first detection in the store.
        self.resolved.clear();
        let mut stored_open = self.stored_open_by_series().await?;
        let mut counterparts = Vec::new();
        for (key, id) in self.engine_open_ids() {
            let stored = match self.store.incident(id).await? {
                Some(stored) => {
                    if stored_open
                        .get(&key)
                        .is_some_and(|open| open.id == stored.id)
                    {
                        stored_open.remove(&key);
                    }
                    Some(stored)
                }
                None => stored_open.remove(&key),
            };
            counterparts.push((key, stored));
        }
        // The replay's ids of the open incidents, and the ids the store knows them by.
        let renamed: BTreeMap<Uuid, Uuid> = counterparts
            .iter()
            .filter_map(|(key, stored)| Some((replayed.get(key)?.id, stored.as_ref()?.id)))
            .collect();
        let mut changes = Changes::default();
        for (key, stored) in counterparts {
            let record = match stored {
                Some(mut stored) => {
                    if stored.status == Status::Resolved && stored.resolved_by.is_none() {
                        stored.status = Status::Open;
                        stored.resolved_at = None;
                        stored.updated_at = watermark;
                        stored.summary = incidents::summary(&stored, &self.names(&key));
                        changes.announce("reopened", &stored);
                    }
                    stored
                }
                None => {
                    let Some(mut new) = replayed.get(&key).cloned() else {
                        continue;
                    };
                    new.parent_id = new
                        .parent_id
                        .map(|id| renamed.get(&id).copied().unwrap_or(id));
                    new.updated_at = watermark;
                    changes.announce("opened", &new);
                    new
                }
            };
            self.open.insert(key, record);
        }
        for (key, mut orphan) in stored_open {
            if orphan.resolved_by.is_some() {
                continue;
            }
            orphan.status = Status::Resolved;
            orphan.resolved_at = Some(watermark);
            orphan.updated_at = watermark;
            orphan.summary = incidents::summary(&orphan, &self.names(&key));
            changes.announce("resolved", &orphan);
        }
        Ok(changes)
    }
}
