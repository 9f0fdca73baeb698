//! Unit tests of scenario parsing, expected rates and generation, with exact numbers and the shipped scenario files.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, Utc};
use outagewatch::domain::geo::gazetteer;

use super::*;
use crate::model::target_15m;

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
    let text = include_str!("../../../tests/scenarios/city-only.toml");
    let first = csv_of(&Scenario::from_toml(text).unwrap());
    let second = csv_of(&Scenario::from_toml(text).unwrap());
    assert!(first.1 > 0);
    assert_eq!(first, second);
}

#[test]
fn rows_come_in_time_order_within_the_scenario() {
    let scenario =
        Scenario::from_toml(include_str!("../../../tests/scenarios/one-reporter.toml")).unwrap();
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
        Scenario::from_toml(include_str!("../../../tests/scenarios/slow-doubling.toml")).unwrap();
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
        include_str!("../../../tests/scenarios/x-2025-03-10.toml"),
    ),
    (
        "city-only.toml",
        include_str!("../../../tests/scenarios/city-only.toml"),
    ),
    (
        "slow-doubling.toml",
        include_str!("../../../tests/scenarios/slow-doubling.toml"),
    ),
    (
        "one-reporter.toml",
        include_str!("../../../tests/scenarios/one-reporter.toml"),
    ),
    (
        "sparse.toml",
        include_str!("../../../tests/scenarios/sparse.toml"),
    ),
];

#[test]
fn every_shipped_scenario_parses_with_catalog_services_and_gazetteer_cities() {
    let settings = outagewatch::config::Settings::from_toml(&[]).unwrap();
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
        .map(|m| scenario.expected_per_minute("x", country, city, centre + Duration::minutes(m)))
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
