//! The low-count surge family (`tests/scenarios/low-count.toml`), seeds 1–20: which surges the detector finds, and how many false incidents it opens beside them, exactly (the seeds are deterministic).
//!
//! All 20 seeds go into one database with one import and one redetect (see
//! `family_measure`). The default run uses SQLite; the Postgres run is the long form, ignored
//! by default: `./scripts/test --test low_count_family -- --include-ignored`.
//! The held-out seeds 21–40 are measured by `examples/low_count_family.rs` for the README.
#![allow(clippy::unwrap_used)]

mod common;
mod family_measure;

use chrono::{DateTime, Duration, Utc};
use outagewatch::domain::incidents::{Incident, Scope};
use outagewatch_scenario::Family;

fn family() -> Family {
    Family::from_toml(include_str!("scenarios/low-count.toml")).unwrap()
}

// Today's detector (update these when it changes; the printed table shows the new figures).

/// Per seed 1–20: whether the surge was found (seed 19's country incident was detected 22
/// minutes in: a 3.2x surge on 19.6 reports per 15 minutes).
const FOUND_BY_SEED: [bool; 20] = [
    true, true, true, true, true, true, true, true, true, true, //
    true, true, true, true, true, true, true, true, false, true,
];

/// Seeds found, of 20.
const FOUND: usize = 19;

/// Median and longest detection latency of the found seeds, in minutes.
const MEDIAN_LATENCY_MINUTES: f64 = 11.0;
const MAX_LATENCY_MINUTES: i64 = 17;

/// Incidents of seeds 1–20 that overlap no surge of their place.
const FALSE_INCIDENTS: usize = 0;

async fn seeds_1_to_20_are_measured_exactly(backend: common::Backend) {
    let family = family();
    let db = common::TestDb::new(backend).await;
    let measurement = family_measure::measure(&family, 1..=20, &db.url)
        .await
        .unwrap();
    // Printed for whoever updates the numbers (`-- --nocapture`).
    println!(
        "{:?}: {} reports, import {:.1} s, redetect {:.1} s\n{}",
        backend,
        measurement.imported.rows,
        measurement.import_time.as_secs_f64(),
        measurement.redetect_time.as_secs_f64(),
        measurement.markdown()
    );
    assert_eq!(measurement.imported.rejected, 0);
    assert_eq!(measurement.imported.counted, measurement.imported.rows);
    assert_eq!(measurement.found_by_seed(), FOUND_BY_SEED);
    assert_eq!(measurement.found(), FOUND);
    assert_eq!(
        measurement.median_latency_minutes(),
        Some(MEDIAN_LATENCY_MINUTES)
    );
    assert_eq!(measurement.max_latency_minutes(), Some(MAX_LATENCY_MINUTES));
    assert_eq!(measurement.false_incidents(), FALSE_INCIDENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_1_to_20_on_sqlite() {
    seeds_1_to_20_are_measured_exactly(common::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long form: ./scripts/test --test low_count_family -- --include-ignored"]
async fn seeds_1_to_20_on_postgres() {
    seeds_1_to_20_are_measured_exactly(common::Backend::Postgres).await;
}

/// An incident of seed 1 at `place` (scope, country, city) from `started_at` to `resolved_at`,
/// detected the minute it started (so latencies below read off the start).
fn incident(
    service: &str,
    place: (Scope, Option<&str>, Option<&str>),
    started_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
) -> Incident {
    let mut incident = common::open_incident(started_at);
    incident.service = service.into();
    (incident.scope, incident.country, incident.city) =
        (place.0, place.1.map(Into::into), place.2.map(Into::into));
    incident.resolved_at = resolved_at;
    incident.detected_at = started_at;
    incident
}

const PK: (Scope, Option<&str>, Option<&str>) = (Scope::Country, Some("PK"), None);

#[test]
fn a_country_incident_detected_within_20_minutes_of_the_surge_start_finds_it() {
    let drawn = family().draw(1);
    let (start, end) = (drawn.surge.start, drawn.scenario.end());
    let minutes = |m: i64| start + Duration::minutes(m);
    let score = |incidents: &[Incident]| {
        let refs: Vec<&Incident> = incidents.iter().collect();
        let outcome = family_measure::score(&drawn, &refs, end);
        (outcome.found, outcome.latency_minutes)
    };
    assert_eq!(score(&[]), (false, None));
    assert_eq!(
        score(&[incident("x-s1", PK, minutes(0), None)]),
        (true, Some(0))
    );
    assert_eq!(
        score(&[incident("x-s1", PK, minutes(20), None)]),
        (true, Some(20))
    );
    assert_eq!(
        score(&[incident("x-s1", PK, minutes(21), None)]),
        (false, Some(21))
    );
    // Already open before the surge: not a detection of it, unless another one follows.
    let early = incident("x-s1", PK, minutes(-5), Some(minutes(30)));
    assert_eq!(score(std::slice::from_ref(&early)), (false, Some(-5)));
    let later = incident("x-s1", PK, minutes(12), None);
    assert_eq!(score(&[early, later]), (true, Some(12)));
    // A city or the global incident is not the country's detection; another seed's is not either.
    let lahore = (Scope::City, Some("PK"), Some("Lahore"));
    assert_eq!(
        score(&[incident("x-s1", lahore, minutes(3), None)]),
        (false, None)
    );
    let world = (Scope::Global, None, None);
    assert_eq!(
        score(&[incident("x-s1", world, minutes(3), None)]),
        (false, None)
    );
    assert_eq!(
        score(&[incident("x-s2", PK, minutes(3), None)]),
        (false, None)
    );
}

#[test]
fn an_incident_is_false_unless_it_overlaps_the_surge_at_its_place() {
    let drawn = family().draw(1);
    let surge = &drawn.surge;
    let after_end = |m: i64| surge.end() + Duration::minutes(m);
    let during = surge.start + Duration::minutes(10);
    let lahore = (Scope::City, Some("PK"), Some("Lahore"));
    let world = (Scope::Global, None, None);
    let nigeria = (Scope::Country, Some("NG"), None);
    let cases = [
        // The surge's country, a city of it and the service worldwide, during the surge.
        (incident("x-s1", PK, during, None), false),
        (incident("x-s1", lahore, during, Some(after_end(40))), false),
        (incident("x-s1", world, during, Some(after_end(40))), false),
        // Started before the surge and still open in it.
        (
            incident("x-s1", PK, surge.start - Duration::minutes(30), None),
            false,
        ),
        // Starting while the 15-minute count still holds surge reports, and just after.
        (incident("x-s1", lahore, after_end(14), None), false),
        (incident("x-s1", lahore, after_end(15), None), true),
        // Elsewhere during the surge: another country, another service of the same country.
        (incident("x-s1", nigeria, during, None), true),
        (incident("youtube-s1", PK, during, None), true),
        // The surge's country in the ordinary weeks, resolved before the surge.
        (
            incident(
                "x-s1",
                PK,
                surge.start - Duration::days(3),
                Some(surge.start - Duration::days(3) + Duration::hours(1)),
            ),
            true,
        ),
    ];
    for (incident, is_false) in cases {
        let outcome = family_measure::score(&drawn, &[&incident], drawn.scenario.end());
        assert_eq!(
            outcome.false_incidents.len(),
            usize::from(is_false),
            "{:?} {:?} {:?} from {}",
            incident.service,
            incident.scope,
            incident.city,
            incident.started_at
        );
    }
}
