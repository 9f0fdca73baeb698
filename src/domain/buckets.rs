//! Time buckets: the minute a report counts in, and the aligned buckets reads and the detector
//! group minutes into.

use chrono::{DateTime, Utc};

/// A quarter hour: the detector's window, and the period its expectations are stored per.
pub const QUARTER_SECONDS: i64 = 900;

/// A half-open range of time, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl TimeRange {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> TimeRange {
        TimeRange { from, to }
    }
}

/// The minute a moment falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(at, 60)
}

/// The first moment of a UTC day.
pub fn start_of_day(day: chrono::NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The start of the `seconds`-long bucket (aligned to the unix epoch) a moment falls in.
pub fn floor_to(at: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let t = at.timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(seconds), 0).unwrap_or(at)
}

/// The rollup tiers: counts per minute, and the same counts summed per quarter hour and per
/// hour, kept beside them so a read of a long range reads few rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Minute,
    Quarter,
    Hour,
}

impl Tier {
    /// How long one row of the tier is.
    pub fn seconds(self) -> i64 {
        match self {
            Tier::Minute => 60,
            Tier::Quarter => QUARTER_SECONDS,
            Tier::Hour => 3600,
        }
    }

    /// The coarsest tier whose rows fit whole in buckets of `bucket_seconds`: a bucket can
    /// only be summed from rows that never straddle two buckets.
    pub fn for_buckets(bucket_seconds: i64) -> Tier {
        [Tier::Hour, Tier::Quarter]
            .into_iter()
            .find(|tier| bucket_seconds % tier.seconds() == 0)
            .unwrap_or(Tier::Minute)
    }
}

/// A range cut into the parts each tier answers: minutes at the edges, then quarter hours,
/// then whole hours in the middle (up to the coarsest tier allowed). Every part is half-open,
/// they follow each other without gap or overlap, and a part a tier cannot fill is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierSplit {
    /// `[t0, t1)` minutes, `[t1, t2)` quarters, `[t2, t3)` hours, `[t3, t4)` quarters,
    /// `[t4, t5)` minutes; `t0` and `t5` are the range's own ends.
    pub bounds: [DateTime<Utc>; 6],
}

impl TierSplit {
    /// Cuts `range` for tiers up to `coarsest`. `range.from` and `range.to` need not be aligned
    /// to anything: the minute parts take what no coarser row covers whole.
    pub fn new(range: TimeRange, coarsest: Tier) -> TierSplit {
        let TimeRange { from, to } = range;
        let inner = |tier: Tier, from: DateTime<Utc>, to: DateTime<Utc>| {
            let start = ceil_to(from, tier.seconds());
            let end = floor_to(to, tier.seconds());
            if start < end {
                (start, end)
            } else {
                // No whole row of the tier fits: the middle is empty, at the range's end.
                (to, to)
            }
        };
        let (q_from, q_to) = if coarsest >= Tier::Quarter {
            inner(Tier::Quarter, from, to)
        } else {
            (to, to)
        };
        let (h_from, h_to) = if coarsest >= Tier::Hour && q_from < q_to {
            inner(Tier::Hour, q_from, q_to)
        } else {
            (q_to, q_to)
        };
        TierSplit {
            bounds: [from, q_from, h_from, h_to, q_to, to],
        }
    }

    /// Whether either minute part, `[t0, t1)` or `[t4, t5)`, holds any time.
    pub fn minute_edges(&self) -> bool {
        let [t0, t1, .., t4, t5] = self.bounds;
        t0 < t1 || t4 < t5
    }
}

/// The start of the first `seconds`-long bucket that starts at or after `at`.
pub fn ceil_to(at: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let floor = floor_to(at, seconds);
    if floor == at {
        at
    } else {
        floor + chrono::TimeDelta::seconds(seconds)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// 2025-03-10T10:00:00Z plus `minutes` (1_741_600_800 is on the hour).
    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_800 + minutes * 60, 0).unwrap()
    }

    fn split(from: i64, to: i64, coarsest: Tier) -> [i64; 6] {
        let split = TierSplit::new(TimeRange::new(t(from), t(to)), coarsest);
        split.bounds.map(|b| (b - t(0)).num_minutes())
    }

    #[test]
    fn a_tier_fits_buckets_it_divides() {
        assert_eq!(Tier::for_buckets(60), Tier::Minute);
        assert_eq!(Tier::for_buckets(300), Tier::Minute);
        assert_eq!(Tier::for_buckets(900), Tier::Quarter);
        assert_eq!(Tier::for_buckets(3600), Tier::Hour);
        assert_eq!(Tier::for_buckets(86_400), Tier::Hour);
    }

    #[test]
    fn a_sliding_hour_is_minutes_at_the_edges_and_quarters_between() {
        // 10:07 to 11:07: minutes 10:07–10:15, quarters 10:15–11:00, minutes 11:00–11:07.
        assert_eq!(split(7, 67, Tier::Hour), [7, 15, 60, 60, 60, 67]);
    }

    #[test]
    fn a_long_range_is_read_in_hours_in_the_middle() {
        // 09:53 to 14:22: minutes to 10:00, hours 10:00–14:00, quarters 14:00–14:15, minutes.
        assert_eq!(split(-7, 262, Tier::Hour), [-7, 0, 0, 240, 255, 262]);
        // 09:40 to 14:00: quarters 09:45–10:00, hours 10:00–14:00.
        assert_eq!(split(-20, 240, Tier::Hour), [-20, -15, 0, 240, 240, 240]);
        // Capped at quarters: no hours.
        assert_eq!(
            split(-20, 240, Tier::Quarter),
            [-20, -15, 240, 240, 240, 240]
        );
    }

    #[test]
    fn a_range_no_coarse_row_fits_is_all_minutes() {
        assert_eq!(split(3, 14, Tier::Hour), [3, 14, 14, 14, 14, 14]);
        assert_eq!(split(0, 120, Tier::Minute), [0, 120, 120, 120, 120, 120]);
        // Quarters fit but no whole hour.
        assert_eq!(split(10, 50, Tier::Hour), [10, 15, 45, 45, 45, 50]);
    }

    #[test]
    fn unaligned_seconds_stay_in_the_minute_parts() {
        let from = t(0) + chrono::TimeDelta::seconds(30);
        let to = t(30) + chrono::TimeDelta::seconds(5);
        let bounds = TierSplit::new(TimeRange::new(from, to), Tier::Hour).bounds;
        assert_eq!(bounds, [from, t(15), t(30), t(30), t(30), to]);
    }

    #[test]
    fn a_split_has_minute_edges_unless_the_range_is_aligned_to_its_tiers() {
        let edges = |from, to, coarsest| {
            TierSplit::new(TimeRange::new(t(from), t(to)), coarsest).minute_edges()
        };
        // A week at 15m, aligned to quarters: no minutes at either end.
        assert!(!edges(-7 * 24 * 60, 15, Tier::Quarter));
        assert!(!edges(-15, 240, Tier::Hour));
        assert!(edges(-20, 240, Tier::Hour));
        assert!(edges(-7, 262, Tier::Hour));
        // Aligned at the start only, or at the end only.
        assert!(edges(0, 67, Tier::Hour));
        assert!(edges(7, 60, Tier::Hour));
        // All minutes.
        assert!(edges(3, 14, Tier::Hour));
        assert!(edges(0, 120, Tier::Minute));
    }

    #[test]
    fn a_minute_starts_on_the_minute() {
        let at = DateTime::from_timestamp(1_741_600_059, 999).unwrap();
        assert_eq!(minute_of(at).timestamp(), 1_741_600_020);
    }
}
