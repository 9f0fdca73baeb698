//! A scenario file, parsed and validated: its traffic and surges, and the mean count they expect in any minute.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use figment::providers::{Format, Toml};
use figment::Figment;
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::report::Problem;
use serde::Deserialize;

use crate::checks::{
    city_shares, country, invalid, non_negative, problem_mix, reporter, service, whole_minute,
};

/// Longest scenario accepted, in days: a typo in a year should fail, not generate for hours.
pub(crate) const MAX_DAYS: i64 = 366;

/// A validated scenario: what traffic and surges to generate, over which minutes, from which seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ScenarioFile")]
pub struct Scenario {
    pub(crate) name: String,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) seed: u64,
    pub(crate) traffic: Vec<Traffic>,
    pub(crate) surges: Vec<Surge>,
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
pub(crate) struct Traffic {
    pub(crate) service: String,
    pub(crate) country: CountryCode,
    pub(crate) per_minute: f64,
    pub(crate) diurnal_amplitude: f64,
    pub(crate) peak_hour_utc: f64,
    pub(crate) weekend_factor: f64,
    pub(crate) dispersion: f64,
    pub(crate) growth_per_day: f64,
    pub(crate) growth_start: DateTime<Utc>,
    pub(crate) reporter: Option<String>,
    pub(crate) cities: Vec<(String, f64)>,
    pub(crate) problems: Vec<(Problem, f64)>,
}

/// Extra reports of one (service, country), validated; cities already defaulted from the traffic.
#[derive(Debug, Clone)]
pub(crate) struct Surge {
    pub(crate) service: String,
    pub(crate) country: CountryCode,
    pub(crate) points: Vec<(DateTime<Utc>, f64)>,
    pub(crate) reporter: Option<String>,
    pub(crate) cities: Vec<(String, f64)>,
    pub(crate) problems: Vec<(Problem, f64)>,
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
    pub(crate) fn rate_at(&self, minute: DateTime<Utc>) -> f64 {
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
pub(crate) fn target_15m(points: &[(DateTime<Utc>, f64)], at: DateTime<Utc>) -> f64 {
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
