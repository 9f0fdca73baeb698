//! Generation: one seeded random stream per traffic or surge entry, drawn minute by minute into rows in time order, and the import CSV written from them.

use std::io;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use outagewatch::domain::report::Problem;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Poisson};

use crate::model::{target_15m, Scenario, ScenarioRow, Surge, Traffic};

/// The CSV header `outagewatch import` expects, in column order.
pub const CSV_HEADER: [&str; 6] = [
    "received_at",
    "service",
    "country",
    "city",
    "problem",
    "reporter",
];

/// Random stream of the first surge; traffic entries use streams `0..`.
const SURGE_STREAM_BASE: u64 = 1 << 32;

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
