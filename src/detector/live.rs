//! The live detector: a [`LiveDetector`] holds the leader's [`Detection`] and watermark, and
//! each [`LiveDetector::tick`] processes the complete minutes after the watermark (one chunk
//! at a time), stores them with their webhook deliveries in one transaction, and announces the
//! changes. It takes the time as an argument; [`super::task`] reads the clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{DetectError, Detection, CHUNK_MINUTES};
use crate::config::DetectorSettings;
use crate::domain::buckets::minute_of;
use crate::domain::incidents::Incident;
use crate::domain::report::Catalog;
use crate::runtime::events::{EventBus, LiveEvent};
use crate::runtime::webhooks::Outbox;
use crate::store::{DetectionWrite, NewDelivery, Store};

/// Minute counts are announced live for minutes this recent (catching up, older ones are not).
const LIVE_COUNT_MINUTES: i64 = 5;

/// The first minute that is not yet complete at `now`: every report of an earlier minute has
/// had `settle` to commit.
pub fn complete_until(now: DateTime<Utc>, settle: Duration) -> DateTime<Utc> {
    minute_of(now - TimeDelta::from_std(settle).unwrap_or_default())
}

/// What a tick left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// More complete minutes wait (catching up): tick again at once.
    Behind,
    /// Every complete minute is processed; the next one settles at this time.
    CaughtUp { next_due: DateTime<Utc> },
}

/// What the live detector works with: where rollups are read and incidents stored, the
/// catalog that names services, its settings, and where changes are announced and queued.
#[derive(Clone)]
pub struct LiveContext {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub settings: DetectorSettings,
    pub events: EventBus,
    pub outbox: Outbox,
}

/// The leader's detector between ticks.
pub struct LiveDetector {
    context: LiveContext,
    detection: Detection,
    /// The last minute processed.
    watermark: Option<DateTime<Utc>>,
    /// The minute of the last snapshot taken.
    snapshot_at: Option<DateTime<Utc>>,
}

impl LiveDetector {
    /// Restores the stored state (see [`Detection::resume`]); `now` dates the webhook
    /// deliveries a rebuild queues.
    pub async fn resume(context: LiveContext, now: DateTime<Utc>) -> Result<Self, DetectError> {
        let (detection, watermark) = Detection::resume(
            context.store.clone(),
            context.catalog.clone(),
            &context.settings,
            &context.outbox,
            now,
        )
        .await?;
        Ok(Self {
            context,
            detection,
            watermark,
            snapshot_at: watermark,
        })
    }

    /// The last minute processed.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// One step of the minute's work at `now`: processes up to an hour of the complete minutes
    /// after the watermark, stores the incidents that changed, their webhook deliveries, the
    /// expectations, the new watermark and (when due) a snapshot in one transaction, then
    /// announces the changes and the recent minute counts.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Tick, DetectError> {
        let LiveContext {
            store,
            catalog,
            settings,
            events,
            outbox,
        } = &self.context;
        let settle = Duration::from_secs(settings.settle_seconds);
        let until = complete_until(now, settle);
        let next_due =
            until + TimeDelta::minutes(1) + TimeDelta::from_std(settle).unwrap_or_default();
        let next = match self.watermark {
            Some(w) => Some(w + TimeDelta::minutes(1)),
            None => store.first_rollup_minute().await?,
        };
        let Some(from) = next.filter(|from| *from < until) else {
            return Ok(Tick::CaughtUp { next_due });
        };
        let to = (from + TimeDelta::minutes(CHUNK_MINUTES)).min(until);
        let changes = self.detection.step_range(from, to).await?;
        let last = to - TimeDelta::minutes(1);
        // A snapshot serializes every series: while catching up over days take one a day of
        // data (bounding the replay after a crash), else when due at the tick's end.
        let snapshot_every = TimeDelta::minutes(i64::from(settings.snapshot_every_minutes));
        let since = |limit: TimeDelta| self.snapshot_at.is_none_or(|s| last - s >= limit);
        let due = since(snapshot_every) && (to == until || since(TimeDelta::days(1)));
        let snapshot = if due {
            Some(self.detection.snapshot().map_err(DetectError::Snapshot)?)
        } else {
            None
        };
        let incidents: Vec<Incident> = changes.incidents.into_values().collect();
        // Queued with the changes and the watermark in one transaction: each change is queued
        // exactly once, however the process stops.
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
            self.snapshot_at = Some(last);
        }
        self.watermark = Some(last);
        for change in changes.events {
            tracing::info!(kind = change.kind, id = %change.incident.id, summary = %change.incident.summary, "incident");
            events
                .publish(LiveEvent::Incident {
                    kind: change.kind.to_owned(),
                    incident: Box::new(change.incident),
                })
                .await;
        }
        for (service, minute, count) in live_counts(catalog, changes.minute_totals, from, to, until)
        {
            events
                .publish(LiveEvent::Counts {
                    service,
                    minute,
                    count,
                })
                .await;
        }
        Ok(if to < until {
            Tick::Behind
        } else {
            Tick::CaughtUp { next_due }
        })
    }
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
