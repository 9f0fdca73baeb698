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

/// The start of the `seconds`-long bucket (aligned to the unix epoch) a moment falls in.
pub fn floor_to(at: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let t = at.timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(seconds), 0).unwrap_or(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_starts_on_the_minute() {
        let at = DateTime::from_timestamp(1_741_600_059, 999).unwrap();
        assert_eq!(minute_of(at).timestamp(), 1_741_600_020);
    }
}
