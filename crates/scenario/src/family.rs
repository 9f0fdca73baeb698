//! Scenario families: a TOML file of draw ranges plus an integer seed give one [`Scenario`], so the detector is measured on many seeded variations of one kind of surge instead of one hand-made case.
//!
//! A family fixes the calendar, the problem mix, which (service, country) surges and which
//! others carry ordinary traffic beside it (with their cities); every other number is a range
//! `[low, high]` drawn per seed. [`Family::draw`] is pure: one seed always gives the same
//! scenario, so the same CSV bytes. It draws from ChaCha8 seeded with the seed (on a stream of
//! its own, [`DRAW_STREAM`]), in this order:
//!
//! 1. the surge: day, minute of day, level, factor, duration;
//! 2. each `[[traffic]]` entry in file order: diurnal amplitude, peak hour, weekend factor,
//!    dispersion, then mean per minute (not for the surging entry).
//!
//! Integer ranges (day, minute of day, duration) are drawn uniformly with both ends included;
//! real ones as `low + (high − low)·u` with `u` uniform in `[0, 1)`. The **level** is the
//! surging series' usual count per 15 minutes at the surge: the surging entry's `per_minute` is
//! solved for so that its expected count over the 15 minutes from the surge start is exactly
//! the level, with the diurnal curve and the weekend factor of that moment taken into account.
//! The surge adds `(factor − 1) · level` reports per 15 minutes on top (so the series runs at
//! about `factor` times its usual level): a linear ramp up over `ramp_minutes`, a plateau, and
//! a ramp down over `ramp_minutes`, `duration_minutes` in all (ramps included). The scenario's
//! own seed is the family seed, so its reports are drawn like any scenario's.
//!
//! # Schema
//!
//! ```toml
//! name = "low-count country surges"
//! start = "2025-02-03T00:00:00Z"  # first minute of every drawn scenario (whole minute)
//! days = 29                       # each scenario is this many days long
//!
//! [problems]                      # the problem mix, as in a scenario
//! app = 1
//!
//! [surge]
//! service = "x"
//! country = "PK"                  # a [[traffic]] entry of this (service, country) must exist
//! day = [21, 27]                  # day of the surge start, counted from start (0 = first day)
//! minute_of_day = [0, 1439]       # minute of that day (UTC) the surge starts at
//! level_15m = [15, 40]            # usual reports per 15 minutes at the surge; above 0
//! factor = [3, 5]                 # the surge's height over the level; above 1
//! duration_minutes = [30, 90]     # ramps included; above 2 · ramp_minutes
//! ramp_minutes = 5                # at least 1
//! [surge.cities]                  # optional; default the surging entry's cities
//!
//! [[traffic]]                     # the surging entry: no per_minute (it follows from level_15m)
//! service = "x"
//! country = "PK"
//! diurnal_amplitude = [0.2, 0.5]  # in 0..1 (below 1 for the surging entry); default [0, 0]
//! peak_hour_utc = [14, 18]        # in 0..24; default [0, 0]
//! weekend_factor = [0.85, 1.15]   # above 0; default [1, 1]
//! dispersion = [0.05, 0.2]        # negative binomial k, ≥ 0; default [0, 0]
//! [traffic.cities]                # fixed shares, as in a scenario
//! Lahore = 0.3
//!
//! [[traffic]]                     # an ordinary neighbour: per_minute drawn
//! service = "x"
//! country = "NG"
//! per_minute = [0.3, 1.0]
//! ```

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, Utc};
use figment::providers::{Format, Toml};
use figment::Figment;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::report::Problem;

use crate::checks::{city_shares, country, invalid, problem_mix, service, whole_minute};
use crate::model::{Scenario, ScenarioError, Surge, Traffic, MAX_DAYS};

/// The ChaCha8 stream the family's draws come from: far from the scenario's own streams (traffic
/// entries from 0, surges from 2³²), so they never share numbers with the reports drawn later.
pub const DRAW_STREAM: u64 = u64::MAX;

/// Minutes summed into the level: the detector's (and Downdetector's) 15-minute count.
const LEVEL_MINUTES: i64 = 15;

/// A validated family: fixed places and calendar, ranges for everything drawn.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    start: DateTime<Utc>,
    days: i64,
    surge: SurgeRanges,
    traffic: Vec<TrafficRanges>,
    /// Index in `traffic` of the surging (service, country).
    surging: usize,
}

/// One scenario of a family and what was drawn for its surge.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub seed: u64,
    pub scenario: Scenario,
    pub surge: DrawnSurge,
}

/// The surge of one drawn scenario, as the measurement scores it.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnSurge {
    pub service: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// Where the ramp starts (extra reports rise from zero here); latency is measured from it.
    pub start: DateTime<Utc>,
    /// Ramps included.
    pub duration_minutes: i64,
    /// The series' expected count over the 15 minutes from `start`, without the surge.
    pub level_15m: f64,
    /// The plateau's count over the level: extra reports per 15 minutes are `(factor − 1) · level`.
    pub factor: f64,
}

impl DrawnSurge {
    /// The end of the surge (exclusive): no extra reports from this minute on.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + Duration::minutes(self.duration_minutes)
    }

    /// Extra reports per 15 minutes on the plateau.
    pub fn extra_15m(&self) -> f64 {
        (self.factor - 1.0) * self.level_15m
    }
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyFile {
    name: String,
    start: DateTime<Utc>,
    days: i64,
    problems: BTreeMap<String, f64>,
    surge: SurgeFile,
    traffic: Vec<TrafficFile>,
}

/// `[surge]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurgeFile {
    service: String,
    country: String,
    day: [i64; 2],
    minute_of_day: [i64; 2],
    level_15m: [f64; 2],
    factor: [f64; 2],
    duration_minutes: [i64; 2],
    ramp_minutes: i64,
    cities: Option<BTreeMap<String, f64>>,
    problems: Option<BTreeMap<String, f64>>,
}

/// One `[[traffic]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficFile {
    service: String,
    country: String,
    per_minute: Option<[f64; 2]>,
    #[serde(default)]
    diurnal_amplitude: [f64; 2],
    #[serde(default)]
    peak_hour_utc: [f64; 2],
    #[serde(default = "ones")]
    weekend_factor: [f64; 2],
    #[serde(default)]
    dispersion: [f64; 2],
    #[serde(default)]
    cities: BTreeMap<String, f64>,
    problems: Option<BTreeMap<String, f64>>,
}

fn ones() -> [f64; 2] {
    [1.0, 1.0]
}

/// `[surge]`, validated.
#[derive(Debug, Clone)]
struct SurgeRanges {
    service: String,
    country: CountryCode,
    day: RangeInclusive<i64>,
    minute_of_day: RangeInclusive<i64>,
    level_15m: [f64; 2],
    factor: [f64; 2],
    duration_minutes: RangeInclusive<i64>,
    ramp_minutes: i64,
    /// `None`: the surging entry's cities.
    cities: Option<Vec<(String, f64)>>,
    problems: Vec<(Problem, f64)>,
}

/// One `[[traffic]]` entry, validated.
#[derive(Debug, Clone)]
struct TrafficRanges {
    service: String,
    country: CountryCode,
    /// `None` only for the surging entry.
    per_minute: Option<[f64; 2]>,
    diurnal_amplitude: [f64; 2],
    peak_hour_utc: [f64; 2],
    weekend_factor: [f64; 2],
    dispersion: [f64; 2],
    cities: Vec<(String, f64)>,
    problems: Vec<(Problem, f64)>,
}

impl Family {
    /// Parses and validates a family file; errors name the offending field.
    pub fn from_toml(text: &str) -> Result<Family, ScenarioError> {
        let file: FamilyFile = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ScenarioError::Parse(Box::new(e)))?;
        Family::try_from(file)
    }

    /// The family's title, e.g. `"low-count country surges"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Draws the scenario of `seed`: the same seed always gives the same scenario (see the module).
    pub fn draw(&self, seed: u64) -> Drawn {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(DRAW_STREAM);
        let s = &self.surge;
        let day = rng.gen_range(s.day.clone());
        let minute_of_day = rng.gen_range(s.minute_of_day.clone());
        let level_15m = between(&mut rng, s.level_15m);
        let factor = between(&mut rng, s.factor);
        let duration_minutes = rng.gen_range(s.duration_minutes.clone());
        let surge_start = self.start + Duration::minutes(day * 1440 + minute_of_day);

        let mut traffic: Vec<Traffic> = self
            .traffic
            .iter()
            .map(|t| Traffic {
                service: t.service.clone(),
                country: t.country,
                diurnal_amplitude: between(&mut rng, t.diurnal_amplitude),
                peak_hour_utc: between(&mut rng, t.peak_hour_utc),
                weekend_factor: between(&mut rng, t.weekend_factor),
                dispersion: between(&mut rng, t.dispersion),
                per_minute: t.per_minute.map_or(1.0, |range| between(&mut rng, range)),
                growth_per_day: 0.0,
                growth_start: self.start,
                reporter: None,
                cities: t.cities.clone(),
                problems: t.problems.clone(),
            })
            .collect();
        // With per_minute 1 the entry's expected 15-minute count is the scale to divide by;
        // validation keeps it positive (amplitude below 1, weekend factor above 0).
        let surging = &mut traffic[self.surging];
        let unit_15m: f64 = (0..LEVEL_MINUTES)
            .map(|m| surging.rate_at(surge_start + Duration::minutes(m)))
            .sum();
        surging.per_minute = level_15m / unit_15m;
        let cities = s.cities.clone().unwrap_or_else(|| surging.cities.clone());

        let extra_15m = (factor - 1.0) * level_15m;
        let ramp = Duration::minutes(s.ramp_minutes);
        let surge_end = surge_start + Duration::minutes(duration_minutes);
        let surge = Surge {
            service: s.service.clone(),
            country: s.country,
            points: vec![
                (surge_start, 0.0),
                (surge_start + ramp, extra_15m),
                (surge_end - ramp, extra_15m),
                (surge_end, 0.0),
            ],
            reporter: None,
            cities,
            problems: s.problems.clone(),
        };
        Drawn {
            seed,
            scenario: Scenario {
                name: format!("{}, seed {seed}", self.name),
                start: self.start,
                end: self.start + Duration::days(self.days),
                seed,
                traffic,
                surges: vec![surge],
            },
            surge: DrawnSurge {
                service: s.service.clone(),
                country: s.country.as_str().to_owned(),
                start: surge_start,
                duration_minutes,
                level_15m,
                factor,
            },
        }
    }
}

/// A real number drawn uniformly from `[low, high)` (exactly `low` when they are equal).
fn between(rng: &mut ChaCha8Rng, [low, high]: [f64; 2]) -> f64 {
    low + (high - low) * rng.gen::<f64>()
}

/// Checks a real range: finite ends in order, inside `allowed` (a description for the message).
fn real_range(
    field: &str,
    [low, high]: [f64; 2],
    allowed: impl Fn(f64) -> bool,
    allowed_text: &str,
) -> Result<[f64; 2], ScenarioError> {
    if !low.is_finite() || !high.is_finite() || low > high {
        return Err(invalid(
            field,
            format!("[{low}, {high}] is not a range [low, high] with low ≤ high"),
        ));
    }
    if !allowed(low) || !allowed(high) {
        return Err(invalid(
            field,
            format!("[{low}, {high}]: both ends must be {allowed_text}"),
        ));
    }
    Ok([low, high])
}

/// Checks an integer range: ends in order, inside `min..=max`.
fn integer_range(
    field: &str,
    [low, high]: [i64; 2],
    min: i64,
    max: i64,
) -> Result<RangeInclusive<i64>, ScenarioError> {
    if low > high {
        return Err(invalid(
            field,
            format!("[{low}, {high}] is not a range [low, high] with low ≤ high"),
        ));
    }
    if low < min || high > max {
        return Err(invalid(
            field,
            format!("[{low}, {high}]: both ends must be in {min}..={max}"),
        ));
    }
    Ok(low..=high)
}

impl TryFrom<FamilyFile> for Family {
    type Error = ScenarioError;

    fn try_from(file: FamilyFile) -> Result<Family, ScenarioError> {
        if file.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        whole_minute("start", file.start)?;
        if !(1..=MAX_DAYS).contains(&file.days) {
            return Err(invalid("days", format!("must be in 1..={MAX_DAYS}")));
        }
        let problems = problem_mix("problems", &file.problems)?;

        let mut traffic = Vec::with_capacity(file.traffic.len());
        for (i, t) in file.traffic.iter().enumerate() {
            let at = |name: &str| format!("traffic[{i}].{name}");
            let service = service(&at("service"), &t.service)?;
            let country = country(&at("country"), &t.country)?;
            let per_minute = t
                .per_minute
                .map(|range| real_range(&at("per_minute"), range, |v| v >= 0.0, "≥ 0"))
                .transpose()?;
            traffic.push(TrafficRanges {
                service,
                country,
                per_minute,
                diurnal_amplitude: real_range(
                    &at("diurnal_amplitude"),
                    t.diurnal_amplitude,
                    |v| (0.0..=1.0).contains(&v),
                    "in 0..=1",
                )?,
                peak_hour_utc: real_range(
                    &at("peak_hour_utc"),
                    t.peak_hour_utc,
                    |v| (0.0..24.0).contains(&v),
                    "in 0..24",
                )?,
                weekend_factor: real_range(
                    &at("weekend_factor"),
                    t.weekend_factor,
                    |v| v > 0.0,
                    "above 0",
                )?,
                dispersion: real_range(&at("dispersion"), t.dispersion, |v| v >= 0.0, "≥ 0")?,
                cities: city_shares(&at("cities"), country, &t.cities)?,
                problems: match &t.problems {
                    Some(mix) => problem_mix(&at("problems"), mix)?,
                    None => problems.clone(),
                },
            });
        }

        let s = &file.surge;
        let surge_service = service("surge.service", &s.service)?;
        let surge_country = country("surge.country", &s.country)?;
        let ramp_minutes = s.ramp_minutes;
        if !(1..=1440).contains(&ramp_minutes) {
            return Err(invalid("surge.ramp_minutes", "must be in 1..=1440"));
        }
        let day = integer_range("surge.day", s.day, 0, file.days - 1)?;
        let minute_of_day = integer_range("surge.minute_of_day", s.minute_of_day, 0, 1439)?;
        let duration_minutes = integer_range(
            "surge.duration_minutes",
            s.duration_minutes,
            2 * ramp_minutes + 1,
            1440 * file.days,
        )?;
        let latest_end = day.end() * 1440 + minute_of_day.end() + duration_minutes.end();
        if latest_end > 1440 * file.days {
            return Err(invalid(
                "surge.day",
                format!(
                    "the latest surge (day {}, minute {}, {} minutes) would end after the \
                     scenario's {} days",
                    day.end(),
                    minute_of_day.end(),
                    duration_minutes.end(),
                    file.days
                ),
            ));
        }
        let surging = traffic
            .iter()
            .position(|t| t.service == surge_service && t.country == surge_country)
            .ok_or_else(|| {
                invalid(
                    "surge",
                    format!(
                        "no [[traffic]] entry for {surge_service} in {surge_country}: the \
                         surging series needs its ordinary traffic"
                    ),
                )
            })?;
        for (i, t) in traffic.iter().enumerate() {
            match (i == surging, t.per_minute) {
                (true, Some(_)) => {
                    return Err(invalid(
                        format!("traffic[{i}].per_minute"),
                        "the surging entry's rate follows from surge.level_15m: leave it out",
                    ))
                }
                (false, None) => {
                    return Err(invalid(format!("traffic[{i}].per_minute"), "is required"))
                }
                _ => {}
            }
        }
        if traffic[surging].diurnal_amplitude[1] >= 1.0 {
            return Err(invalid(
                format!("traffic[{surging}].diurnal_amplitude"),
                "must stay below 1 for the surging entry (its level must not fall on a zero rate)",
            ));
        }
        let cities = s
            .cities
            .as_ref()
            .map(|shares| city_shares("surge.cities", surge_country, shares))
            .transpose()?;
        let surge = SurgeRanges {
            service: surge_service,
            country: surge_country,
            day,
            minute_of_day,
            level_15m: real_range("surge.level_15m", s.level_15m, |v| v > 0.0, "above 0")?,
            factor: real_range("surge.factor", s.factor, |v| v > 1.0, "above 1")?,
            duration_minutes,
            ramp_minutes,
            cities,
            problems: match &s.problems {
                Some(mix) => problem_mix("surge.problems", mix)?,
                None => problems.clone(),
            },
        };
        Ok(Family {
            name: file.name,
            start: file.start,
            days: file.days,
            surge,
            traffic,
            surging,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{generate, write_csv};

    /// A small family: two days, a surge on the second, one neighbour.
    const SMALL: &str = r#"
        name = "small"
        start = "2025-03-07T00:00:00Z"
        days = 2
        [problems]
        app = 1

        [surge]
        service = "x"
        country = "PK"
        day = [1, 1]
        minute_of_day = [600, 700]
        level_15m = [15, 40]
        factor = [3, 5]
        duration_minutes = [30, 90]
        ramp_minutes = 5

        [[traffic]]
        service = "x"
        country = "PK"
        diurnal_amplitude = [0.2, 0.5]
        peak_hour_utc = [14, 18]
        weekend_factor = [0.8, 1.2]
        dispersion = [0.05, 0.2]
        [traffic.cities]
        Lahore = 0.4

        [[traffic]]
        service = "youtube"
        country = "NG"
        per_minute = [0.5, 1.0]
        [traffic.cities]
        Lagos = 0.3
    "#;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn field_of(text: &str) -> String {
        match Family::from_toml(text) {
            Err(ScenarioError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    fn csv_of(scenario: &Scenario) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let rows = write_csv(scenario, &mut out).unwrap();
        (out, rows)
    }

    #[test]
    fn seed_1_draws_fixed_values_within_the_ranges() {
        let drawn = Family::from_toml(SMALL).unwrap().draw(1);
        assert_eq!(drawn.seed, 1);
        assert_eq!(drawn.scenario.name(), "small, seed 1");
        assert_eq!(drawn.scenario.start(), at("2025-03-07T00:00:00Z"));
        assert_eq!(drawn.scenario.end(), at("2025-03-09T00:00:00Z"));
        assert_eq!(
            drawn.surge,
            DrawnSurge {
                service: "x".into(),
                country: "PK".into(),
                // Day 1 is Saturday 8 March; minute 694 of it is 11:34.
                start: at("2025-03-08T11:34:00Z"),
                duration_minutes: 69,
                level_15m: 35.66447884758295,
                factor: 4.904809923056492,
            }
        );
        assert_eq!(drawn.surge.end(), at("2025-03-08T12:43:00Z"));
        let pk = &drawn.scenario.traffic[0];
        assert_eq!(
            (
                pk.diurnal_amplitude,
                pk.peak_hour_utc,
                pk.weekend_factor,
                pk.dispersion
            ),
            (
                0.42748608754960415,
                14.822934811957767,
                1.1684742075230297,
                0.16444549477474069
            )
        );
        // Solved from the level: 1.652 × Saturday 1.115 × diurnal 1.29 ≈ 2.378 a minute at 11:34.
        assert_eq!(pk.per_minute, 1.6520512606070026);
        let ng = &drawn.scenario.traffic[1];
        assert_eq!(ng.per_minute, 0.9961898647393366);
        assert_eq!(
            (ng.diurnal_amplitude, ng.weekend_factor, ng.dispersion),
            (0.0, 1.0, 0.0)
        );
        // Extra (4.905 − 1) × 35.66 = 139.26 per 15 minutes, with 5-minute ramps.
        let extra = 139.26301090468024;
        assert_eq!(
            drawn.scenario.surges[0].points,
            [
                (at("2025-03-08T11:34:00Z"), 0.0),
                (at("2025-03-08T11:39:00Z"), extra),
                (at("2025-03-08T12:38:00Z"), extra),
                (at("2025-03-08T12:43:00Z"), 0.0),
            ]
        );
        assert_eq!(drawn.surge.extra_15m(), extra);
        // The surge's cities default to the surging entry's.
        assert_eq!(
            drawn.scenario.surges[0].cities,
            [("Lahore".to_owned(), 0.4)]
        );
    }

    #[test]
    fn the_level_is_the_surging_series_expected_15_minutes_at_the_surge_start() {
        let family = Family::from_toml(SMALL).unwrap();
        for seed in 1..=50 {
            let drawn = family.draw(seed);
            let surge = &drawn.surge;
            let traffic = &drawn.scenario.traffic[0];
            let usual: f64 = (0..15)
                .map(|m| traffic.rate_at(surge.start + Duration::minutes(m)))
                .sum();
            assert!((usual - surge.level_15m).abs() < 1e-9, "seed {seed}");
            assert!((15.0..40.0).contains(&surge.level_15m), "seed {seed}");
            assert!((3.0..5.0).contains(&surge.factor), "seed {seed}");
            assert!((30..=90).contains(&surge.duration_minutes), "seed {seed}");
            let minute = surge.start - at("2025-03-08T00:00:00Z");
            assert!((600..=700).contains(&minute.num_minutes()), "seed {seed}");
            // On the plateau the series expects the usual rate plus extra / 15 a minute.
            let plateau = surge.start + Duration::minutes(10);
            let expected = drawn.scenario.expected_per_minute("x", "PK", None, plateau);
            let usual_then = traffic.rate_at(plateau);
            assert!((expected - usual_then - surge.extra_15m() / 15.0).abs() < 1e-9);
            assert_eq!(
                drawn
                    .scenario
                    .expected_per_minute("x", "PK", None, surge.end())
                    - traffic.rate_at(surge.end()),
                0.0
            );
        }
    }

    #[test]
    fn one_seed_always_gives_the_same_bytes_and_another_seed_others() {
        let family = Family::from_toml(SMALL).unwrap();
        let (first, rows) = csv_of(&family.draw(1).scenario);
        assert_eq!(rows, 8444);
        assert_eq!(
            blake3::hash(&first).to_hex().as_str(),
            "45cf6198e9ed32889e3388f8f00b59766af47283ad01c322817b35ddbad41962"
        );
        assert_eq!(csv_of(&family.draw(1).scenario), (first.clone(), rows));
        let (other, _) = csv_of(&family.draw(2).scenario);
        assert_ne!(other, first);
        let mut surge_rows = 0;
        generate(&family.draw(1).scenario, |row| {
            assert!(row.service == "x" || row.service == "youtube");
            surge_rows += usize::from(row.country == "PK");
        });
        assert!(surge_rows > 4000, "{surge_rows}");
    }

    #[test]
    fn family_errors_name_the_field() {
        let cases = [
            ("days = 2", "days = 0", "days"),
            ("factor = [3, 5]", "factor = [1, 5]", "surge.factor"),
            ("factor = [3, 5]", "factor = [5, 3]", "surge.factor"),
            (
                "level_15m = [15, 40]",
                "level_15m = [0, 40]",
                "surge.level_15m",
            ),
            ("day = [1, 1]", "day = [1, 2]", "surge.day"),
            (
                "minute_of_day = [600, 700]",
                "minute_of_day = [600, 1440]",
                "surge.minute_of_day",
            ),
            (
                "duration_minutes = [30, 90]",
                "duration_minutes = [10, 90]",
                "surge.duration_minutes",
            ),
            ("ramp_minutes = 5", "ramp_minutes = 0", "surge.ramp_minutes"),
            (
                "country = \"PK\"\n        day",
                "country = \"BD\"\n        day",
                "surge",
            ),
            (
                "diurnal_amplitude = [0.2, 0.5]",
                "diurnal_amplitude = [0.2, 1]",
                "traffic[0].diurnal_amplitude",
            ),
            (
                "peak_hour_utc = [14, 18]",
                "peak_hour_utc = [14, 24]",
                "traffic[0].peak_hour_utc",
            ),
            (
                "weekend_factor = [0.8, 1.2]",
                "weekend_factor = [0, 1.2]",
                "traffic[0].weekend_factor",
            ),
            (
                "dispersion = [0.05, 0.2]",
                "dispersion = [-0.05, 0.2]",
                "traffic[0].dispersion",
            ),
            (
                "dispersion = [0.05, 0.2]",
                "dispersion = [0.05, 0.2]\n        per_minute = [1, 2]",
                "traffic[0].per_minute",
            ),
            (
                "per_minute = [0.5, 1.0]",
                "per_minute = [-0.5, 1.0]",
                "traffic[1].per_minute",
            ),
            ("per_minute = [0.5, 1.0]\n", "", "traffic[1].per_minute"),
            (
                "Lagos = 0.3",
                "Lagoss = 0.3",
                "traffic[1].cities.\"Lagoss\"",
            ),
            ("country = \"NG\"", "country = \"XX\"", "traffic[1].country"),
            ("app = 1", "app = 1\n        ouch = 1", "problems.ouch"),
        ];
        for (from, to, field) in cases {
            assert!(SMALL.contains(from), "{from}");
            assert_eq!(field_of(&SMALL.replacen(from, to, 1)), field, "{to}");
        }
    }

    #[test]
    fn unknown_and_missing_keys_are_refused_by_name() {
        let parse_error = |text: &str| match Family::from_toml(text) {
            Err(ScenarioError::Parse(e)) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        };
        let unknown = SMALL.replace("ramp_minutes = 5", "ramp_minutes = 5\n        ramp = 5");
        assert!(parse_error(&unknown).contains("ramp"), "{unknown}");
        let missing = SMALL.replace("factor = [3, 5]", "");
        assert!(parse_error(&missing).contains("factor"));
        let one_number = SMALL.replace("factor = [3, 5]", "factor = 4");
        assert!(parse_error(&one_number).contains("factor"));
    }

    #[test]
    fn the_shipped_low_count_family_draws_its_stated_ranges_with_catalog_services() {
        let family =
            Family::from_toml(include_str!("../../../tests/scenarios/low-count.toml")).unwrap();
        assert_eq!(family.name(), "low-count country surges");
        let settings = outagewatch::config::Settings::from_toml(&[]).unwrap();
        let catalog: Vec<&str> = settings.services.iter().map(|s| s.slug.as_str()).collect();
        let start = at("2025-02-03T00:00:00Z");
        for seed in 1..=40 {
            let drawn = family.draw(seed);
            let surge = &drawn.surge;
            assert_eq!(
                (surge.service.as_str(), surge.country.as_str()),
                ("x", "PK")
            );
            assert!((15.0..40.0).contains(&surge.level_15m), "seed {seed}");
            assert!((3.0..5.0).contains(&surge.factor), "seed {seed}");
            assert!((30..=90).contains(&surge.duration_minutes), "seed {seed}");
            // After three ordinary weeks, in the fourth, and over a day before the end.
            let day = (surge.start - start).num_days();
            assert!((21..=27).contains(&day), "seed {seed}: day {day}");
            assert!(surge.end() <= drawn.scenario.end() - Duration::hours(22));
            for t in &drawn.scenario.traffic {
                assert!(catalog.contains(&t.service.as_str()), "{}", t.service);
                assert!((0.05..0.2).contains(&t.dispersion), "seed {seed}");
                assert!(!t.cities.is_empty());
            }
        }
    }

    #[test]
    fn the_busy_global_variant_draws_what_the_low_count_family_draws_plus_x_in_the_us() {
        let low =
            Family::from_toml(include_str!("../../../tests/scenarios/low-count.toml")).unwrap();
        let busy = Family::from_toml(include_str!(
            "../../../tests/scenarios/low-count-busy-global.toml"
        ))
        .unwrap();
        for seed in 1..=40 {
            let (a, b) = (low.draw(seed), busy.draw(seed));
            assert_eq!(a.surge, b.surge, "seed {seed}");
            assert_eq!(b.scenario.traffic.len(), a.scenario.traffic.len() + 1);
            for (x, y) in a.scenario.traffic.iter().zip(&b.scenario.traffic) {
                assert_eq!(format!("{x:?}"), format!("{y:?}"), "seed {seed}");
            }
            assert_eq!(
                format!("{:?}", a.scenario.surges),
                format!("{:?}", b.scenario.surges)
            );
            let us = b.scenario.traffic.last().unwrap();
            assert_eq!((us.service.as_str(), us.country.as_str()), ("x", "US"));
            assert!((15.0..25.0).contains(&us.per_minute), "seed {seed}");
        }
    }
}
