//! `counts`: one series in dense buckets aligned to UTC, each with the detector's expectation.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::ReadError;
use crate::domain::buckets::{floor_to, start_of_day, TimeRange, QUARTER_SECONDS};
use crate::domain::report::FieldError;
use crate::domain::series::SeriesKey;
use crate::store::ReadStore;

/// The bucket widths a counts query may ask for, by name, in seconds.
pub const INTERVALS: [(&str, i64); 5] = [
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3600),
    ("1d", 86_400),
];

/// Most buckets one answer holds (a week at one minute is 10,080).
pub const MAX_BUCKETS: i64 = 10_080;

/// A bucket width of [`INTERVALS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    name: &'static str,
    seconds: i64,
}

impl Default for Interval {
    /// A quarter hour, the detector's window.
    fn default() -> Interval {
        Interval {
            name: "15m",
            seconds: 900,
        }
    }
}

impl Interval {
    /// The interval called `name`, if it is one of [`INTERVALS`].
    pub fn parse(name: &str) -> Option<Interval> {
        INTERVALS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, seconds)| Interval { name, seconds })
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn seconds(self) -> i64 {
        self.seconds
    }
}

/// Counts of one series: its buckets of `interval` over `[from, to)`. Without `to`, up to the
/// end of the current bucket; without `from`, the 24 hours before `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct CountsQuery {
    pub series: SeriesKey,
    pub interval: Interval,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One bucket: its start, the counted reports in it, and the detector's expectation (None
/// where it has none yet).
#[derive(Clone, Debug, PartialEq)]
pub struct BucketRead {
    pub start: DateTime<Utc>,
    pub count: i64,
    pub expected: Option<f64>,
}

/// A counts answer: the range as read (`from` floored to the interval) and every bucket of it.
#[derive(Clone, Debug, PartialEq)]
pub struct CountsRead {
    pub range: TimeRange,
    pub buckets: Vec<BucketRead>,
}

/// Reads `query` at `now`; a range that is empty or holds more than [`MAX_BUCKETS`] buckets
/// is refused, naming `from`, and so is one finer than a quarter hour that starts before
/// `minutes_from`, the first day retention keeps minute counts of (None: all of them).
pub async fn counts(
    store: &dyn ReadStore,
    query: &CountsQuery,
    now: DateTime<Utc>,
    minutes_from: Option<NaiveDate>,
) -> Result<CountsRead, ReadError> {
    let bucket_seconds = query.interval.seconds();
    let to = query
        .to
        .unwrap_or_else(|| floor_to(now, bucket_seconds) + TimeDelta::seconds(bucket_seconds));
    let from = query.from.unwrap_or(to - TimeDelta::days(1));
    if from >= to {
        return Err(ReadError::Invalid(vec![FieldError::new(
            "from",
            "from must be before to",
        )]));
    }
    let from = floor_to(from, bucket_seconds);
    if (to - from).num_seconds() / bucket_seconds > MAX_BUCKETS {
        return Err(ReadError::Invalid(vec![FieldError::new(
            "from",
            format!(
                "the range holds more than {MAX_BUCKETS} buckets of {}; narrow it or use a wider interval",
                query.interval.name()
            ),
        )]));
    }
    if let Some(first_day) = minutes_from.filter(|_| bucket_seconds < QUARTER_SECONDS) {
        if from < start_of_day(first_day) {
            return Err(ReadError::Invalid(vec![FieldError::new(
                "from",
                format!(
                    "counts at {} are kept from {first_day} on (retention.minute_rollups_days); \
                     start there or ask for 15m or wider, kept longer",
                    query.interval.name()
                ),
            )]));
        }
    }
    let range = TimeRange::new(from, to);
    let (counts, quarters) = store
        .counts_expected(
            &query.series,
            range,
            bucket_seconds,
            TimeRange::new(floor_to(from, QUARTER_SECONDS), to),
        )
        .await?;
    let counts: Vec<(DateTime<Utc>, i64)> =
        counts.into_iter().map(|b| (b.start, b.count)).collect();
    let quarters: Vec<(DateTime<Utc>, f64)> = quarters
        .into_iter()
        .map(|q| (q.quarter, q.expected))
        .collect();
    Ok(CountsRead {
        range,
        buckets: fill_buckets(from, to, bucket_seconds, &counts, &quarters),
    })
}

/// Dense buckets over `[from, to)` (from already aligned), with counts where the store had
/// any and the sum of the quarter-hour expectations each bucket covers (prorated when the
/// bucket is shorter than a quarter hour).
fn fill_buckets(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    counts: &[(DateTime<Utc>, i64)],
    quarters: &[(DateTime<Utc>, f64)],
) -> Vec<BucketRead> {
    let first = from.timestamp();
    let buckets = usize::try_from((to.timestamp() - first + bucket_seconds - 1) / bucket_seconds)
        .unwrap_or(0);
    // The bucket starting at `start`, if it is one of the range's.
    let index = |start: i64| {
        let offset = start - first;
        (offset >= 0 && offset % bucket_seconds == 0)
            .then(|| usize::try_from(offset / bucket_seconds).ok())
            .flatten()
            .filter(|&i| i < buckets)
    };
    let mut count = vec![0; buckets];
    for (start, n) in counts {
        if let Some(i) = index(start.timestamp()) {
            count[i] = *n;
        }
    }
    let mut expected: Vec<Option<f64>> = vec![None; buckets];
    for (quarter, value) in quarters {
        let q = quarter.timestamp();
        if bucket_seconds >= QUARTER_SECONDS {
            if let Some(i) = index(q - q.rem_euclid(bucket_seconds)) {
                expected[i] = Some(expected[i].unwrap_or(0.0) + value);
            }
        } else {
            let share = value * bucket_seconds as f64 / QUARTER_SECONDS as f64;
            let mut start = q;
            while start < q + QUARTER_SECONDS {
                if let Some(i) = index(start) {
                    expected[i] = Some(share);
                }
                start += bucket_seconds;
            }
        }
    }
    (0..buckets)
        .map(|i| {
            let start = first + i as i64 * bucket_seconds;
            BucketRead {
                start: DateTime::from_timestamp(start, 0).unwrap_or(from),
                count: count[i],
                expected: expected[i].map(|e| (e * 100.0).round() / 100.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_800 + minutes * 60, 0).expect("valid time")
    }

    #[test]
    fn hourly_buckets_sum_four_quarters_and_fill_gaps_with_zero() {
        // 1_741_600_800 is 2025-03-10T10:00:00Z, on the hour.
        let quarters: Vec<(DateTime<Utc>, f64)> =
            (0..8).map(|q| (t(q * 15), 1.25 * (q + 1) as f64)).collect();
        let buckets = fill_buckets(t(0), t(180), 3600, &[(t(60), 42)], &quarters);
        let got: Vec<(i64, Option<f64>)> = buckets.iter().map(|b| (b.count, b.expected)).collect();
        assert_eq!(got, [(0, Some(12.5)), (42, Some(32.5)), (0, None)]);
        assert_eq!(buckets[2].start, t(120));
    }

    #[test]
    fn five_minute_buckets_get_a_third_of_their_quarter() {
        let buckets = fill_buckets(t(0), t(20), 300, &[], &[(t(0), 9.0)]);
        let got: Vec<Option<f64>> = buckets.iter().map(|b| b.expected).collect();
        assert_eq!(got, [Some(3.0), Some(3.0), Some(3.0), None]);
    }
}
