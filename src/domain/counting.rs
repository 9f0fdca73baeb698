//! What counts: a report ready to store, and the pure rules a batch is stored by. The first
//! report per (service, reporter, dedup window) tries to count (the database's unique key
//! decides); a network adds at most its quota to one service's minute; a counted report adds
//! to its country's total and its city's row. Both backends apply these rules in SQL around
//! what they compute here.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::buckets::{floor_to, minute_of, Tier};
use crate::domain::geo::CountryCode;
use crate::domain::report::{Problem, ServiceSlug};

/// A keyed hash of who sent a report; never reversible to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 16]);

/// A report ready to store: validated, stamped with time, reporter and id.
#[derive(Clone, Debug)]
pub struct NewReport {
    pub id: Uuid,
    /// The id came from the client, so this may be a retry of a stored report.
    pub client_id: bool,
    pub received_at: DateTime<Utc>,
    pub service: ServiceSlug,
    pub country: CountryCode,
    pub city: Option<&'static str>,
    pub problem: Problem,
    pub fingerprint: Fingerprint,
    /// Start of the dedup window this report falls in.
    pub dedup_window_start: DateTime<Utc>,
    /// The sender's network and how much it may count; None (imports) is never capped.
    pub network: Option<NetworkQuota>,
}

/// How much one network may count: its keyed fingerprint (of the /24 or /48, never the raw
/// prefix) and the most counted reports it may add to one service's minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkQuota {
    pub network: Fingerprint,
    pub max_counted_per_minute: u32,
}

/// What storing one report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub id: Uuid,
    /// It was the reporter's first for this service in the window, so it adds to the counts.
    pub counted: bool,
    /// The id was already stored; nothing was written and `counted` is the original outcome.
    pub replay: bool,
}

/// The reports of a batch that try to be counted: the first per (service, reporter, window).
/// The database's unique key decides which of them really are the first.
pub fn dedup_candidates(reports: &[NewReport]) -> Vec<&NewReport> {
    let mut seen = HashSet::with_capacity(reports.len());
    reports
        .iter()
        .filter(|r| seen.insert((&r.service, r.fingerprint, r.dedup_window_start)))
        .collect()
}

/// One network's counted reports of a batch in one (service, minute): the key, the quota, and
/// the ids in batch order.
pub struct NetworkGroup<'a> {
    pub service: &'a str,
    pub network: Fingerprint,
    pub minute: DateTime<Utc>,
    pub max_counted: u32,
    pub ids: Vec<Uuid>,
}

/// The counted reports of a batch that carry a network quota, grouped by (service, network,
/// minute) and sorted by that key, so concurrent writers lock the count rows in one order.
pub fn network_groups<'a>(counted: impl Iterator<Item = &'a NewReport>) -> Vec<NetworkGroup<'a>> {
    let mut groups: BTreeMap<(&'a str, Fingerprint, DateTime<Utc>), NetworkGroup<'a>> =
        BTreeMap::new();
    for report in counted {
        let Some(quota) = report.network else {
            continue;
        };
        let minute = minute_of(report.received_at);
        let key = (report.service.as_str(), quota.network, minute);
        let group = groups.entry(key).or_insert_with(|| NetworkGroup {
            service: report.service.as_str(),
            network: quota.network,
            minute,
            max_counted: quota.max_counted_per_minute,
            ids: Vec::new(),
        });
        group.max_counted = group.max_counted.min(quota.max_counted_per_minute);
        group.ids.push(report.id);
    }
    groups.into_values().collect()
}

/// The ids of a group beyond its quota, given the group's count row after adding the group
/// (`total`, every counted report the network tried to add to that minute).
pub fn over_quota<'a>(group: &'a NetworkGroup<'_>, total: i64) -> &'a [Uuid] {
    let n = group.ids.len() as i64;
    let before = total - n;
    let admitted = (i64::from(group.max_counted) - before).clamp(0, n);
    &group.ids[admitted as usize..]
}

/// One rollup row's key: (service, country, city or "" for the total, minute).
pub type RollupKey<'a> = (&'a str, &'a str, &'a str, DateTime<Utc>);

/// The rollup increments of newly stored counted reports, sorted by key so concurrent
/// writers lock rows in one order: each adds to its city's row (if any) and its country total.
pub fn rollup_increments<'a>(
    counted: impl Iterator<Item = &'a NewReport>,
) -> Vec<(RollupKey<'a>, i64)> {
    let mut increments: BTreeMap<RollupKey<'a>, i64> = BTreeMap::new();
    for report in counted {
        let minute = minute_of(report.received_at);
        let (service, country) = (report.service.as_str(), report.country.as_str());
        *increments
            .entry((service, country, "", minute))
            .or_default() += 1;
        if let Some(city) = report.city {
            *increments
                .entry((service, country, city, minute))
                .or_default() += 1;
        }
    }
    increments.into_iter().collect()
}

/// Minute increments ([`rollup_increments`]) summed into the rows of a coarser `tier`, in
/// key order.
pub fn tier_increments<'a>(
    minutes: &[(RollupKey<'a>, i64)],
    tier: Tier,
) -> Vec<(RollupKey<'a>, i64)> {
    let mut increments: BTreeMap<RollupKey<'a>, i64> = BTreeMap::new();
    for &((service, country, city, minute), n) in minutes {
        *increments
            .entry((service, country, city, floor_to(minute, tier.seconds())))
            .or_default() += n;
    }
    increments.into_iter().collect()
}

/// The outcome of every report of a batch: inserted counted, inserted uncounted, or a
/// replay of a stored id (with its stored `counted`).
pub fn outcomes(
    reports: &[NewReport],
    counted: &HashSet<Uuid>,
    uncounted: &HashSet<Uuid>,
    previously_stored: &HashMap<Uuid, bool>,
) -> Vec<Outcome> {
    reports
        .iter()
        .map(|r| {
            if counted.contains(&r.id) {
                Outcome {
                    id: r.id,
                    counted: true,
                    replay: false,
                }
            } else if uncounted.contains(&r.id) {
                Outcome {
                    id: r.id,
                    counted: false,
                    replay: false,
                }
            } else {
                Outcome {
                    id: r.id,
                    counted: previously_stored.get(&r.id).copied().unwrap_or(false),
                    replay: true,
                }
            }
        })
        .collect()
}

/// What an import has learnt from its own earlier batches of one lane (which are committed
/// in file order before the next is written), so the next batch can be stored without asking
/// the store what it already knows: the dedup keys those batches left counted, for the
/// latest few windows, and whether the last batch held replays (a re-run).
#[derive(Debug, Default, Clone)]
pub struct ImportHints {
    counted: BTreeMap<DateTime<Utc>, HashSet<(ServiceSlug, Fingerprint)>>,
    last_batch_had_replays: bool,
}

impl ImportHints {
    /// Windows of counted keys kept: an import sorted by time only ever meets the latest
    /// ones again. A key forgotten is only a hint lost (the store then looks it up).
    const WINDOWS_KEPT: usize = 4;

    /// Whether an earlier batch left `report`'s dedup key counted: it cannot count.
    pub fn is_counted(&self, report: &NewReport) -> bool {
        self.counted
            .get(&report.dedup_window_start)
            .is_some_and(|keys| keys.contains(&(report.service.clone(), report.fingerprint)))
    }

    /// Whether the last batch held replays, so the next one likely does too.
    pub fn expects_replays(&self) -> bool {
        self.last_batch_had_replays
    }

    /// Learns from a committed batch: a stored report's key is counted from then on (it
    /// counted, or a report before it had), and so is a replayed one's that counted. A
    /// replay that did not count says nothing, nor does a report a network cap left uncounted
    /// (the cap may have left its key free).
    pub fn learn(&mut self, reports: &[NewReport], outcomes: &[Outcome]) {
        self.last_batch_had_replays = outcomes.iter().any(|o| o.replay);
        for (report, outcome) in reports.iter().zip(outcomes) {
            if !outcome.counted && (outcome.replay || report.network.is_some()) {
                continue;
            }
            self.counted
                .entry(report.dedup_window_start)
                .or_default()
                .insert((report.service.clone(), report.fingerprint));
        }
        while self.counted.len() > Self::WINDOWS_KEPT {
            self.counted.pop_first();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::report::Catalog;

    fn report(id: u128, fingerprint: u8, city: Option<&'static str>, second: i64) -> NewReport {
        let catalog = Catalog::new([("x", "X")]);
        NewReport {
            id: Uuid::from_u128(id),
            client_id: false,
            received_at: DateTime::from_timestamp(1_741_600_000 + second, 0).unwrap(),
            service: catalog.services()[0].slug.clone(),
            country: CountryCode::parse("PK").unwrap(),
            city,
            problem: Problem::App,
            fingerprint: Fingerprint([fingerprint; 16]),
            dedup_window_start: DateTime::from_timestamp(1_741_599_900, 0).unwrap(),
            network: None,
        }
    }

    fn from_network(mut report: NewReport, network: u8, max_counted_per_minute: u32) -> NewReport {
        report.network = Some(NetworkQuota {
            network: Fingerprint([network; 16]),
            max_counted_per_minute,
        });
        report
    }

    #[test]
    fn counted_reports_group_by_service_network_and_minute_and_imports_are_left_out() {
        let batch = [
            from_network(report(1, 1, None, 0), 9, 2),
            report(2, 2, None, 1),
            from_network(report(3, 3, None, 2), 9, 2),
            from_network(report(4, 4, None, 30), 9, 2),
            from_network(report(5, 5, None, 3), 8, 2),
        ];
        let groups: Vec<(u8, i64, Vec<u128>)> = network_groups(batch.iter())
            .iter()
            .map(|g| {
                (
                    g.network.0[0],
                    g.minute.timestamp(),
                    g.ids.iter().map(|id| id.as_u128()).collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                (8, 1_741_599_960, vec![5]),
                (9, 1_741_599_960, vec![1, 3]),
                (9, 1_741_600_020, vec![4])
            ]
        );
    }

    #[test]
    fn a_group_keeps_what_its_quota_has_left_and_the_rest_is_over() {
        let batch: Vec<NewReport> = (1..=4)
            .map(|i| from_network(report(i, i as u8, None, 0), 9, 3))
            .collect();
        let groups = network_groups(batch.iter());
        let over = |total| -> Vec<u128> {
            over_quota(&groups[0], total)
                .iter()
                .map(|id| id.as_u128())
                .collect()
        };
        // Nothing counted before this batch: three of four count.
        assert_eq!(over(4), [4]);
        // Two counted before: one of four counts.
        assert_eq!(over(6), [2, 3, 4]);
        // The quota was used up before: none counts.
        assert_eq!(over(9), [1, 2, 3, 4]);
    }

    #[test]
    fn only_the_first_report_per_reporter_and_window_is_a_dedup_candidate() {
        let batch = [
            report(1, 7, None, 0),
            report(2, 7, None, 5),
            report(3, 8, None, 5),
        ];
        let ids: Vec<u128> = dedup_candidates(&batch)
            .iter()
            .map(|r| r.id.as_u128())
            .collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn a_city_report_adds_to_its_city_and_its_country_total() {
        // 1_741_600_000 is 09:46:40 UTC, so seconds 0 and 5 share the 09:46 minute and 30 is in 09:47.
        let batch = [
            report(1, 1, Some("Lahore"), 0),
            report(2, 2, None, 5),
            report(3, 3, Some("Lahore"), 30),
        ];
        let rows: Vec<(&str, i64, i64)> = rollup_increments(batch.iter())
            .into_iter()
            .map(|((_, _, city, minute), n)| (city, minute.timestamp(), n))
            .collect();
        assert_eq!(
            rows,
            [
                ("", 1_741_599_960, 2),
                ("", 1_741_600_020, 1),
                ("Lahore", 1_741_599_960, 1),
                ("Lahore", 1_741_600_020, 1)
            ]
        );
    }

    #[test]
    fn minute_increments_sum_into_their_quarter_and_hour() {
        // 09:46:40, 09:59:55 and 10:00:05 UTC: two quarters of two hours.
        let batch = [
            report(1, 1, Some("Lahore"), 0),
            report(2, 2, None, 795),
            report(3, 3, Some("Lahore"), 805),
        ];
        let minutes = rollup_increments(batch.iter());
        let rows = |tier| -> Vec<(&str, i64, i64)> {
            tier_increments(&minutes, tier)
                .into_iter()
                .map(|((_, _, city, start), n)| (city, start.timestamp(), n))
                .collect()
        };
        assert_eq!(
            rows(Tier::Quarter),
            [
                ("", 1_741_599_900, 2),
                ("", 1_741_600_800, 1),
                ("Lahore", 1_741_599_900, 1),
                ("Lahore", 1_741_600_800, 1)
            ]
        );
        assert_eq!(
            rows(Tier::Hour),
            [
                ("", 1_741_597_200, 2),
                ("", 1_741_600_800, 1),
                ("Lahore", 1_741_597_200, 1),
                ("Lahore", 1_741_600_800, 1)
            ]
        );
    }

    #[test]
    fn outcomes_distinguish_counted_uncounted_and_replayed_reports() {
        let batch = [
            report(1, 1, None, 0),
            report(2, 1, None, 1),
            report(3, 2, None, 2),
            report(4, 3, None, 3),
        ];
        let counted = HashSet::from([Uuid::from_u128(1)]);
        let uncounted = HashSet::from([Uuid::from_u128(2)]);
        let previously_stored =
            HashMap::from([(Uuid::from_u128(3), true), (Uuid::from_u128(4), false)]);
        let got: Vec<(bool, bool)> = outcomes(&batch, &counted, &uncounted, &previously_stored)
            .iter()
            .map(|o| (o.counted, o.replay))
            .collect();
        assert_eq!(
            got,
            [(true, false), (false, false), (true, true), (false, true)]
        );
    }

    #[test]
    fn import_hints_hold_the_keys_earlier_batches_left_counted() {
        let window = |r: NewReport, windows: i64| NewReport {
            dedup_window_start: r.dedup_window_start + chrono::Duration::minutes(15 * windows),
            ..r
        };
        let stored = |id: u128, counted: bool| Outcome {
            id: Uuid::from_u128(id),
            counted,
            replay: false,
        };
        let replayed = |id: u128, counted: bool| Outcome {
            id: Uuid::from_u128(id),
            counted,
            replay: true,
        };
        let mut hints = ImportHints::default();
        let batch = [
            report(1, 1, None, 0),
            report(2, 2, None, 0),
            report(3, 3, None, 0),
        ];
        hints.learn(
            &batch,
            &[stored(1, true), stored(2, false), replayed(3, false)],
        );
        assert!(hints.is_counted(&report(9, 1, None, 0)));
        assert!(hints.is_counted(&report(9, 2, None, 0)));
        assert!(
            !hints.is_counted(&report(9, 3, None, 0)),
            "an uncounted replay says nothing"
        );
        assert!(
            !hints.is_counted(&window(report(9, 1, None, 0), 1)),
            "another window"
        );
        assert!(hints.expects_replays());
        let capped = from_network(report(4, 4, None, 0), 1, 0);
        hints.learn(&[capped], &[stored(4, false)]);
        assert!(
            !hints.is_counted(&report(9, 4, None, 0)),
            "a capped key may be free"
        );
        assert!(!hints.expects_replays());
        for w in 1..=4 {
            hints.learn(&[window(report(10, 5, None, 0), w)], &[stored(10, true)]);
        }
        assert!(
            !hints.is_counted(&report(9, 1, None, 0)),
            "only the last 4 windows are kept"
        );
        assert!(hints.is_counted(&window(report(9, 5, None, 0), 1)));
        assert!(hints.is_counted(&window(report(9, 5, None, 0), 4)));
    }
}
