//! `regions`: a service's countries, or cities, over a recent window, ranked by counted reports,
//! each with its expectation, its ratio to it and its status.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::ReadError;
use crate::domain::buckets::{floor_to, TimeRange, QUARTER_SECONDS};
use crate::domain::geo::CountryCode;
use crate::store::ReadStore;

/// A region is `elevated` at this ratio to its expectation (and [`ELEVATED_MIN_COUNT`]
/// reports) while no incident is open for it.
pub const ELEVATED_RATIO: f64 = 1.5;
pub const ELEVATED_MIN_COUNT: i64 = 10;

/// What a regions query ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Country,
    City,
}

/// A region's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionStatus {
    /// As expected.
    Normal,
    /// At least [`ELEVATED_RATIO`] times its expectation and [`ELEVATED_MIN_COUNT`] reports.
    Elevated,
    /// An incident of the region is open.
    Incident,
}

impl RegionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionStatus::Normal => "normal",
            RegionStatus::Elevated => "elevated",
            RegionStatus::Incident => "incident",
        }
    }

    /// The status of a region with `count` reports, `ratio` to its expectation, and an open
    /// incident or not.
    pub fn of(count: i64, ratio: Option<f64>, incident: bool) -> RegionStatus {
        if incident {
            RegionStatus::Incident
        } else if count >= ELEVATED_MIN_COUNT && ratio.is_some_and(|r| r >= ELEVATED_RATIO) {
            RegionStatus::Elevated
        } else {
            RegionStatus::Normal
        }
    }
}

/// The regions of a service (within `country`, if given) over the `window` before now.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionsQuery {
    pub service: String,
    pub country: Option<String>,
    pub level: Level,
    pub window: TimeDelta,
}

/// One region as read.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionRead {
    pub country: String,
    /// None for a country.
    pub city: Option<String>,
    /// The country's English name, or the city's canonical name.
    pub name: String,
    pub count: i64,
    /// The detector's expectation for the window (quarters prorated), rounded to 0.01.
    pub expected: Option<f64>,
    /// `count / expected`, rounded to 0.01; None without a positive expectation.
    pub ratio: Option<f64>,
    pub status: RegionStatus,
    /// The open incident of the region, if any.
    pub incident_id: Option<Uuid>,
}

/// Every region with reports or an open incident, most reports first (ties by country, then
/// city), over the window ending at `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionsRead {
    pub range: TimeRange,
    pub regions: Vec<RegionRead>,
}

/// A region key: (country, city or "" for the country itself).
type RegionKey = (String, String);

/// Reads `query` at `now`.
pub async fn regions(
    store: &dyn ReadStore,
    query: &RegionsQuery,
    now: DateTime<Utc>,
) -> Result<RegionsRead, ReadError> {
    let cities = query.level == Level::City;
    let (from, to) = (now - query.window, now);
    let range = TimeRange::new(from, to);
    let service = query.service.as_str();
    let rows = store
        .region_counts_expected(
            service,
            query.country.as_deref(),
            cities,
            range,
            TimeRange::new(floor_to(from, QUARTER_SECONDS), to),
        )
        .await?;
    let incident_of: HashMap<RegionKey, Uuid> = rows
        .open
        .into_iter()
        .map(|(country, city, id)| ((country, city), id))
        .collect();
    let mut expected_of: HashMap<RegionKey, Vec<(DateTime<Utc>, f64)>> = HashMap::new();
    for q in rows.expected {
        expected_of
            .entry((q.country, q.city))
            .or_default()
            .push((q.quarter, q.expected));
    }
    let mut counted: BTreeMap<RegionKey, i64> = rows
        .counts
        .into_iter()
        .map(|r| ((r.country, r.city), r.count))
        .collect();
    for key in incident_of.keys() {
        counted.entry(key.clone()).or_insert(0);
    }
    let mut regions: Vec<RegionRead> = counted
        .into_iter()
        .map(|((country, city), count)| {
            let key = (country, city);
            let expected = expected_of
                .get(&key)
                .map(|q| round2(prorated(q.iter().copied(), from, to)));
            let ratio = expected
                .filter(|e| *e > 0.0)
                .map(|e| round2(count as f64 / e));
            let incident_id = incident_of.get(&key).copied();
            let (country, city) = key;
            let name = if city.is_empty() {
                CountryCode::parse(&country)
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|_| country.clone())
            } else {
                city.clone()
            };
            RegionRead {
                city: (!city.is_empty()).then_some(city),
                country,
                name,
                count,
                expected,
                ratio,
                status: RegionStatus::of(count, ratio, incident_id.is_some()),
                incident_id,
            }
        })
        .collect();
    regions.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.country.cmp(&b.country))
            .then_with(|| a.city.cmp(&b.city))
    });
    Ok(RegionsRead { range, regions })
}

/// The expectation of `[from, to)` from quarter-hour expectations, each weighted by how much
/// of its quarter falls in the range.
fn prorated(
    quarters: impl Iterator<Item = (DateTime<Utc>, f64)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> f64 {
    quarters
        .map(|(quarter, expected)| {
            let start = quarter.max(from);
            let end = (quarter + TimeDelta::seconds(QUARTER_SECONDS)).min(to);
            let overlap = (end - start).num_seconds().max(0) as f64 / QUARTER_SECONDS as f64;
            expected * overlap
        })
        .sum()
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_800 + minutes * 60, 0).expect("valid time")
    }

    #[test]
    fn a_window_takes_the_share_of_each_quarter_it_covers() {
        // 10:05-11:05 covers two thirds of 10:00, all of 10:15-10:45, a third of 11:00.
        let quarters = [
            (t(0), 3.0),
            (t(15), 1.0),
            (t(30), 1.0),
            (t(45), 1.0),
            (t(60), 6.0),
        ];
        assert_eq!(round2(prorated(quarters.into_iter(), t(5), t(65))), 7.0);
    }

    #[test]
    fn an_open_incident_outranks_elevated_and_elevated_needs_ten_reports() {
        assert_eq!(RegionStatus::of(3, Some(9.0), true), RegionStatus::Incident);
        assert_eq!(
            RegionStatus::of(10, Some(1.5), false),
            RegionStatus::Elevated
        );
        assert_eq!(RegionStatus::of(9, Some(4.0), false), RegionStatus::Normal);
        assert_eq!(
            RegionStatus::of(50, Some(1.49), false),
            RegionStatus::Normal
        );
        assert_eq!(RegionStatus::of(50, None, false), RegionStatus::Normal);
    }
}
