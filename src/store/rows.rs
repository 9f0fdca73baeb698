//! The rows both backends read, and their one conversion each into what the store answers.
//!
//! Postgres returns times as `timestamptz` and SQLite as unix seconds; sqlx decodes both into
//! `DateTime<Utc>`, so one row type serves both backends. (SQLite keeps reports' `received_at`
//! in milliseconds, which is the one time read apart, in `sqlite/reports.rs`.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Checkpoint, CountBucket, Delivery, DeliveryStatus, MinuteRollups, Place, PlaceMinute,
    RegionCount, StoreError,
};
use crate::domain::incidents::{CityCount, Incident, Scope, Status};

/// Builds [`MinuteRollups`] from rollup rows read one by one: each place is named once, however
/// many minutes it has, and a row's names are looked up without copying them.
#[derive(Default)]
pub(super) struct MinuteRollupsBuilder {
    /// The looked-up place's names joined by NULs (no name holds one): reused for every row.
    key: String,
    index: HashMap<String, u32>,
    counts: MinuteRollups,
}

impl MinuteRollupsBuilder {
    pub(super) fn push(
        &mut self,
        minute: i64,
        service: &str,
        country: &str,
        city: &str,
        count: i64,
    ) {
        self.key.clear();
        self.key.push_str(service);
        self.key.push('\0');
        self.key.push_str(country);
        self.key.push('\0');
        self.key.push_str(city);
        let place = match self.index.get(self.key.as_str()) {
            Some(&place) => place,
            None => {
                let place = self.counts.places.len() as u32;
                self.counts.places.push(Place {
                    service: service.to_owned(),
                    country: country.to_owned(),
                    city: city.to_owned(),
                });
                self.index.insert(self.key.clone(), place);
                place
            }
        };
        self.counts.counts.push(PlaceMinute {
            minute,
            place,
            count,
        });
    }

    pub(super) fn finish(self) -> MinuteRollups {
        self.counts
    }
}

/// An `incidents` row: [`super::sql::INCIDENT_COLUMNS`] then [`super::sql::INCIDENT_ADMIN_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct IncidentRow {
    id: Uuid,
    service: String,
    scope: String,
    country: Option<String>,
    city: Option<String>,
    status: String,
    started_at: DateTime<Utc>,
    detected_at: DateTime<Utc>,
    peak_at: DateTime<Utc>,
    peak_count: f64,
    expected_at_peak: f64,
    start_count: f64,
    excess_reports: f64,
    resolved_at: Option<DateTime<Utc>>,
    top_cities: String,
    problems: String,
    parent_id: Option<Uuid>,
    summary: String,
    updated_at: DateTime<Utc>,
    note: Option<String>,
    resolved_by: Option<String>,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;

    fn try_from(row: IncidentRow) -> Result<Incident, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("incident {}: {what}", row.id));
        Ok(Incident {
            scope: Scope::parse(&row.scope).ok_or_else(|| corrupt("scope"))?,
            status: Status::parse(&row.status).ok_or_else(|| corrupt("status"))?,
            top_cities: serde_json::from_str(&row.top_cities).map_err(|_| corrupt("top_cities"))?,
            problems: serde_json::from_str(&row.problems).map_err(|_| corrupt("problems"))?,
            id: row.id,
            service: row.service,
            country: row.country,
            city: row.city,
            started_at: row.started_at,
            detected_at: row.detected_at,
            peak_at: row.peak_at,
            peak_count: row.peak_count,
            expected_at_peak: row.expected_at_peak,
            start_count: row.start_count,
            excess_reports: row.excess_reports,
            resolved_at: row.resolved_at,
            parent_id: row.parent_id,
            summary: row.summary,
            updated_at: row.updated_at,
            note: row.note,
            resolved_by: row.resolved_by,
        })
    }
}

/// The JSON columns of an incident: (top_cities, problems).
pub(super) fn incident_json(incident: &Incident) -> (String, String) {
    // Serializing plain vectors and maps of strings and numbers cannot fail.
    (
        serde_json::to_string(&incident.top_cities).unwrap_or_else(|_| "[]".into()),
        serde_json::to_string(&incident.problems).unwrap_or_else(|_| "{}".into()),
    )
}

/// Incident rows read back, as incidents.
pub(super) fn incidents(rows: Vec<IncidentRow>) -> Result<Vec<Incident>, StoreError> {
    rows.into_iter().map(Incident::try_from).collect()
}

/// A `webhook_deliveries` row: [`super::sql::DELIVERY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    event_id: Uuid,
    endpoint: String,
    event_type: String,
    incident_id: Uuid,
    occurred_at: DateTime<Utc>,
    payload: String,
    status: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            status: DeliveryStatus::parse(&row.status).ok_or_else(|| {
                StoreError::Corrupt(format!("webhook delivery {}: status", row.event_id))
            })?,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            event_id: row.event_id,
            endpoint: row.endpoint,
            event_type: row.event_type,
            incident_id: row.incident_id,
            occurred_at: row.occurred_at,
            payload: row.payload,
            created_at: row.created_at,
            next_attempt_at: row.next_attempt_at,
            last_attempt_at: row.last_attempt_at,
            last_error: row.last_error,
            finished_at: row.finished_at,
        })
    }
}

/// Delivery rows read back, as deliveries.
pub(super) fn deliveries(rows: Vec<DeliveryRow>) -> Result<Vec<Delivery>, StoreError> {
    rows.into_iter().map(Delivery::try_from).collect()
}

/// Claimed delivery rows, as deliveries in the order the deliverer sends them: oldest event
/// first (the claim itself picks the rows by due time, and its result has no order).
pub(super) fn claimed(rows: Vec<DeliveryRow>) -> Result<Vec<Delivery>, StoreError> {
    let mut claimed = deliveries(rows)?;
    claimed.sort_by_key(|d| (d.occurred_at, d.event_id));
    Ok(claimed)
}

/// A count at a time of a counts series: its start in unix seconds (both backends compute it
/// as a number) and its count; a bucket's whole count, or one of the rows to sum into it.
#[derive(sqlx::FromRow)]
pub(super) struct BucketRow {
    bucket: i64,
    count: i64,
}

/// The (start, count) of a row: as the statements return it, or as Postgres' arrays pair them.
impl From<BucketRow> for (i64, i64) {
    fn from(row: BucketRow) -> (i64, i64) {
        (row.bucket, row.count)
    }
}

/// `rows` with each run of adjacent rows of one key (as `same_key` tells) made one row, their
/// counts summed: rows of the `rollups` view in key order (a key has a row in each of its
/// tables when a report for a minute came after the minute was settled), or any rows sorted
/// by their key.
pub(super) fn sum_adjacent<T>(
    rows: impl IntoIterator<Item = T>,
    same_key: impl Fn(&T, &T) -> bool,
    count: impl Fn(&mut T) -> &mut i64,
) -> Vec<T> {
    let rows = rows.into_iter();
    let mut summed: Vec<T> = Vec::with_capacity(rows.size_hint().0);
    for mut row in rows {
        match summed.last_mut() {
            Some(last) if same_key(last, &row) => *count(last) += *count(&mut row),
            _ => summed.push(row),
        }
    }
    summed
}

/// `rows`, each (start in unix seconds, count), summed into buckets of `bucket_seconds`
/// aligned to the epoch, in time order, each bucket with rows once.
pub(super) fn buckets<R: Into<(i64, i64)>>(
    rows: impl IntoIterator<Item = R>,
    bucket_seconds: i64,
) -> Vec<CountBucket> {
    let width = bucket_seconds.max(1);
    let mut rows: Vec<(i64, i64)> = rows
        .into_iter()
        .map(|row| {
            let (start, count) = row.into();
            (start - start.rem_euclid(width), count)
        })
        .collect();
    rows.sort_unstable_by_key(|&(start, _)| start);
    sum_adjacent(
        rows.into_iter().map(|(start, count)| CountBucket {
            start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
            count,
        }),
        |a, b| a.start == b.start,
        |b| &mut b.count,
    )
}

/// A top city is a city's region count.
impl From<RegionCount> for CityCount {
    fn from(region: RegionCount) -> CityCount {
        CityCount {
            country: region.country,
            city: region.city,
            count: region.count,
        }
    }
}

/// Rows converted one by one into what the store answers.
pub(super) fn into_all<R, T: From<R>>(rows: Vec<R>) -> Vec<T> {
    rows.into_iter().map(T::from).collect()
}

/// The `detector_state` row.
#[derive(sqlx::FromRow)]
pub(super) struct CheckpointRow {
    watermark: DateTime<Utc>,
    state_at: Option<DateTime<Utc>>,
    state: Option<String>,
}

impl From<CheckpointRow> for Checkpoint {
    fn from(row: CheckpointRow) -> Checkpoint {
        Checkpoint {
            watermark: row.watermark,
            state: row.state_at.zip(row.state),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_summed_into_epoch_aligned_buckets_in_time_order() {
        // 1_741_600_800 is 2025-03-10T10:00:00Z: two quarter rows and a live minute row in the
        // first hour, given out of order, and a minute of the next hour.
        let at = |minutes: i64| 1_741_600_800 + minutes * 60;
        let rows = [(at(61), 4), (at(15), 7), (at(0), 3), (at(16), 2)];
        let got: Vec<(i64, i64)> = buckets(rows, 3600)
            .into_iter()
            .map(|b| (b.start.timestamp(), b.count))
            .collect();
        assert_eq!(got, [(at(0), 12), (at(60), 4)]);
        let got: Vec<(i64, i64)> = buckets(rows, 900)
            .into_iter()
            .map(|b| (b.start.timestamp(), b.count))
            .collect();
        assert_eq!(got, [(at(0), 3), (at(15), 9), (at(60), 4)]);
    }

    #[test]
    fn a_place_is_named_once_and_its_counts_point_at_it() {
        let mut builder = MinuteRollupsBuilder::default();
        builder.push(60, "x", "PK", "Lahore", 3);
        builder.push(60, "x", "PK", "", 5);
        builder.push(120, "x", "PK", "Lahore", 2);
        // Names that join to the same text without a separator are other places.
        builder.push(120, "x", "PKL", "ahore", 1);
        let got = builder.finish();
        let names: Vec<(&str, &str, &str)> = got
            .places
            .iter()
            .map(|p| (p.service.as_str(), p.country.as_str(), p.city.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("x", "PK", "Lahore"),
                ("x", "PK", ""),
                ("x", "PKL", "ahore")
            ]
        );
        let counts: Vec<(i64, u32, i64)> = got
            .counts
            .iter()
            .map(|c| (c.minute, c.place, c.count))
            .collect();
        assert_eq!(counts, [(60, 0, 3), (60, 1, 5), (120, 0, 2), (120, 2, 1)]);
    }
}
