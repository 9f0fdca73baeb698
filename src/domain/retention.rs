//! Retention: which whole UTC days of reports and counts are past their age at a moment, and
//! the days kept ready ahead of live reports. A report's id answers its retries for as long
//! as the report is kept.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Days of live reports kept ready ahead of today (today and this many after it), so a
/// report arriving after midnight never waits on its day being made.
pub const DAYS_AHEAD: i64 = 2;

/// Days each kind of data is kept; 0 keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub reports_days: u32,
    pub minute_rollups_days: u32,
    pub coarse_rollups_days: u32,
}

/// The first day each kind keeps at a moment: everything on earlier days is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub reports_from: Option<NaiveDate>,
    pub minute_rollups_from: Option<NaiveDate>,
    pub coarse_rollups_from: Option<NaiveDate>,
}

impl Retention {
    /// Keeps everything.
    pub const FOREVER: Retention = Retention {
        reports_days: 0,
        minute_rollups_days: 0,
        coarse_rollups_days: 0,
    };

    /// The cutoffs at `now`: a day is deleted once all of it is older than its kind's days,
    /// so at least that many whole days (and today) are always kept.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        let first_kept =
            |days: u32| (days > 0).then(|| (now - TimeDelta::days(i64::from(days))).date_naive());
        Cutoffs {
            reports_from: first_kept(self.reports_days),
            minute_rollups_from: first_kept(self.minute_rollups_days),
            coarse_rollups_from: first_kept(self.coarse_rollups_days),
        }
    }

    /// Why a redetect from `from` may not run at `now`: its replay starts `history_days`
    /// earlier and would learn from the zeros before the minute counts kept. Names both
    /// settings and the first day it may start on.
    pub fn redetect_refusal(
        &self,
        from: DateTime<Utc>,
        history_days: u32,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let first_kept = self.cutoffs(now).minute_rollups_from?;
        let first_allowed = first_kept + TimeDelta::days(i64::from(history_days));
        (from.date_naive() < first_allowed).then(|| {
            format!(
                "its replay starts {history_days} days earlier (detector.history_days), before \
                 {first_kept}, the first day of minute counts kept (retention.minute_rollups_days); \
                 start on {first_allowed} or later"
            )
        })
    }
}

/// The days kept ready at `now`: yesterday (minutes still settling), today and
/// [`DAYS_AHEAD`] days after it.
pub fn live_days(now: DateTime<Utc>) -> Vec<NaiveDate> {
    let today = now.date_naive();
    (-1..=DAYS_AHEAD)
        .map(|offset| today + TimeDelta::days(offset))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a test literal")
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a test literal")
    }

    #[test]
    fn a_day_goes_once_all_of_it_is_older_than_the_setting() {
        let retention = Retention {
            reports_days: 90,
            minute_rollups_days: 35,
            coarse_rollups_days: 0,
        };
        let cutoffs = retention.cutoffs(at("2025-06-10T00:30:00Z"));
        // 90 days before 2025-06-10T00:30 is 2025-03-12T00:30: 03-11 ended before it.
        assert_eq!(cutoffs.reports_from, Some(day("2025-03-12")));
        assert_eq!(cutoffs.minute_rollups_from, Some(day("2025-05-06")));
        assert_eq!(cutoffs.coarse_rollups_from, None);
    }

    #[test]
    fn forever_keeps_every_day() {
        let cutoffs = Retention::FOREVER.cutoffs(at("2025-06-10T12:00:00Z"));
        assert_eq!(
            (
                cutoffs.reports_from,
                cutoffs.minute_rollups_from,
                cutoffs.coarse_rollups_from
            ),
            (None, None, None)
        );
    }

    #[test]
    fn live_days_run_from_yesterday_to_two_days_ahead() {
        let days = live_days(at("2025-12-31T23:59:00Z"));
        assert_eq!(
            days,
            vec![
                day("2025-12-30"),
                day("2025-12-31"),
                day("2026-01-01"),
                day("2026-01-02")
            ]
        );
    }

    #[test]
    fn a_redetect_whose_replay_starts_before_the_kept_minutes_is_refused() {
        let retention = Retention {
            reports_days: 90,
            minute_rollups_days: 40,
            coarse_rollups_days: 0,
        };
        let now = at("2026-12-06T12:00:00Z");
        // Minutes kept from 2026-10-27; with 35 days of history, a redetect may start on 12-01.
        assert_eq!(
            retention.redetect_refusal(at("2026-11-30T23:59:00Z"), 35, now),
            Some(
                "its replay starts 35 days earlier (detector.history_days), before 2026-10-27, \
                 the first day of minute counts kept (retention.minute_rollups_days); start on \
                 2026-12-01 or later"
                    .to_owned()
            )
        );
        assert_eq!(
            retention.redetect_refusal(at("2026-12-01T00:00:00Z"), 35, now),
            None
        );
        assert_eq!(
            Retention::FOREVER.redetect_refusal(at("2020-01-01T00:00:00Z"), 35, now),
            None
        );
    }
}
