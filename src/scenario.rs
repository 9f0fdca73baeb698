//! Deterministic report scenarios: a TOML description of ordinary traffic and surges, turned into the CSV rows `outagewatch import` reads, so detection tests start from realistic data.
//!
//! A scenario is pure data plus a seed: the same file always yields the same bytes. Time is
//! generated minute by minute from `start` (inclusive) to `end` (exclusive); each `[[traffic]]`
//! and `[[surge]]` entry draws its count for the minute from its own random stream (ChaCha8 with
//! the scenario seed, stream = the entry's index), so adding or editing one entry never changes
//! the draws of another. Each report gets a uniform second within its minute, a city by the
//! entry's city shares (the rest are country-level) and a problem by its mix; rows of one minute
//! are ordered by second, then by entry order. A [`family`] file draws scenarios from ranges
//! and an integer seed, for measuring the detector on many variations of one kind of surge.
//!
//! # Schema
//!
//! ```toml
//! name = "X, 10 March 2025"
//! start = "2025-02-10T00:00:00Z"  # first minute (RFC 3339, whole minute)
//! end = "2025-03-11T06:00:00Z"    # exclusive; at most 366 days after start
//! seed = 20250310
//!
//! [problems]                      # default problem mix: shares of the six kinds, normalised
//! app = 0.5
//! website = 0.3
//! login = 0.1
//! server_connection = 0.1
//!
//! [[traffic]]                     # ordinary traffic of one (service, country)
//! service = "x"
//! country = "US"
//! per_minute = 1.5                # mean reports per minute over a week (before growth)
//! diurnal_amplitude = 0.5         # 0..=1: rate × (1 + a·cos(2π(hour − peak)/24)); default 0
//! peak_hour_utc = 0               # 0..24, fractional allowed; default 0
//! weekend_factor = 0.85           # Saturday and Sunday (UTC) relative to weekdays; default 1
//! dispersion = 0.1                # negative binomial k: var = m + k·m² (0 = Poisson); default 0
//! growth_per_day = 0.0            # rate × (1 + g)^(days since growth_start); default 0
//! growth_start = "..."            # when growth begins; default start
//! reporter = "..."                # every row from this one reporter; default a fresh one per row
//! [traffic.cities]                # share of reports naming each city (canonical gazetteer name);
//! "New York City" = 0.2           # shares sum to at most 1, the rest name no city
//! [traffic.problems]              # optional override of the default mix
//!
//! [[surge]]                       # extra reports on top of the traffic
//! service = "x"
//! country = "PK"
//! # Piecewise-linear target of extra reports PER 15 MINUTES, [time, value] with strictly
//! # increasing times inside [start, end]; zero before the first point and from the last point on.
//! # The extra mean per minute at minute t is value(t) / 15; counts are Poisson.
//! points = [["2025-03-10T09:45:00Z", 0], ["2025-03-10T10:08:00Z", 74], ["2025-03-10T19:45:00Z", 0]]
//! reporter = "..."                # optional single reporter
//! [surge.cities]                  # optional; default the cities of the first traffic entry of
//! Lahore = 0.4                    # the same (service, country), else none
//! [surge.problems]                # optional override of the default mix
//! ```
//!
//! Rows without a fixed reporter are from reporters `r0`, `r1`, … (the row's index in the
//! output), so every one of them is counted by the importer's per-reporter dedup; a fixed
//! reporter may not look like one of those. The weekday and the hour are taken in UTC.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::io;

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Timelike, Utc, Weekday};
use figment::providers::{Format, Toml};
use figment::Figment;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Poisson};
use serde::Deserialize;

use crate::geo::{gazetteer, CityError, CountryCode};
use crate::report::Problem;

pub mod family;
pub use family::{Drawn, DrawnSurge, Family};

/// The CSV header `outagewatch import` expects, in column order.
pub const CSV_HEADER: [&str; 6] = [
    "received_at",
    "service",
    "country",
    "city",
    "problem",
    "reporter",
];

/// Longest scenario accepted, in days: a typo in a year should fail, not generate for hours.
const MAX_DAYS: i64 = 366;

/// Random stream of the first surge; traffic entries use streams `0..`.
const SURGE_STREAM_BASE: u64 = 1 << 32;

/// Slack for shares that should sum to at most 1 but were written as decimals.
const SHARE_EPSILON: f64 = 1e-9;

/// A validated scenario: what traffic and surges to generate, over which minutes, from which seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ScenarioFile")]
pub struct Scenario {
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    seed: u64,
    traffic: Vec<Traffic>,
    surges: Vec<Surge>,
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not TOML, or not the schema: an unknown key, a missing one, or a value of the wrong type.
    #[error("scenario: {0}")]
    Parse(Box<figment::Error>),
    /// A value out of range or inconsistent; `field` is its path, e.g. `surge[0].points[2]`.
    #[error("scenario: {field}: {message}")]
    Invalid { field: String, message: String },
}

/// One generated report, in the import CSV's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRow {
    pub received_at: DateTime<Utc>,
    pub service: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// A canonical gazetteer name, or `None` for a country-level report.
    pub city: Option<String>,
    /// The wire name, e.g. `"server_connection"`.
    pub problem: &'static str,
    pub reporter: String,
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    seed: u64,
    problems: BTreeMap<String, f64>,
    #[serde(default)]
    traffic: Vec<TrafficFile>,
    #[serde(default)]
    surge: Vec<SurgeFile>,
}

/// One `[[traffic]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficFile {
    service: String,
    country: String,
    per_minute: f64,
    #[serde(default)]
    diurnal_amplitude: f64,
    #[serde(default)]
    peak_hour_utc: f64,
    #[serde(default = "one")]
    weekend_factor: f64,
    #[serde(default)]
    dispersion: f64,
    #[serde(default)]
    growth_per_day: f64,
    growth_start: Option<DateTime<Utc>>,
    reporter: Option<String>,
    #[serde(default)]
    cities: BTreeMap<String, f64>,
    problems: Option<BTreeMap<String, f64>>,
}

/// One `[[surge]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurgeFile {
    service: String,
    country: String,
    points: Vec<(DateTime<Utc>, f64)>,
    reporter: Option<String>,
    cities: Option<BTreeMap<String, f64>>,
    problems: Option<BTreeMap<String, f64>>,
}

fn one() -> f64 {
    1.0
}

/// Ordinary traffic of one (service, country), validated.
#[derive(Debug, Clone)]
struct Traffic {
    service: String,
    country: CountryCode,
    per_minute: f64,
    diurnal_amplitude: f64,
    peak_hour_utc: f64,
    weekend_factor: f64,
    dispersion: f64,
    growth_per_day: f64,
    growth_start: DateTime<Utc>,
    reporter: Option<String>,
    cities: Vec<(String, f64)>,
    problems: Vec<(Problem, f64)>,
}

/// Extra reports of one (service, country), validated; cities already defaulted from the traffic.
#[derive(Debug, Clone)]
struct Surge {
    service: String,
    country: CountryCode,
    points: Vec<(DateTime<Utc>, f64)>,
    reporter: Option<String>,
    cities: Vec<(String, f64)>,
    problems: Vec<(Problem, f64)>,
}

impl Scenario {
    /// Parses and validates a scenario file; errors name the offending field.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ScenarioError::Parse(Box::new(e)))?;
        Scenario::try_from(file)
    }

    /// The scenario's title, e.g. `"X, 10 March 2025"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first generated minute.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The end of the last generated minute (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The mean number of reports in the minute starting at `minute`, traffic and surges together.
    ///
    /// `city: None` counts every report of the country (with a city or without); `Some` counts
    /// only reports naming that city. Zero outside the scenario or for a series it does not have.
    pub fn expected_per_minute(
        &self,
        service: &str,
        country: &str,
        city: Option<&str>,
        minute: DateTime<Utc>,
    ) -> f64 {
        if minute < self.start || minute >= self.end {
            return 0.0;
        }
        let matches =
            |s: &str, c: CountryCode| s == service && c.as_str().eq_ignore_ascii_case(country);
        let share = |cities: &[(String, f64)]| match city {
            None => 1.0,
            Some(name) => cities
                .iter()
                .find(|(c, _)| c == name)
                .map_or(0.0, |(_, share)| *share),
        };
        let traffic: f64 = self
            .traffic
            .iter()
            .filter(|t| matches(&t.service, t.country))
            .map(|t| t.rate_at(minute) * share(&t.cities))
            .sum();
        let surges: f64 = self
            .surges
            .iter()
            .filter(|s| matches(&s.service, s.country))
            .map(|s| target_15m(&s.points, minute) / 15.0 * share(&s.cities))
            .sum();
        traffic + surges
    }
}

impl TryFrom<ScenarioFile> for Scenario {
    type Error = ScenarioError;

    fn try_from(file: ScenarioFile) -> Result<Scenario, ScenarioError> {
        if file.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        whole_minute("start", file.start)?;
        whole_minute("end", file.end)?;
        if file.end <= file.start {
            return Err(invalid(
                "end",
                format!("{} is not after start {}", file.end, file.start),
            ));
        }
        if file.end - file.start > Duration::days(MAX_DAYS) {
            return Err(invalid(
                "end",
                format!("the scenario spans more than {MAX_DAYS} days"),
            ));
        }
        let problems = problem_mix("problems", &file.problems)?;
        let within = |field: &str, at: DateTime<Utc>| {
            if at < file.start || at > file.end {
                Err(invalid(
                    field,
                    format!(
                        "{at} is outside the scenario ({} to {})",
                        file.start, file.end
                    ),
                ))
            } else {
                Ok(())
            }
        };

        let mut traffic = Vec::with_capacity(file.traffic.len());
        for (i, t) in file.traffic.iter().enumerate() {
            let at = |name: &str| format!("traffic[{i}].{name}");
            let service = service(&at("service"), &t.service)?;
            let country = country(&at("country"), &t.country)?;
            non_negative(&at("per_minute"), t.per_minute)?;
            non_negative(&at("diurnal_amplitude"), t.diurnal_amplitude)?;
            if t.diurnal_amplitude > 1.0 {
                return Err(invalid(
                    at("diurnal_amplitude"),
                    "must be at most 1 (a larger one makes the rate negative at night)",
                ));
            }
            if !(0.0..24.0).contains(&t.peak_hour_utc) {
                return Err(invalid(at("peak_hour_utc"), "must be in 0..24"));
            }
            non_negative(&at("weekend_factor"), t.weekend_factor)?;
            non_negative(&at("dispersion"), t.dispersion)?;
            if !t.growth_per_day.is_finite() || t.growth_per_day <= -1.0 {
                return Err(invalid(at("growth_per_day"), "must be a number above -1"));
            }
            let growth_start = t.growth_start.unwrap_or(file.start);
            within(&at("growth_start"), growth_start)?;
            let reporter = reporter(&at("reporter"), t.reporter.as_deref())?;
            let cities = city_shares(&at("cities"), country, &t.cities)?;
            let problems = match &t.problems {
                Some(mix) => problem_mix(&at("problems"), mix)?,
                None => problems.clone(),
            };
            traffic.push(Traffic {
                service,
                country,
                per_minute: t.per_minute,
                diurnal_amplitude: t.diurnal_amplitude,
                peak_hour_utc: t.peak_hour_utc,
                weekend_factor: t.weekend_factor,
                dispersion: t.dispersion,
                growth_per_day: t.growth_per_day,
                growth_start,
                reporter,
                cities,
                problems,
            });
        }

        let mut surges = Vec::with_capacity(file.surge.len());
        for (i, s) in file.surge.iter().enumerate() {
            let at = |name: &str| format!("surge[{i}].{name}");
            let service = service(&at("service"), &s.service)?;
            let country = country(&at("country"), &s.country)?;
            if s.points.len() < 2 {
                return Err(invalid(
                    at("points"),
                    "needs at least two [time, value] points",
                ));
            }
            for (j, (time, value)) in s.points.iter().enumerate() {
                let field = format!("surge[{i}].points[{j}]");
                within(&field, *time)?;
                non_negative(&field, *value)?;
                if j > 0 && *time <= s.points[j - 1].0 {
                    return Err(invalid(
                        field,
                        format!(
                            "{time} is not after the previous point ({}): points go in time order",
                            s.points[j - 1].0
                        ),
                    ));
                }
            }
            let reporter = reporter(&at("reporter"), s.reporter.as_deref())?;
            let cities = match &s.cities {
                Some(shares) => city_shares(&at("cities"), country, shares)?,
                None => traffic
                    .iter()
                    .find(|t| t.service == service && t.country == country)
                    .map(|t| t.cities.clone())
                    .unwrap_or_default(),
            };
            let problems = match &s.problems {
                Some(mix) => problem_mix(&at("problems"), mix)?,
                None => problems.clone(),
            };
            surges.push(Surge {
                service,
                country,
                points: s.points.clone(),
                reporter,
                cities,
                problems,
            });
        }

        Ok(Scenario {
            name: file.name,
            start: file.start,
            end: file.end,
            seed: file.seed,
            traffic,
            surges,
        })
    }
}

impl Traffic {
    /// The mean reports per minute at `minute`: weekly mean × weekday × time of day × growth.
    fn rate_at(&self, minute: DateTime<Utc>) -> f64 {
        // Normalised so the mean over a whole week is `per_minute`.
        let week = 5.0 + 2.0 * self.weekend_factor;
        let day = if matches!(minute.weekday(), Weekday::Sat | Weekday::Sun) {
            7.0 * self.weekend_factor / week
        } else {
            7.0 / week
        };
        let hour = f64::from(minute.num_seconds_from_midnight()) / 3600.0;
        let diurnal =
            1.0 + self.diurnal_amplitude * (2.0 * PI * (hour - self.peak_hour_utc) / 24.0).cos();
        let days_grown = (minute - self.growth_start).num_minutes().max(0) as f64 / 1440.0;
        let growth = (1.0 + self.growth_per_day).powf(days_grown);
        (self.per_minute * day * diurnal * growth).max(0.0)
    }
}

/// The surge's target in reports per 15 minutes at `at`: linear between points, zero before
/// the first and from the last on.
fn target_15m(points: &[(DateTime<Utc>, f64)], at: DateTime<Utc>) -> f64 {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return 0.0;
    };
    if at < first.0 || at >= last.0 {
        return 0.0;
    }
    // `first.0 <= at < last.0`, so there is a point at or before `at` and one after it.
    let after = points.partition_point(|(time, _)| *time <= at);
    let (t0, v0) = points[after - 1];
    let (t1, v1) = points[after];
    let fraction = (at - t0).num_milliseconds() as f64 / (t1 - t0).num_milliseconds() as f64;
    v0 + (v1 - v0) * fraction
}

/// Every row of the scenario in time order, handed to `each` one at a time.
pub fn generate(scenario: &Scenario, mut each: impl FnMut(&ScenarioRow)) {
    let never: Result<(), std::convert::Infallible> = try_generate(scenario, |row| {
        each(row);
        Ok(())
    });
    match never {
        Ok(()) => {}
        Err(infallible) => match infallible {},
    }
}

/// Writes the import CSV (header, then every row) and returns the number of rows.
pub fn write_csv(scenario: &Scenario, out: impl io::Write) -> io::Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_HEADER)?;
    let mut rows = 0u64;
    try_generate(scenario, |row| {
        let received_at = row.received_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        writer.write_record([
            received_at.as_str(),
            &row.service,
            &row.country,
            row.city.as_deref().unwrap_or(""),
            row.problem,
            &row.reporter,
        ])?;
        rows += 1;
        Ok::<(), csv::Error>(())
    })?;
    writer.flush()?;
    Ok(rows)
}

/// One entry's random stream and what its rows carry.
struct Stream<'a> {
    rate: Rate<'a>,
    service: &'a str,
    country: &'a str,
    cities: &'a [(String, f64)],
    problems: &'a [(Problem, f64)],
    reporter: Option<&'a str>,
    rng: ChaCha8Rng,
}

/// Where a stream's mean per minute comes from.
enum Rate<'a> {
    Traffic(&'a Traffic),
    Surge(&'a Surge),
}

impl Stream<'_> {
    /// Draws how many reports this entry has in the minute starting at `minute`.
    fn count(&mut self, minute: DateTime<Utc>) -> u64 {
        let (mean, dispersion) = match self.rate {
            Rate::Traffic(t) => (t.rate_at(minute), t.dispersion),
            Rate::Surge(s) => (target_15m(&s.points, minute) / 15.0, 0.0),
        };
        if mean <= 0.0 {
            return 0;
        }
        // Negative binomial as a Gamma–Poisson mixture: mean m, variance m + k·m².
        let lambda = if dispersion > 0.0 {
            Gamma::new(1.0 / dispersion, dispersion * mean).map_or(0.0, |g| g.sample(&mut self.rng))
        } else {
            mean
        };
        Poisson::new(lambda).map_or(0, |p| p.sample(&mut self.rng) as u64)
    }

    /// Picks the index of a city by its share, or `None` for a country-level report.
    fn city(&mut self) -> Option<usize> {
        if self.cities.is_empty() {
            return None;
        }
        pick(self.cities.iter().map(|(_, share)| *share), self.rng.gen())
    }

    /// Picks a problem by the mix (normalised, so the last kind takes any rounding slack).
    fn problem(&mut self) -> Problem {
        let u: f64 = self.rng.gen();
        let index = pick(self.problems.iter().map(|(_, share)| *share), u);
        let (problem, _) = index
            .or(self.problems.len().checked_sub(1))
            .and_then(|i| self.problems.get(i))
            .copied()
            .unwrap_or((Problem::Other, 1.0));
        problem
    }
}

/// The index whose cumulative share first exceeds `u` (in `0..1`), if any.
fn pick(shares: impl Iterator<Item = f64>, u: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    for (i, share) in shares.enumerate() {
        cumulative += share;
        if u < cumulative {
            return Some(i);
        }
    }
    None
}

/// One report drawn for the current minute, before ordering.
struct Pending {
    second: u32,
    stream: usize,
    city: Option<usize>,
    problem: Problem,
}

/// [`generate`] with a callback that can stop the run by returning an error.
fn try_generate<E>(
    scenario: &Scenario,
    mut each: impl FnMut(&ScenarioRow) -> Result<(), E>,
) -> Result<(), E> {
    let stream = |index: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
        rng.set_stream(index);
        rng
    };
    let mut streams: Vec<Stream<'_>> = scenario
        .traffic
        .iter()
        .enumerate()
        .map(|(i, t)| Stream {
            rate: Rate::Traffic(t),
            service: &t.service,
            country: t.country.as_str(),
            cities: &t.cities,
            problems: &t.problems,
            reporter: t.reporter.as_deref(),
            rng: stream(i as u64),
        })
        .chain(scenario.surges.iter().enumerate().map(|(i, s)| Stream {
            rate: Rate::Surge(s),
            service: &s.service,
            country: s.country.as_str(),
            cities: &s.cities,
            problems: &s.problems,
            reporter: s.reporter.as_deref(),
            rng: stream(SURGE_STREAM_BASE + i as u64),
        }))
        .collect();

    let minutes = (scenario.end - scenario.start).num_minutes();
    let mut pending: Vec<Pending> = Vec::new();
    let mut index = 0u64;
    for m in 0..minutes {
        let minute = scenario.start + Duration::minutes(m);
        pending.clear();
        for (s, stream) in streams.iter_mut().enumerate() {
            for _ in 0..stream.count(minute) {
                pending.push(Pending {
                    second: stream.rng.gen_range(0..60),
                    stream: s,
                    city: stream.city(),
                    problem: stream.problem(),
                });
            }
        }
        // Stable, so reports of the same second keep entry order.
        pending.sort_by_key(|p| p.second);
        for p in &pending {
            let stream = &streams[p.stream];
            let row = ScenarioRow {
                received_at: minute + Duration::seconds(i64::from(p.second)),
                service: stream.service.to_owned(),
                country: stream.country.to_owned(),
                city: p.city.map(|c| stream.cities[c].0.clone()),
                problem: p.problem.as_str(),
                reporter: match stream.reporter {
                    Some(reporter) => reporter.to_owned(),
                    None => format!("r{index}"),
                },
            };
            each(&row)?;
            index += 1;
        }
    }
    Ok(())
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn whole_minute(field: &str, at: DateTime<Utc>) -> Result<(), ScenarioError> {
    if at.second() != 0 || at.nanosecond() != 0 {
        return Err(invalid(field, format!("{at} is not on a whole minute")));
    }
    Ok(())
}

fn non_negative(field: &str, value: f64) -> Result<(), ScenarioError> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(field, format!("{value} is not a number ≥ 0")));
    }
    Ok(())
}

fn service(field: &str, slug: &str) -> Result<String, ScenarioError> {
    let valid = !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(invalid(
            field,
            format!("\"{slug}\" is not a catalog slug (lower-case letters, digits, - and _)"),
        ));
    }
    Ok(slug.to_owned())
}

fn country(field: &str, code: &str) -> Result<CountryCode, ScenarioError> {
    CountryCode::parse(code).map_err(|e| invalid(field, e.to_string()))
}

fn reporter(field: &str, reporter: Option<&str>) -> Result<Option<String>, ScenarioError> {
    let Some(reporter) = reporter else {
        return Ok(None);
    };
    if reporter.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let generated = reporter.len() > 1
        && reporter.starts_with('r')
        && reporter[1..].bytes().all(|b| b.is_ascii_digit());
    if generated {
        return Err(invalid(
            field,
            format!("\"{reporter}\" could be one of the generated reporters r0, r1, …"),
        ));
    }
    Ok(Some(reporter.to_owned()))
}

fn city_shares(
    field: &str,
    country: CountryCode,
    shares: &BTreeMap<String, f64>,
) -> Result<Vec<(String, f64)>, ScenarioError> {
    let mut total = 0.0;
    for (name, share) in shares {
        let at = format!("{field}.\"{name}\"");
        non_negative(&at, *share)?;
        total += share;
        match gazetteer().lookup(country, name) {
            Ok(city) if city.name == name => {}
            Ok(city) => {
                return Err(invalid(
                    at,
                    format!("write the canonical name \"{}\"", city.name),
                ))
            }
            Err(CityError::Unknown { suggestions, .. }) if !suggestions.is_empty() => {
                return Err(invalid(
                    at,
                    format!(
                        "not a city of {country} in the gazetteer; did you mean {}?",
                        suggestions.join(", ")
                    ),
                ))
            }
            Err(e) => return Err(invalid(at, e.to_string())),
        }
    }
    if total > 1.0 + SHARE_EPSILON {
        return Err(invalid(
            field,
            format!("shares sum to {total}, more than 1"),
        ));
    }
    Ok(shares
        .iter()
        .map(|(name, share)| (name.clone(), *share))
        .collect())
}

fn problem_mix(
    field: &str,
    shares: &BTreeMap<String, f64>,
) -> Result<Vec<(Problem, f64)>, ScenarioError> {
    for name in shares.keys() {
        if !Problem::ALL.iter().any(|p| p.as_str() == name) {
            let known: Vec<&str> = Problem::ALL.iter().map(|p| p.as_str()).collect();
            return Err(invalid(
                format!("{field}.{name}"),
                format!("not a problem kind; known: {}", known.join(", ")),
            ));
        }
    }
    let mut total = 0.0;
    for (name, share) in shares {
        non_negative(&format!("{field}.{name}"), *share)?;
        total += share;
    }
    if total <= 0.0 {
        return Err(invalid(field, "needs at least one positive share"));
    }
    Ok(Problem::ALL
        .iter()
        .filter_map(|p| {
            let share = shares.get(p.as_str()).copied().unwrap_or(0.0);
            (share > 0.0).then_some((*p, share / total))
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TINY: &str = r#"
        name = "tiny"
        start = "2025-03-10T12:00:00Z"
        end = "2025-03-10T12:03:00Z"
        seed = 7
        [problems]
        app = 1

        [[traffic]]
        service = "x"
        country = "PK"
        per_minute = 4
        [traffic.cities]
        Lahore = 0.5
    "#;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn csv_of(scenario: &Scenario) -> (String, u64) {
        let mut out = Vec::new();
        let rows = write_csv(scenario, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), rows)
    }

    fn field_of(text: &str) -> String {
        match Scenario::from_toml(text) {
            Err(ScenarioError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_tiny_poisson_scenario_gives_a_fixed_csv() {
        // Three minutes at a mean of 4 a minute, half of them naming Lahore; seed 7 draws 8.
        let (csv, rows) = csv_of(&Scenario::from_toml(TINY).unwrap());
        assert_eq!(rows, 8);
        assert_eq!(
            csv,
            "received_at,service,country,city,problem,reporter\n\
             2025-03-10T12:00:04Z,x,PK,,app,r0\n\
             2025-03-10T12:00:15Z,x,PK,Lahore,app,r1\n\
             2025-03-10T12:00:59Z,x,PK,Lahore,app,r2\n\
             2025-03-10T12:01:13Z,x,PK,Lahore,app,r3\n\
             2025-03-10T12:01:16Z,x,PK,Lahore,app,r4\n\
             2025-03-10T12:01:24Z,x,PK,Lahore,app,r5\n\
             2025-03-10T12:01:58Z,x,PK,,app,r6\n\
             2025-03-10T12:02:33Z,x,PK,Lahore,app,r7\n"
        );
    }

    #[test]
    fn generating_twice_gives_the_same_bytes() {
        let text = include_str!("../tests/scenarios/city-only.toml");
        let first = csv_of(&Scenario::from_toml(text).unwrap());
        let second = csv_of(&Scenario::from_toml(text).unwrap());
        assert!(first.1 > 0);
        assert_eq!(first, second);
    }

    #[test]
    fn rows_come_in_time_order_within_the_scenario() {
        let scenario =
            Scenario::from_toml(include_str!("../tests/scenarios/one-reporter.toml")).unwrap();
        let mut previous = scenario.start();
        let mut spammer = 0;
        generate(&scenario, |row| {
            assert!(row.received_at >= previous);
            assert!(row.received_at < scenario.end());
            previous = row.received_at;
            spammer += usize::from(row.reporter == "spammer");
        });
        assert!((500..700).contains(&spammer), "{spammer}");
    }

    #[test]
    fn adding_a_surge_leaves_the_traffic_draws_unchanged() {
        let with_surge = format!(
            "{TINY}\n[[surge]]\nservice = \"youtube\"\ncountry = \"US\"\n\
             points = [[\"2025-03-10T12:00:00Z\", 300], [\"2025-03-10T12:03:00Z\", 300]]\n"
        );
        let traffic_of = |text: &str| {
            let mut rows = Vec::new();
            generate(&Scenario::from_toml(text).unwrap(), |row| {
                if row.service == "x" {
                    rows.push((row.received_at, row.city.clone(), row.problem));
                }
            });
            rows
        };
        let alone = traffic_of(TINY);
        assert_eq!(alone.len(), 8);
        assert_eq!(traffic_of(&with_surge), alone);
    }

    #[test]
    fn a_fixed_reporter_is_on_every_row_of_its_entry() {
        let text = TINY.replace("per_minute = 4", "per_minute = 4\nreporter = \"bot\"");
        let mut reporters = Vec::new();
        generate(&Scenario::from_toml(&text).unwrap(), |row| {
            reporters.push(row.reporter.clone())
        });
        assert_eq!(reporters.len(), 8);
        assert!(reporters.iter().all(|r| r == "bot"));
    }

    #[test]
    fn traffic_counts_have_the_mean_and_overdispersion_asked_for() {
        // m = 10, k = 0.1: variance 10 + 0.1·100 = 20 (Poisson alone would give 10).
        let text = r#"
            name = "dispersed"
            start = "2025-03-03T00:00:00Z"
            end = "2025-03-17T00:00:00Z"
            seed = 3
            [problems]
            other = 1
            [[traffic]]
            service = "x"
            country = "GB"
            per_minute = 10
            dispersion = 0.1
        "#;
        let scenario = Scenario::from_toml(text).unwrap();
        let minutes = (scenario.end() - scenario.start()).num_minutes() as usize;
        let mut counts = vec![0u32; minutes];
        generate(&scenario, |row| {
            counts[(row.received_at - scenario.start()).num_minutes() as usize] += 1;
        });
        let n = minutes as f64;
        let mean = counts.iter().map(|&c| f64::from(c)).sum::<f64>() / n;
        let variance = counts
            .iter()
            .map(|&c| (f64::from(c) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        assert!((mean - 10.0).abs() < 0.1, "mean {mean}");
        assert!((variance - 20.0).abs() < 1.5, "variance {variance}");
    }

    #[test]
    fn the_weekly_mean_rate_is_per_minute() {
        let text = r#"
            name = "rhythm"
            start = "2025-03-03T00:00:00Z"
            end = "2025-03-10T00:00:00Z"
            seed = 1
            [problems]
            app = 1
            [[traffic]]
            service = "x"
            country = "US"
            per_minute = 1.5
            diurnal_amplitude = 0.5
            peak_hour_utc = 18
            weekend_factor = 0.5
            [traffic.cities]
            Chicago = 0.2
        "#;
        let scenario = Scenario::from_toml(text).unwrap();
        let minutes = (scenario.end() - scenario.start()).num_minutes();
        let rate = |city, m| {
            scenario.expected_per_minute("x", "US", city, scenario.start() + Duration::minutes(m))
        };
        let total: f64 = (0..minutes).map(|m| rate(None, m)).sum();
        assert!((total / minutes as f64 - 1.5).abs() < 1e-9);
        // Monday 18:00 is the weekday peak: 1.5 × 7/6 × 1.5; Saturday 06:00 the weekend trough.
        assert!((rate(None, 18 * 60) - 2.625).abs() < 1e-9);
        assert!((rate(Some("Chicago"), 18 * 60) - 0.525).abs() < 1e-9);
        assert!((rate(None, 5 * 1440 + 6 * 60) - 0.4375).abs() < 1e-9);
        assert_eq!(rate(Some("Houston"), 18 * 60), 0.0);
    }

    #[test]
    fn growth_compounds_per_day_from_growth_start() {
        let scenario =
            Scenario::from_toml(include_str!("../tests/scenarios/slow-doubling.toml")).unwrap();
        let mean_of_day = |day: i64| {
            let from = scenario.start() + Duration::days(day);
            (0..1440)
                .map(|m| {
                    scenario.expected_per_minute("netflix", "DE", None, from + Duration::minutes(m))
                })
                .sum::<f64>()
                / 1440.0
        };
        // A whole week before growth starts averages per_minute; the last day ends twice as high.
        let first_week: f64 = (0..7).map(mean_of_day).sum::<f64>() / 7.0;
        assert!((first_week - 1.0).abs() < 1e-9, "{first_week}");
        let last = scenario.end() - Duration::minutes(1);
        let week_earlier = last - Duration::days(7);
        let ratio = scenario.expected_per_minute("netflix", "DE", None, last)
            / scenario.expected_per_minute("netflix", "DE", None, week_earlier);
        assert!((ratio - 2f64.powf(7.0 / 10.0)).abs() < 1e-3, "{ratio}");
    }

    #[test]
    fn surge_targets_interpolate_linearly_between_points() {
        let points = [
            (at("2025-03-10T09:45:00Z"), 0.0),
            (at("2025-03-10T10:08:00Z"), 74.0),
            (at("2025-03-10T18:06:00Z"), 136.0),
            (at("2025-03-10T19:45:00Z"), 0.0),
        ];
        assert_eq!(target_15m(&points, at("2025-03-10T09:44:00Z")), 0.0);
        assert_eq!(target_15m(&points, at("2025-03-10T09:45:00Z")), 0.0);
        assert_eq!(target_15m(&points, at("2025-03-10T10:08:00Z")), 74.0);
        assert_eq!(target_15m(&points, at("2025-03-10T18:06:00Z")), 136.0);
        // Halfway between 10:08 (74) and 18:06 (136) is 14:07.
        assert_eq!(target_15m(&points, at("2025-03-10T14:07:00Z")), 105.0);
        assert_eq!(target_15m(&points, at("2025-03-10T19:45:00Z")), 0.0);
        // From the last point on the target is zero, even when its value is not.
        let block = [
            (at("2025-03-09T19:00:00Z"), 900.0),
            (at("2025-03-09T19:10:00Z"), 900.0),
        ];
        assert_eq!(target_15m(&block, at("2025-03-09T19:00:00Z")), 900.0);
        assert_eq!(target_15m(&block, at("2025-03-09T19:09:00Z")), 900.0);
        assert_eq!(target_15m(&block, at("2025-03-09T19:10:00Z")), 0.0);
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!(field_of(&TINY.replace("12:03:00Z", "11:00:00Z")), "end");
        assert_eq!(field_of(&TINY.replace("12:03:00Z", "12:03:30Z")), "end");
        assert_eq!(
            field_of(&TINY.replace("app = 1", "app = 1\nouch = 1")),
            "problems.ouch"
        );
        assert_eq!(field_of(&TINY.replace("app = 1", "app = 0")), "problems");
        assert_eq!(
            field_of(&TINY.replace("per_minute = 4", "per_minute = -1")),
            "traffic[0].per_minute"
        );
        assert_eq!(
            field_of(&TINY.replace("\"PK\"", "\"XX\"")),
            "traffic[0].country"
        );
        assert_eq!(
            field_of(&TINY.replace("\"x\"", "\"X!\"")),
            "traffic[0].service"
        );
        assert_eq!(
            field_of(&TINY.replace("Lahore = 0.5", "Lahore = 0.5\nKarachi = 0.6")),
            "traffic[0].cities"
        );
        assert_eq!(
            field_of(&TINY.replace("Lahore = 0.5", "Lahor = 0.5")),
            "traffic[0].cities.\"Lahor\""
        );
        assert_eq!(
            field_of(&TINY.replace("per_minute = 4", "per_minute = 4\nreporter = \"r12\"")),
            "traffic[0].reporter"
        );
        let unsorted = format!(
            "{TINY}\n[[surge]]\nservice = \"x\"\ncountry = \"PK\"\n\
             points = [[\"2025-03-10T12:02:00Z\", 5], [\"2025-03-10T12:01:00Z\", 0]]\n"
        );
        assert_eq!(field_of(&unsorted), "surge[0].points[1]");
        let outside = unsorted.replace("12:02:00Z", "13:00:00Z");
        assert_eq!(field_of(&outside), "surge[0].points[0]");
    }

    #[test]
    fn a_non_canonical_city_name_is_refused_with_the_canonical_one() {
        let text = TINY.replace("\"PK\"", "\"IN\"").replace("Lahore", "Bombay");
        match Scenario::from_toml(&text) {
            Err(ScenarioError::Invalid { field, message }) => {
                assert_eq!(field, "traffic[0].cities.\"Bombay\"");
                assert!(message.contains("\"Mumbai\""), "{message}");
            }
            other => panic!("expected an invalid city, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = TINY.replace("per_minute = 4", "per_minute = 4\nper_hour = 4");
        match Scenario::from_toml(&text) {
            Err(ScenarioError::Parse(e)) => assert!(e.to_string().contains("per_hour"), "{e}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    /// Every scenario shipped for the detection tests, by file name.
    const FILES: [(&str, &str); 5] = [
        (
            "x-2025-03-10.toml",
            include_str!("../tests/scenarios/x-2025-03-10.toml"),
        ),
        (
            "city-only.toml",
            include_str!("../tests/scenarios/city-only.toml"),
        ),
        (
            "slow-doubling.toml",
            include_str!("../tests/scenarios/slow-doubling.toml"),
        ),
        (
            "one-reporter.toml",
            include_str!("../tests/scenarios/one-reporter.toml"),
        ),
        (
            "sparse.toml",
            include_str!("../tests/scenarios/sparse.toml"),
        ),
    ];

    #[test]
    fn every_shipped_scenario_parses_with_catalog_services_and_gazetteer_cities() {
        let settings = crate::config::Settings::from_toml(&[]).unwrap();
        let catalog: Vec<&str> = settings.services.iter().map(|s| s.slug.as_str()).collect();
        for (file, text) in FILES {
            let scenario = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            let entries = scenario
                .traffic
                .iter()
                .map(|t| (&t.service, t.country, &t.cities))
                .chain(
                    scenario
                        .surges
                        .iter()
                        .map(|s| (&s.service, s.country, &s.cities)),
                );
            for (service, country, cities) in entries {
                assert!(catalog.contains(&service.as_str()), "{file}: {service}");
                for (name, _) in cities {
                    let city = gazetteer().lookup(country, name).unwrap();
                    assert_eq!(city.name, name, "{file}: {name}");
                    assert_eq!(city.country, country, "{file}: {name}");
                }
            }
        }
    }

    /// The sum of expected reports of x over the 15 minutes centred on `centre`.
    fn expected_15m(
        scenario: &Scenario,
        country: &str,
        city: Option<&str>,
        centre: DateTime<Utc>,
    ) -> f64 {
        (-7..=7)
            .map(|m| {
                scenario.expected_per_minute("x", country, city, centre + Duration::minutes(m))
            })
            .sum()
    }

    /// The largest 15-minute sum of expected reports of x in a country on 10 March 2025.
    fn peak_15m(scenario: &Scenario, country: &str) -> f64 {
        (0..24 * 60)
            .map(|m| {
                let centre = at("2025-03-10T00:00:00Z") + Duration::minutes(m);
                expected_15m(scenario, country, None, centre)
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn the_x_scenario_reproduces_the_published_figures() {
        let scenario = Scenario::from_toml(FILES[0].1).unwrap();
        let peak_us = peak_15m(&scenario, "US");
        assert!(
            (39_000.0..=40_500.0).contains(&peak_us),
            "US peak {peak_us}"
        );
        let us_later = expected_15m(&scenario, "US", None, at("2025-03-10T14:45:00Z"));
        // The line bends at 14:45 (gentler before than after), which lowers the centred sum by
        // about 100 below the point's value.
        assert!((us_later - 26_579.0).abs() < 150.0, "US later {us_later}");
        let peak_gb = peak_15m(&scenario, "GB");
        assert!(
            (10_800.0..=11_200.0).contains(&peak_gb),
            "GB peak {peak_gb}"
        );
        for (time, reports) in [
            ("2025-03-10T10:08:00Z", 74.0),
            ("2025-03-10T18:06:00Z", 136.0),
            ("2025-03-10T19:06:00Z", 45.0),
        ] {
            let pk = expected_15m(&scenario, "PK", None, at(time));
            assert!((pk - reports).abs() < 1.0, "PK at {time}: {pk}");
        }
        let evening = at("2025-03-10T18:06:00Z");
        let lahore = expected_15m(&scenario, "PK", Some("Lahore"), evening);
        let karachi = expected_15m(&scenario, "PK", Some("Karachi"), evening);
        assert!(lahore > 50.0 && karachi > 25.0, "{lahore} {karachi}");
    }

    #[test]
    fn the_city_only_surge_quadruples_mumbai_but_not_india() {
        let scenario = Scenario::from_toml(FILES[1].1).unwrap();
        let window = |city, from: &str| {
            (0..15)
                .map(|m| {
                    let minute = at(from) + Duration::minutes(m);
                    scenario.expected_per_minute("youtube", "IN", city, minute)
                })
                .sum::<f64>()
        };
        // The same quarter-hour a day earlier is the baseline (both days are weekdays).
        let (during, before) = ("2025-03-14T10:00:00Z", "2025-03-13T10:00:00Z");
        let mumbai = window(Some("Mumbai"), during) / window(Some("Mumbai"), before);
        let india = window(None, during) / window(None, before);
        assert!((3.5..4.5).contains(&mumbai), "Mumbai {mumbai}");
        assert!((1.2..1.4).contains(&india), "India {india}");
        assert!((window(None, during) - window(None, before) - 60.0).abs() < 1e-6);
    }
}
