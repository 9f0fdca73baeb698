//! Many minutes at once on several threads: the engine split by service into shards that share nothing, each stepped through the minutes on a thread of its own, then joined, with exactly the events, expectations and state of one thread stepping every minute in turn.
//!
//! Services are independent of each other: a service's global series counts its own
//! countries' incidents and a city borrows its own country's expectation, so the series of a
//! set of services make an engine of their own. The split is per run of minutes, not per
//! minute: per minute, the threads would meet every minute for a fraction of a millisecond of
//! work each, and on two cores that was no faster than one thread; a replay or a catch-up
//! steps an hour or more at a time, and its shards meet once.

use std::collections::BTreeMap;

use super::engine::{Engine, EngineEvent, PlaceCount, SeriesKey};

/// One minute to step: its start (unix seconds, a multiple of 60) and its rollups.
#[derive(Clone, Debug, Default)]
pub struct MinuteCounts<'a> {
    pub at: i64,
    pub counts: Vec<PlaceCount<'a>>,
}

/// What stepping one minute produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SteppedMinute {
    /// The incident events, parents before children, as [`Engine::step`] returns them.
    pub events: Vec<EngineEvent>,
    /// Every series' expected window count after this minute, in key order (only for the
    /// minutes the caller asked for).
    pub expectations: Option<Vec<(SeriesKey, f64)>>,
}

/// Fewest series × minutes worth a thread of their own (tens of milliseconds of stepping).
const LEAST_PER_THREAD: usize = 50_000;

/// The machine's cores: the threads the engine may step on.
pub(super) fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Engine {
    /// The same engine stepping on at most `threads` threads (at least one; by default the
    /// machine's cores). The events and the state are the same whatever the count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Steps `minutes` in order, as [`Engine::step`] would one by one, and after each minute
    /// for which `expect(at)` holds also returns every series' expectation. Where the work is
    /// large enough, the services are shared out over threads.
    pub fn step_minutes(
        &mut self,
        minutes: &[MinuteCounts<'_>],
        expect: impl Fn(i64) -> bool + Sync,
    ) -> Vec<SteppedMinute> {
        let work = self.series.len().max(1) * minutes.len();
        let threads = self.threads.min(work / LEAST_PER_THREAD).max(1);
        match self.share_out(minutes, threads) {
            Some((shard_of, shards)) => self.step_shards(minutes, &expect, &shard_of, shards),
            None => minutes
                .iter()
                .map(|minute| self.step_expecting(minute, &expect))
                .collect(),
        }
    }

    fn step_expecting(
        &mut self,
        minute: &MinuteCounts<'_>,
        expect: &impl Fn(i64) -> bool,
    ) -> SteppedMinute {
        let events = self.step(minute.at, &minute.counts);
        let expectations = expect(minute.at).then(|| {
            self.expectations()
                .map(|(key, expected)| (key.clone(), expected))
                .collect()
        });
        SteppedMinute {
            events,
            expectations,
        }
    }

    /// Which shard each service goes to (the services with the most series first, each to
    /// the shard with the fewest so far), and how many shards that makes. None when there is
    /// only one shard to fill.
    fn share_out(
        &self,
        minutes: &[MinuteCounts<'_>],
        threads: usize,
    ) -> Option<(BTreeMap<String, usize>, usize)> {
        if threads < 2 {
            return None;
        }
        let mut weights: BTreeMap<&str, usize> = BTreeMap::new();
        for key in self.series.keys() {
            *weights.entry(&key.service).or_default() += 1;
        }
        for place in minutes.iter().flat_map(|m| &m.counts) {
            weights.entry(place.service).or_insert(1);
        }
        if weights.len() < 2 {
            return None;
        }
        let mut heaviest_first: Vec<(&str, usize)> = weights.into_iter().collect();
        heaviest_first.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut loads = vec![0; threads.min(heaviest_first.len())];
        let mut shard_of = BTreeMap::new();
        for (service, weight) in heaviest_first {
            let lightest = (0..loads.len()).min_by_key(|&s| loads[s]).unwrap_or(0);
            loads[lightest] += weight;
            shard_of.insert(service.to_owned(), lightest);
        }
        Some((shard_of, loads.len()))
    }

    fn step_shards(
        &mut self,
        minutes: &[MinuteCounts<'_>],
        expect: &(impl Fn(i64) -> bool + Sync),
        shard_of: &BTreeMap<String, usize>,
        shards: usize,
    ) -> Vec<SteppedMinute> {
        let shard = |service: &str| shard_of.get(service).copied().unwrap_or(0);
        let mut engines: Vec<Engine> = (0..shards)
            .map(|_| Engine {
                config: self.config.clone(),
                series: BTreeMap::new(),
                last_minute: self.last_minute,
                countries_in_incident: BTreeMap::new(),
                threads: 1,
            })
            .collect();
        for (key, tracked) in std::mem::take(&mut self.series) {
            engines[shard(&key.service)].series.insert(key, tracked);
        }
        for (service, countries) in std::mem::take(&mut self.countries_in_incident) {
            engines[shard(&service)]
                .countries_in_incident
                .insert(service, countries);
        }
        // Each shard's own minutes: the counts are looked up once, not once per shard.
        let mut runs: Vec<Vec<MinuteCounts<'_>>> = vec![Vec::with_capacity(minutes.len()); shards];
        for minute in minutes {
            for run in &mut runs {
                run.push(MinuteCounts {
                    at: minute.at,
                    counts: Vec::new(),
                });
            }
            for place in &minute.counts {
                if let Some(run_minute) = runs[shard(place.service)].last_mut() {
                    run_minute.counts.push(*place);
                }
            }
        }
        let step = |engine: &mut Engine, run: &[MinuteCounts<'_>]| -> Vec<SteppedMinute> {
            run.iter()
                .map(|minute| engine.step_expecting(minute, expect))
                .collect()
        };
        let stepped: Vec<Vec<SteppedMinute>> = std::thread::scope(|scope| {
            let mut shards = engines.iter_mut().zip(&runs);
            let (mine, my_run) = shards.next().expect("at least one shard");
            let others: Vec<_> = shards
                .map(|(engine, run)| scope.spawn(move || step(engine, run)))
                .collect();
            let mut stepped = vec![step(mine, my_run)];
            stepped.extend(
                others
                    .into_iter()
                    .map(|handle| handle.join().expect("a shard of the engine panicked")),
            );
            stepped
        });
        for mut engine in engines {
            self.series.append(&mut engine.series);
            self.countries_in_incident
                .append(&mut engine.countries_in_incident);
            self.last_minute = self.last_minute.max(engine.last_minute);
        }
        join_minutes(stepped, minutes.len())
    }
}

/// Each minute's results of every shard as one: events and expectations merged into key order
/// (each shard's are in key order already, and no key is in two shards).
fn join_minutes(shards: Vec<Vec<SteppedMinute>>, minutes: usize) -> Vec<SteppedMinute> {
    let mut shards: Vec<_> = shards.into_iter().map(Vec::into_iter).collect();
    (0..minutes)
        .map(|_| {
            let mut joined = SteppedMinute::default();
            for shard in &mut shards {
                let minute = shard.next().unwrap_or_default();
                joined.events =
                    merge_by_key(std::mem::take(&mut joined.events), minute.events, |e| {
                        &e.key
                    });
                joined.expectations = match (joined.expectations.take(), minute.expectations) {
                    (Some(a), Some(b)) => Some(merge_by_key(a, b, |(key, _)| key)),
                    (a, b) => a.or(b),
                };
            }
            joined
        })
        .collect()
}

/// Two lists in key order as one in key order (`a`'s items first among equal keys).
fn merge_by_key<T>(a: Vec<T>, b: Vec<T>, key: impl Fn(&T) -> &SeriesKey) -> Vec<T> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        let next = if key(y) < key(x) { b.next() } else { a.next() };
        merged.extend(next);
    }
    merged.extend(a);
    merged.extend(b);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectorConfig, IncidentEvent};

    /// One place's count: service, country, city ("" for the country total), reports.
    type Row = (String, String, String, i64);

    /// A day of trickle over 3 services × 2 countries × 90 cities, then an hour with a surge in
    /// one city of service a and in one country of service c (which moves c's world total).
    fn day_and_an_hour() -> Vec<(i64, Vec<Row>)> {
        let mut minutes = Vec::new();
        for m in 0..1440 + 60 {
            let surge = m >= 1440;
            let mut counts = Vec::new();
            for service in ["a", "b", "c"] {
                for country in ["NP", "PK"] {
                    let mut total = 0;
                    for i in 0..90 {
                        let hot = surge && service == "a" && country == "PK" && i == 7;
                        let n = if hot { 30 } else { (m + i) % 3 / 2 };
                        total += n;
                        if n > 0 {
                            counts.push((service.into(), country.into(), format!("city{i}"), n));
                        }
                    }
                    if surge && service == "c" && country == "NP" {
                        total += 200;
                    }
                    counts.push((service.into(), country.into(), String::new(), total));
                }
            }
            minutes.push((m * 60, counts));
        }
        minutes
    }

    fn as_minutes(rows: &[(i64, Vec<Row>)]) -> Vec<MinuteCounts<'_>> {
        rows.iter()
            .map(|(at, counts)| MinuteCounts {
                at: *at,
                counts: counts
                    .iter()
                    .map(|(service, country, city, count)| PlaceCount {
                        service,
                        country,
                        city,
                        count: *count,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every quarter hour's last minute, as the detector stores expectations.
    fn quarter_end(at: i64) -> bool {
        (at + 60) % 900 == 0
    }

    #[test]
    fn services_go_heaviest_first_to_the_lightest_shard() {
        let mut engine = Engine::new(&DetectorConfig::default());
        let place = |service, city| PlaceCount {
            service,
            country: "PK",
            city,
            count: 1,
        };
        // Series: a 2 (global, PK), b 4 (global, PK, two cities), c 3; d only in the minutes.
        engine.step(
            0,
            &[
                place("a", ""),
                place("b", ""),
                place("b", "Lahore"),
                place("b", "Quetta"),
                place("c", ""),
                place("c", "Lahore"),
            ],
        );
        let minutes = [MinuteCounts {
            at: 60,
            counts: vec![place("d", "")],
        }];
        let (shard_of, _) = engine.share_out(&minutes, 2).expect("four services");
        // b (4 series) to shard 0, c (3) to 1, a (2) to the lighter 1 (now 5), d (1) to 0.
        assert_eq!(
            shard_of.into_iter().collect::<Vec<_>>(),
            vec![
                ("a".to_owned(), 1),
                ("b".to_owned(), 0),
                ("c".to_owned(), 1),
                ("d".to_owned(), 0)
            ]
        );
        assert_eq!(engine.share_out(&minutes, 1), None);
    }

    #[test]
    fn minutes_stepped_on_several_threads_give_what_one_thread_gives_minute_by_minute() {
        let rows = day_and_an_hour();
        let minutes = as_minutes(&rows);
        let config = DetectorConfig::default();
        // The reference: Engine::step, one minute at a time.
        let mut reference = Engine::new(&config);
        let mut expected = Vec::new();
        for minute in &minutes {
            let events = reference.step(minute.at, &minute.counts);
            let expectations = quarter_end(minute.at).then(|| {
                reference
                    .expectations()
                    .map(|(key, value)| (key.clone(), value))
                    .collect::<Vec<_>>()
            });
            expected.push(SteppedMinute {
                events,
                expectations,
            });
        }
        let opened: Vec<(&str, Option<&str>, Option<&str>)> = expected
            .iter()
            .flat_map(|m| &m.events)
            .filter(|e| matches!(e.event, IncidentEvent::Opened(_)))
            .map(|e| {
                (
                    e.key.service.as_str(),
                    e.key.country.as_deref(),
                    e.key.city.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            opened,
            vec![
                ("a", Some("PK"), Some("city7")),
                ("c", Some("NP"), None),
                ("c", None, None)
            ]
        );
        for threads in [1, 2, 3] {
            let mut engine = Engine::new(&config).with_threads(threads);
            // In runs of 360 minutes, as a replay reads them.
            let stepped: Vec<SteppedMinute> = minutes
                .chunks(360)
                .flat_map(|run| engine.step_minutes(run, quarter_end))
                .collect();
            assert!(
                stepped == expected,
                "{threads} threads: other events or expectations"
            );
            assert_eq!(
                engine.snapshot().expect("state serializes"),
                reference.snapshot().expect("state serializes"),
                "{threads} threads: another state"
            );
        }
    }
}
