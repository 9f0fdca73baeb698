//! Scenario replay: generate a scenario's reports, import them, run `redetect`, and check the incidents — on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use outagewatch::app;
use outagewatch::config::Settings;
use outagewatch::detector;
use outagewatch::domain::incidents::{Incident, Scope, Status};
use outagewatch::ingest::import::{self, ImportSummary};
use outagewatch::store::{IncidentQuery, Store};
use outagewatch_scenario::{self as scenario, Scenario};

fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// Imports the scenario's rows into a fresh database and re-detects over the whole scenario.
async fn replay(
    backend: common::Backend,
    file: &str,
) -> (Vec<Incident>, ImportSummary, Scenario, common::TestDb) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(file);
    let scenario = Scenario::from_toml(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("reports.csv");
    scenario::write_csv(&scenario, std::fs::File::create(&csv).unwrap()).unwrap();

    let db = common::TestDb::new(backend).await;
    let settings: Settings = db.settings("[detector]\nenabled = false\n");
    let store: Arc<dyn Store> = app::open_store(&settings).await.unwrap();
    let catalog = app::catalog(&settings);
    let (ingest, writer) = app::start_ingest(store.clone(), &settings);
    let mut rejected = Vec::new();
    let imported = import::import_file(&csv, &ingest, &catalog, |line| rejected.push(line))
        .await
        .unwrap();
    drop(ingest);
    writer.await.unwrap();
    assert_eq!(rejected, Vec::<String>::new());

    let summary = detector::redetect(
        store.clone(),
        Arc::new(catalog),
        &settings.detector,
        None,
        Some(scenario.end()),
        scenario.end(),
    )
    .await
    .unwrap();
    // From the first stored minute (the first report) to the scenario's end.
    let first = summary.from.unwrap();
    assert!(first >= scenario.start() && first < scenario.start() + chrono::Duration::days(1));
    assert_eq!(summary.to, Some(scenario.end()));
    let mut incidents = store
        .incidents(&IncidentQuery {
            limit: 1000,
            ..IncidentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(incidents.len(), summary.incidents);
    incidents.reverse(); // oldest first
    (incidents, imported, scenario, db)
}

fn place(incident: &Incident) -> (Scope, Option<&str>, Option<&str>) {
    (
        incident.scope,
        incident.country.as_deref(),
        incident.city.as_deref(),
    )
}

/// The incidents of one country series, oldest first.
fn of_country<'a>(incidents: &'a [Incident], country: &str) -> Vec<&'a Incident> {
    incidents
        .iter()
        .filter(|i| i.scope == Scope::Country && i.country.as_deref() == Some(country))
        .collect()
}

/// The scenario's own peak: the highest expected 15-minute count of a country in `[from, to)`.
fn expected_peak(
    scenario: &Scenario,
    country: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> f64 {
    let minute = chrono::Duration::minutes(1);
    let mut window = std::collections::VecDeque::new();
    let (mut sum, mut peak) = (0.0, 0.0_f64);
    let mut at = from - chrono::Duration::minutes(14);
    while at < to {
        let expected = scenario.expected_per_minute("x", country, None, at);
        window.push_back(expected);
        sum += expected;
        if window.len() > 15 {
            sum -= window.pop_front().unwrap();
        }
        peak = peak.max(sum);
        at += minute;
    }
    peak
}

fn within_ten_percent(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 0.1 * expected
}

on_both_backends!(
    the_x_outage_of_10_march_2025_is_found_named_and_scoped,
    |backend| async move {
        let (incidents, imported, scenario, _db) = replay(backend, "x-2025-03-10.toml").await;
        assert_eq!(imported.rejected, 0);
        assert_eq!(imported.counted, imported.rows);

        // Nothing in the four ordinary weeks, on any series; everything is X on the day.
        let day = time("2025-03-10T09:45:00Z");
        for incident in &incidents {
            assert!(incident.started_at >= day, "false incident: {incident:?}");
            assert_eq!(incident.service, "x");
            assert_eq!(incident.status, Status::Resolved);
        }

        // One global incident, parent of every country incident.
        let global: Vec<&Incident> = incidents
            .iter()
            .filter(|i| i.scope == Scope::Global)
            .collect();
        assert_eq!(global.len(), 1);
        let global = global[0];
        assert_eq!(global.parent_id, None);
        assert!(global.started_at <= time("2025-03-10T10:00:00Z"));

        let mut countries: Vec<&str> = incidents
            .iter()
            .filter(|i| i.scope == Scope::Country)
            .filter_map(|i| i.country.as_deref())
            .collect();
        countries.sort();
        // Two waves in the US and GB (three hours apart, so two incidents), one long one in PK.
        assert_eq!(countries, ["GB", "GB", "PK", "US", "US"]);
        for incident in incidents.iter().filter(|i| i.scope == Scope::Country) {
            assert_eq!(incident.parent_id, Some(global.id), "{incident:?}");
        }
        // Cities belong to their country's incident.
        for city in incidents.iter().filter(|i| i.scope == Scope::City) {
            let parent = incidents
                .iter()
                .find(|i| Some(i.id) == city.parent_id)
                .unwrap_or_else(|| panic!("city without parent: {city:?}"));
            assert_eq!(
                (parent.scope, parent.country.as_deref()),
                (Scope::Country, city.country.as_deref())
            );
        }

        // Surge start and end (from the scenario file), and the published peak if there is one.
        let checks = [
            ("US", 0, "09:45", "10:40", None),
            ("US", 1, "13:45", "15:30", Some(40_000.0)),
            ("GB", 0, "09:50", "10:45", None),
            ("GB", 1, "13:50", "15:15", Some(10_800.0)),
            ("PK", 0, "09:45", "19:45", Some(136.0)),
        ];
        for (country, nth, surge_start, surge_end, published) in checks {
            let incident = of_country(&incidents, country)[nth];
            let at = |hm: &str| time(&format!("2025-03-10T{hm}:00Z"));
            let peak = expected_peak(&scenario, country, at(surge_start), at(surge_end));
            if let Some(published) = published {
                assert!(within_ten_percent(peak, published), "{country}: {peak}");
            }
            assert!(
                incident.started_at >= at(surge_start)
                    && incident.started_at <= at(surge_start) + chrono::Duration::minutes(15),
                "{country} started late: {incident:?}"
            );
            // Detection latency, measured from the minute the detector opened the incident.
            assert!(
                incident.detected_at >= incident.started_at
                    && incident.detected_at <= at(surge_start) + chrono::Duration::minutes(15),
                "{country} detected late: {incident:?}"
            );
            eprintln!(
                "{country} wave {}: surge from {surge_start}, started {}, detected {} (+{} min)",
                nth + 1,
                incident.started_at.format("%H:%M"),
                incident.detected_at.format("%H:%M"),
                (incident.detected_at - at(surge_start)).num_minutes()
            );
            assert!(
                within_ten_percent(incident.peak_count, peak),
                "{country} peak {} vs {peak}",
                incident.peak_count
            );
            let resolved = incident.resolved_at.unwrap();
            assert!(
                resolved > at(surge_end) - chrono::Duration::minutes(15)
                    && resolved <= at(surge_end) + chrono::Duration::minutes(60),
                "{country} resolved at {resolved}"
            );
        }
        assert!(of_country(&incidents, "GB")[1].peak_count >= 10_800.0);

        // Pakistan: its three cities, named in the summary.
        let pk = of_country(&incidents, "PK")[0];
        let top: Vec<&str> = pk
            .top_cities
            .iter()
            .take(3)
            .map(|c| c.city.as_str())
            .collect();
        assert_eq!(top, ["Lahore", "Rawalpindi", "Karachi"]);
        assert!(
            pk.summary
                .starts_with("Reports about X (Twitter) in Pakistan rose from ")
                && pk
                    .summary
                    .contains("mostly from Lahore, Rawalpindi and Karachi."),
            "{}",
            pk.summary
        );
        let shares: f64 = pk.problems.values().sum();
        assert!((shares - 1.0).abs() < 0.01, "{:?}", pk.problems);
        assert_eq!(
            pk.problems.keys().collect::<Vec<_>>(),
            ["app", "login", "server_connection", "website"]
        );
    }
);

on_both_backends!(
    a_city_only_surge_opens_a_city_incident_and_no_country_one,
    |backend| async move {
        let (incidents, _, _, _db) = replay(backend, "city-only.toml").await;
        let places: Vec<_> = incidents.iter().map(place).collect();
        assert_eq!(places, [(Scope::City, Some("IN"), Some("Mumbai"))]);
        assert_eq!(incidents[0].parent_id, None);
        assert_eq!(incidents[0].service, "youtube");
    }
);

on_both_backends!(
    a_slow_doubling_over_ten_days_is_no_incident,
    |backend| async move {
        let (incidents, imported, _, _db) = replay(backend, "slow-doubling.toml").await;
        assert!(imported.counted > 40_000);
        assert_eq!(incidents, []);
    }
);

on_both_backends!(
    one_reporter_sending_hundreds_counts_once_and_opens_nothing,
    |backend| async move {
        let (incidents, imported, scenario, _db) = replay(backend, "one-reporter.toml").await;
        let mut spam = Vec::new();
        scenario::generate(&scenario, |row| {
            if row.reporter == "spammer" {
                spam.push(row.received_at);
            }
        });
        assert!(spam.len() >= 500, "{}", spam.len());
        // Every spam report is stored; one per 15-minute dedup window counts.
        let windows: std::collections::BTreeSet<i64> =
            spam.iter().map(|t| t.timestamp().div_euclid(900)).collect();
        assert_eq!(imported.stored, imported.rows);
        assert_eq!(
            imported.counted,
            imported.rows - spam.len() as u64 + windows.len() as u64
        );
        assert_eq!(incidents, []);
    }
);

on_both_backends!(a_mostly_zero_series_opens_nothing, |backend| async move {
    let (incidents, imported, _, _db) = replay(backend, "sparse.toml").await;
    assert_eq!(imported.counted, 128);
    assert_eq!(incidents, []);
});
