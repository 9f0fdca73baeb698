//! Every series at once: one minute of rollups in, incident events out, for each service's global series, its countries and their cities.
//!
//! The engine owns one [`SeriesDetector`] per series ever seen and steps every one of them each
//! minute (a silent minute is a zero, which the baseline must learn too), so the work per minute
//! is linear in the number of series. Series are visited in key order — a service's global
//! series, then each country followed by its cities — so a thin city can borrow the
//! expectation its country computed a moment earlier in the same minute.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::series::{ParentHint, SeriesDetector};
use super::{DetectorConfig, IncidentEvent, IncidentSummary};
pub use crate::domain::series::SeriesKey;

/// One minute's count of one place, as stored in the rollups: `city` empty for the country total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaceCount<'a> {
    pub service: &'a str,
    pub country: &'a str,
    pub city: &'a str,
    pub count: i64,
}

/// What happened to an incident of one series at one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineEvent {
    pub key: SeriesKey,
    /// The minute the event was raised at.
    pub at: i64,
    pub event: IncidentEvent,
    /// The window count when the incident opened.
    pub start_count: f64,
}

impl EngineEvent {
    pub fn summary(&self) -> &IncidentSummary {
        self.event.summary()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Tracked {
    detector: SeriesDetector,
    /// The window count at the step the current (or last) incident opened.
    start_count: f64,
    /// The expected window count at the last step.
    #[serde(default)]
    last_expected: f64,
}

/// The detector state of every series, advanced one minute at a time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Engine {
    #[serde(skip)]
    pub(super) config: DetectorConfig,
    #[serde(with = "as_pairs")]
    pub(super) series: BTreeMap<SeriesKey, Tracked>,
    pub(super) last_minute: Option<i64>,
    /// Per service, how many of its countries had an open incident after the last minute.
    #[serde(default)]
    pub(super) countries_in_incident: BTreeMap<String, u32>,
    /// Threads [`Engine::step_minutes`] may use (the machine's cores; never in a snapshot).
    #[serde(skip, default = "super::shards::available_threads")]
    pub(super) threads: usize,
}

/// Seconds per step: the engine works on minute rollups.
const STEP_SECONDS: i64 = 60;

/// The version of the model and its state that [`Engine::snapshot`] writes; bump it with every
/// change to either, so an old snapshot is rebuilt rather than misread. Snapshots written
/// before snapshots carried a version count as version 1.
pub const SNAPSHOT_VERSION: u32 = 2;

/// Why a stored snapshot was not restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// It was written for another version of the model (1: before snapshots carried one).
    #[error("the snapshot is of version {found}; this detector reads version {SNAPSHOT_VERSION}")]
    Version { found: u32 },
    /// It is no snapshot at all, or not the shape its version promises.
    #[error("the snapshot cannot be read: {0}")]
    Unreadable(serde_json::Error),
}

impl Engine {
    pub fn new(config: &DetectorConfig) -> Self {
        Self {
            config: config.clone(),
            series: BTreeMap::new(),
            last_minute: None,
            countries_in_incident: BTreeMap::new(),
            threads: super::shards::available_threads(),
        }
    }

    /// Restores an engine from [`Engine::snapshot`] of this [`SNAPSHOT_VERSION`]; series first
    /// seen from now on use `config`. A snapshot of another version is refused as such, before
    /// its body is read.
    pub fn restore(config: &DetectorConfig, snapshot: &str) -> Result<Self, SnapshotError> {
        /// The version alone (every other field is skipped).
        #[derive(Deserialize)]
        struct Header {
            version: Option<u32>,
        }
        let header: Header = serde_json::from_str(snapshot).map_err(SnapshotError::Unreadable)?;
        let found = header.version.unwrap_or(1);
        if found != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found });
        }
        let mut engine: Engine =
            serde_json::from_str(snapshot).map_err(SnapshotError::Unreadable)?;
        engine.config = config.clone();
        Ok(engine)
    }

    /// The whole state as JSON, tagged with its [`SNAPSHOT_VERSION`] (floats round-trip
    /// exactly, so a restored engine continues exactly as this one would).
    pub fn snapshot(&self) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Versioned<'a> {
            version: u32,
            #[serde(flatten)]
            engine: &'a Engine,
        }
        serde_json::to_string(&Versioned {
            version: SNAPSHOT_VERSION,
            engine: self,
        })
    }

    /// The last minute stepped (unix seconds of its start).
    pub fn last_minute(&self) -> Option<i64> {
        self.last_minute
    }

    /// How many series are tracked.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The figures of a series' last step (its window, expectation, surprise and anomaly
    /// score; no events), if the series is tracked.
    pub fn last_step(&self, key: &SeriesKey) -> Option<super::Step> {
        self.series.get(key).and_then(|t| t.detector.last_step())
    }

    /// The open incident of a series, if any.
    pub fn open_incident(&self, key: &SeriesKey) -> Option<&IncidentSummary> {
        self.series.get(key).and_then(|t| t.detector.incident())
    }

    /// Every series' expected window count at the last minute stepped, in key order: at the
    /// last minute of a quarter hour, the expectation for that quarter hour.
    pub fn expectations(&self) -> impl Iterator<Item = (&SeriesKey, f64)> {
        self.series.iter().map(|(k, t)| (k, t.last_expected))
    }

    /// The series with an open incident, in key order.
    pub fn open_series(&self) -> impl Iterator<Item = &SeriesKey> {
        self.series
            .iter()
            .filter(|(_, t)| t.detector.incident().is_some())
            .map(|(k, _)| k)
    }

    /// Steps every series through minute `at` (a multiple of 60) with that minute's counts;
    /// minutes must come in increasing order (a repeated or older minute is ignored). Returns
    /// the incident events of this minute, parents before children.
    pub fn step(&mut self, at: i64, counts: &[PlaceCount<'_>]) -> Vec<EngineEvent> {
        if self.last_minute.is_some_and(|last| at <= last) {
            return Vec::new();
        }
        self.last_minute = Some(at);
        let mut this_minute: BTreeMap<SeriesKey, f64> = BTreeMap::new();
        for place in counts.iter().filter(|p| p.count > 0) {
            let count = place.count as f64;
            if place.city.is_empty() {
                *this_minute
                    .entry(SeriesKey::global(place.service))
                    .or_default() += count;
                *this_minute
                    .entry(SeriesKey::country(place.service, place.country))
                    .or_default() += count;
            } else {
                *this_minute
                    .entry(SeriesKey::city(place.service, place.country, place.city))
                    .or_default() += count;
            }
        }
        for key in this_minute.keys() {
            if !self.series.contains_key(key) {
                self.series.insert(
                    key.clone(),
                    Tracked {
                        detector: SeriesDetector::new(&self.config, STEP_SECONDS),
                        start_count: 0.0,
                        last_expected: 0.0,
                    },
                );
            }
        }

        let mut events = Vec::new();
        let global_min_countries = self.config.global_min_countries.max(1);
        let countries_before = std::mem::take(&mut self.countries_in_incident);
        // The expectation of the last country series visited: the parent of the cities that follow.
        let mut country_expected = None;
        // Both maps are in key order: walk this minute's counts alongside the series instead
        // of looking each series up (a string-keyed search per series per minute).
        let mut counted = this_minute.iter().peekable();
        for (key, tracked) in &mut self.series {
            let count = match counted.peek() {
                Some((next, count)) if *next == key => {
                    let count = **count;
                    counted.next();
                    count
                }
                _ => 0.0,
            };
            // A thin city borrows its country's daily shape: they keep the same clock. A country
            // borrows nothing from the world, whose shape is mostly other time zones' (a quiet
            // country would expect its night's reports at its noon, and miss its surges).
            let parent = match (&key.country, &key.city) {
                (Some(_), Some(_)) => country_expected,
                _ => None,
            }
            .map(|expected_count| ParentHint { expected_count });
            // Several countries in incidents at once make it a global one (as of the last minute:
            // the global series is stepped before its countries).
            let forced = key.country.is_none()
                && countries_before
                    .get(&key.service)
                    .is_some_and(|&n| n >= global_min_countries);
            let step = tracked.detector.step_forced(at, count, parent, forced);
            tracked.last_expected = step.expected;
            if key.country.is_some() && key.city.is_none() && step.incident.is_some() {
                *self
                    .countries_in_incident
                    .entry(key.service.clone())
                    .or_default() += 1;
            }
            match (&key.country, &key.city) {
                (None, _) => country_expected = None,
                (Some(_), None) => country_expected = Some(step.expected),
                (Some(_), Some(_)) => {}
            }
            for event in [step.gap_event, step.event].into_iter().flatten() {
                if matches!(event, IncidentEvent::Opened(_)) {
                    tracked.start_count = step.window_count;
                }
                events.push(EngineEvent {
                    key: key.clone(),
                    at,
                    event,
                    start_count: tracked.start_count,
                });
            }
        }
        events
    }
}

/// JSON object keys must be strings: the series map travels as a list of (key, state) pairs.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(country: &'a str, city: &'a str, count: i64) -> PlaceCount<'a> {
        PlaceCount {
            service: "x",
            country,
            city,
            count,
        }
    }

    /// Two days of a steady trickle, then a Lahore surge.
    fn run(engine: &mut Engine, minutes: std::ops::Range<i64>, surge: i64) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        for m in minutes {
            let at = m * 60;
            // Country total 2 per minute, of which 1 in Lahore, every other minute.
            let lahore = i64::from(m % 2 == 0) + surge;
            let counts = [place("PK", "", 2 + surge), place("PK", "Lahore", lahore)];
            events.extend(engine.step(at, &counts));
        }
        events
    }

    /// The event's name, as the CSV's `event` column writes it.
    fn kind(event: &IncidentEvent) -> &'static str {
        match event {
            IncidentEvent::Opened(_) => "opened",
            IncidentEvent::Updated(_) => "updated",
            IncidentEvent::Resolved(_) => "resolved",
            IncidentEvent::Reopened(_) => "reopened",
        }
    }

    fn kinds(events: &[EngineEvent]) -> Vec<(Option<&str>, Option<&str>, &'static str)> {
        events
            .iter()
            .map(|e| {
                (
                    e.key.country.as_deref(),
                    e.key.city.as_deref(),
                    kind(&e.event),
                )
            })
            .collect()
    }

    /// The (country, city, kind) of the events of one kind, sorted.
    fn of_kind<'a>(
        events: &'a [EngineEvent],
        wanted: &str,
    ) -> Vec<(Option<&'a str>, Option<&'a str>, &'static str)> {
        let mut found: Vec<_> = kinds(events)
            .into_iter()
            .filter(|k| k.2 == wanted)
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_country_total_feeds_its_country_and_the_globe_and_a_city_row_only_its_city() {
        let mut engine = Engine::new(&DetectorConfig::default());
        engine.step(0, &[place("PK", "", 3), place("PK", "Lahore", 2)]);
        engine.step(60, &[place("GB", "", 1)]);
        assert_eq!(engine.series_count(), 4);
        let keys: Vec<SeriesKey> = engine.series.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                SeriesKey::global("x"),
                SeriesKey::country("x", "GB"),
                SeriesKey::country("x", "PK"),
                SeriesKey::city("x", "PK", "Lahore"),
            ]
        );
        // Every series saw both minutes, including the one it had no rows in.
        assert!(engine
            .series
            .values()
            .all(|t| t.detector.window_steps() == 15));
        assert_eq!(engine.last_minute(), Some(60));
        let expectations: Vec<(&SeriesKey, f64)> = engine.expectations().collect();
        assert_eq!(expectations.len(), 4);
        assert!(expectations.iter().all(|(_, e)| *e >= 1.0 && e.is_finite()));
        assert!(engine.step(60, &[place("PK", "", 100)]).is_empty());
    }

    #[test]
    fn a_surge_opens_country_and_city_incidents_and_both_resolve() {
        let mut engine = Engine::new(&DetectorConfig::default());
        let quiet = run(&mut engine, 0..2 * 1440, 0);
        assert_eq!(kinds(&quiet), vec![]);
        let surge = run(&mut engine, 2 * 1440..2 * 1440 + 30, 10);
        assert_eq!(
            of_kind(&surge, "opened"),
            vec![
                (None, None, "opened"),
                (Some("PK"), None, "opened"),
                (Some("PK"), Some("Lahore"), "opened")
            ]
        );
        let pk = SeriesKey::country("x", "PK");
        let open = *engine.open_incident(&pk).expect("PK incident open");
        let first_pk = surge.iter().find(|e| e.key == pk).expect("PK event");
        assert!(first_pk.start_count >= 10.0 * 3.0, "{first_pk:?}");
        assert_eq!(open.started_at, first_pk.summary().started_at);
        let calm = run(&mut engine, 2 * 1440 + 30..2 * 1440 + 180, 0);
        assert_eq!(
            of_kind(&calm, "resolved"),
            vec![
                (None, None, "resolved"),
                (Some("PK"), None, "resolved"),
                (Some("PK"), Some("Lahore"), "resolved")
            ]
        );
        assert_eq!(engine.open_incident(&pk), None);
    }

    /// A big steady US and small countries, `surging` of which go from 1 to 12 per minute.
    fn regional(surging: usize) -> Vec<EngineEvent> {
        let mut engine = Engine::new(&DetectorConfig::default());
        let small = ["BD", "NP", "PK"];
        let mut events = Vec::new();
        for m in 0..2 * 1440 + 60 {
            let surge = m >= 2 * 1440;
            let mut counts = vec![place("US", "", 100 + m % 7)];
            for (i, country) in small.iter().enumerate() {
                let n = if surge && i < surging {
                    12
                } else {
                    i64::from(m % 3 != 0)
                };
                counts.push(place(country, "", n));
            }
            events.extend(engine.step(m * 60, &counts));
        }
        events
    }

    #[test]
    fn three_countries_in_incidents_make_a_global_one_though_the_world_total_barely_moves() {
        // The world goes from about 102 to about 136 per minute: 1.3x, under the 1.5x floor.
        assert_eq!(
            of_kind(&regional(3), "opened"),
            vec![
                (None, None, "opened"),
                (Some("BD"), None, "opened"),
                (Some("NP"), None, "opened"),
                (Some("PK"), None, "opened"),
            ]
        );
        assert_eq!(
            of_kind(&regional(2), "opened"),
            vec![(Some("BD"), None, "opened"), (Some("NP"), None, "opened")]
        );
    }

    #[test]
    fn a_restored_snapshot_continues_exactly_like_the_original() {
        let config = DetectorConfig::default();
        let mut original = Engine::new(&config);
        run(&mut original, 0..2 * 1440, 0);
        let snapshot = original.snapshot().expect("state serializes");
        let mut restored = Engine::restore(&config, &snapshot).expect("snapshot parses");
        let a = run(&mut original, 2 * 1440..2 * 1440 + 120, 10);
        let b = run(&mut restored, 2 * 1440..2 * 1440 + 120, 10);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(
            original.snapshot().expect("state serializes"),
            restored.snapshot().expect("state serializes")
        );
    }

    #[test]
    fn the_same_minute_counts_give_the_same_scores_and_incidents_live_and_through_the_csv_path() {
        // Four days of one country's reports per minute (a daily rhythm with bursty noise, an
        // hour at 6x on the last day): the live engine steps them as rollups, `detect` reads them
        // as a CSV. The service's worldwide series sees exactly these counts, with no parent.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let start = 1_740_960_000i64;
        let minutes = 4 * 1440;
        let counts: Vec<i64> = (0..minutes)
            .map(|m| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let hour = (m / 60) % 24;
                let rhythm = if (8..22).contains(&hour) { 6.0 } else { 2.0 };
                let surge = if (3 * 1440 + 600..3 * 1440 + 660).contains(&m) {
                    6.0
                } else {
                    1.0
                };
                // Squared uniform noise: as over-dispersed as real reports (variance > mean).
                let noise = (state % 1_000) as f64 / 1_000.0;
                (rhythm * surge * 3.0 * noise * noise).floor() as i64
            })
            .collect();
        assert!(counts[0] > 0, "the series exists from its first minute");

        let mut engine = Engine::new(&DetectorConfig::default());
        let global = SeriesKey::global("x");
        let mut live = Vec::new();
        for (m, &count) in counts.iter().enumerate() {
            let at = start + 60 * m as i64;
            let events = engine.step(at, &[place("PK", "", count)]);
            let step = engine
                .last_step(&global)
                .expect("the global series is tracked");
            let event = events
                .iter()
                .filter(|e| e.key == global)
                .map(|e| kind(&e.event))
                .next()
                .unwrap_or("");
            live.push(format!(
                "{:.6},{},{},{}",
                step.anomaly_score,
                step.state.as_str(),
                step.window_count,
                event
            ));
        }

        let mut input = String::from("timestamp,value\n");
        for (m, count) in counts.iter().enumerate() {
            input.push_str(&format!("{},{count}\n", start + 60 * m as i64));
        }
        let output =
            crate::detect::detect_csv(&input, &DetectorConfig::default(), None).expect("valid CSV");
        let offline: Vec<String> = output
            .lines()
            .skip(1)
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                assert_eq!(fields[8], "counts", "{line}");
                format!("{},{},{},{}", fields[2], fields[3], fields[4], fields[7])
            })
            .collect();
        assert_eq!(offline.len(), live.len());
        for (m, (a, b)) in live.iter().zip(&offline).enumerate() {
            assert_eq!(a, b, "minute {m}");
        }
        // Not vacuous: the surge opened an incident and scored.
        assert!(live.iter().any(|row| row.ends_with(",opened")));
        assert!(
            live.iter()
                .filter(|row| !row.starts_with("0.000000"))
                .count()
                > 0
        );
    }
}
