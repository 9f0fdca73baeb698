//! The rollup tiers: counts, regions and top cities read from the quarter-hour and hour tiers
//! (with minutes at a range's edges, if it has any) are exactly what the reports themselves add
//! up to, for random ranges and intervals, on both backends; on Postgres also before and after
//! the live minutes settle, and after a late report for a settled minute. A counts or regions
//! answer's reads together (one statement on Postgres) give what the separate reads give.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use outagewatch::domain::buckets::{floor_to, minute_of};
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::incidents::{Incident, Scope, Status};
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::store::{
    DetectionWrite, Expectation, Fingerprint, IncidentQuery, NewReport, SeriesKey, Store, TimeRange,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

const COUNTRIES: [&str; 2] = ["PK", "GB"];
const CITIES: [Option<&str>; 4] = [None, Some("Lahore"), Some("Karachi"), Some("London")];
/// The span the reports fall in, ending at the current minute.
const SPAN_MINUTES: i64 = 200;

fn new_report(id: u128, country: &str, city: Option<&'static str>, at: DateTime<Utc>) -> NewReport {
    let catalog = Catalog::new([("x", "X")]);
    NewReport {
        id: Uuid::from_u128(id),
        client_id: true,
        received_at: at,
        service: catalog.services()[0].slug.clone(),
        country: CountryCode::parse(country).unwrap(),
        city,
        problem: Problem::App,
        // A reporter of its own: every report counts.
        fingerprint: Fingerprint(id.to_le_bytes()),
        dedup_window_start: floor_to(at, 900),
        network: None,
    }
}

/// Stores reports as the batch writer would at `now`: one batch per minute, so a batch of
/// current minutes goes to Postgres' live table and one of older minutes to the settled ones.
async fn store_all(store: &dyn Store, reports: &[NewReport], now: DateTime<Utc>) {
    let mut by_minute: BTreeMap<DateTime<Utc>, Vec<NewReport>> = BTreeMap::new();
    for r in reports {
        by_minute
            .entry(minute_of(r.received_at))
            .or_default()
            .push(r.clone());
    }
    for batch in by_minute.values() {
        let outcomes = store.insert_reports(batch, now).await.unwrap();
        assert!(outcomes.iter().all(|o| o.counted && !o.replay));
    }
}

/// Whether a report's minute lies in `range`, as the rollups count it.
fn in_range(r: &NewReport, range: TimeRange) -> bool {
    let minute = minute_of(r.received_at);
    range.from <= minute && minute < range.to
}

fn in_series(r: &NewReport, series: &SeriesKey) -> bool {
    let (_, country, city) = series.parts();
    country.is_none_or(|c| r.country.as_str() == c) && (city.is_none() || r.city == city)
}

/// The counts the reports add up to: (bucket start, count), buckets with reports only.
fn expected_counts(
    reports: &[NewReport],
    series: &SeriesKey,
    range: TimeRange,
    bucket: i64,
) -> Vec<(DateTime<Utc>, i64)> {
    let mut counts: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| in_range(r, range) && in_series(r, series))
    {
        *counts.entry(floor_to(r.received_at, bucket)).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Region counts the reports add up to: per country, or per (country, city) with `cities`.
fn expected_regions(
    reports: &[NewReport],
    country: Option<&str>,
    cities: bool,
    range: TimeRange,
) -> Vec<(String, String, i64)> {
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in reports.iter().filter(|r| in_range(r, range)) {
        if country.is_some_and(|c| r.country.as_str() != c) {
            continue;
        }
        let city = match (cities, r.city) {
            (true, Some(city)) => city.to_owned(),
            (true, None) => continue,
            (false, _) => String::new(),
        };
        *counts
            .entry((r.country.as_str().to_owned(), city))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((c, city), n)| (c, city, n))
        .collect()
}

/// A counts answer's reads and a regions answer's reads, each taken together, are the same as
/// taken one by one.
async fn together_as_apart(
    store: &dyn Store,
    series: &SeriesKey,
    range: TimeRange,
    bucket: i64,
    (country, cities): (Option<&str>, bool),
) {
    let quarters = TimeRange::new(floor_to(range.from, 900), range.to);
    let (counts, expected) = store
        .counts_expected(series, range, bucket, quarters)
        .await
        .unwrap();
    assert_eq!(counts, store.counts(series, range, bucket).await.unwrap());
    assert_eq!(
        expected,
        store.expectations(series, quarters).await.unwrap()
    );

    let together = store
        .region_counts_expected("x", country, cities, range, quarters)
        .await
        .unwrap();
    let (mut regions, mut expected) = (together.counts, together.expected);
    // The open incidents of the level, newest first, as the incidents read gives them.
    let scope = if cities { Scope::City } else { Scope::Country };
    let open: Vec<(String, String, Uuid)> = store
        .incidents(&IncidentQuery {
            service: Some("x".into()),
            country: country.map(str::to_owned),
            status: Some(Status::Open),
            limit: 10_000,
            ..IncidentQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.scope == scope)
        .map(|i| {
            (
                i.country.unwrap_or_default(),
                i.city.unwrap_or_default(),
                i.id,
            )
        })
        .collect();
    assert_eq!(together.open, open, "{country:?}, cities {cities}");
    let mut apart = store
        .region_counts("x", country, cities, range)
        .await
        .unwrap();
    let keys: Vec<(String, String)> = apart
        .iter()
        .map(|r| (r.country.clone(), r.city.clone()))
        .collect();
    let mut apart_expected = store
        .region_expectations("x", &keys, quarters)
        .await
        .unwrap();
    for list in [&mut regions, &mut apart] {
        list.sort_by(|a, b| (&a.country, &a.city).cmp(&(&b.country, &b.city)));
    }
    for list in [&mut expected, &mut apart_expected] {
        list.sort_by(|a, b| {
            (&a.country, &a.city, a.quarter).cmp(&(&b.country, &b.city, b.quarter))
        });
    }
    assert_eq!(regions, apart);
    assert_eq!(expected, apart_expected);
    assert!(
        expected.is_empty() == keys.is_empty(),
        "every counted region has expectations: {} for {} regions",
        expected.len(),
        keys.len()
    );
}

/// Every read of `rounds` random ranges and intervals answers what the reports add up to.
async fn reads_match(store: &dyn Store, reports: &[NewReport], now: DateTime<Utc>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = minute_of(now) - TimeDelta::minutes(SPAN_MINUTES);
    let serieses = [
        SeriesKey::global("x"),
        SeriesKey::country("x", "PK"),
        SeriesKey::country("x", "GB"),
        SeriesKey::city("x", "PK", "Lahore"),
        SeriesKey::city("x", "GB", "London"),
    ];
    for _ in 0..40 {
        let from = start + TimeDelta::seconds(rng.gen_range(-600..SPAN_MINUTES * 60));
        // Half of the ranges run past now, over the minutes Postgres may still hold live.
        let to = if rng.gen_bool(0.5) {
            now + TimeDelta::seconds(rng.gen_range(1..7200))
        } else {
            from + TimeDelta::seconds(rng.gen_range(1..SPAN_MINUTES * 60))
        };
        let bucket = [60, 300, 900, 3600, 86_400][rng.gen_range(0..5)];
        // A third aligned to the buckets at both ends, as a dashboard's ranges are: at 15m or
        // wider these read no minute rows at all.
        let (from, to) = if rng.gen_range(0..3) == 0 {
            (
                floor_to(from, bucket),
                floor_to(to, bucket) + TimeDelta::seconds(bucket),
            )
        } else {
            (from, to)
        };
        let range = TimeRange::new(from, to);
        let series = &serieses[rng.gen_range(0..serieses.len())];
        let got: Vec<(DateTime<Utc>, i64)> = store
            .counts(series, range, bucket)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.start, b.count))
            .collect();
        assert_eq!(
            got,
            expected_counts(reports, series, range, bucket),
            "counts of {series:?} over {from}..{to} by {bucket} s"
        );

        let country = [None, Some("PK"), Some("GB")][rng.gen_range(0..3)];
        let cities = rng.gen_bool(0.5);
        let mut regions: Vec<(String, String, i64)> = store
            .region_counts("x", country, cities, range)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.country, r.city, r.count))
            .collect();
        regions.sort();
        assert_eq!(
            regions,
            expected_regions(reports, country, cities, range),
            "regions of {country:?} (cities: {cities}) over {from}..{to}"
        );
        together_as_apart(store, series, range, bucket, (country, cities)).await;

        let mut top: Vec<(String, String, i64)> =
            expected_regions(reports, Some("PK"), true, range);
        top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        top.truncate(2);
        let got: Vec<(String, String, i64)> = store
            .top_cities(&SeriesKey::country("x", "PK"), range, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.country, c.city, c.count))
            .collect();
        assert_eq!(got, top, "top cities over {from}..{to}");
    }
}

on_both_backends!(
    tiers_answer_what_the_minutes_add_up_to,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;

        let now = outagewatch::runtime::clock::now();
        let start = minute_of(now) - TimeDelta::minutes(SPAN_MINUTES);
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        let mut reports: Vec<NewReport> = (0..600u128)
            .map(|id| {
                let city = CITIES[rng.gen_range(0..CITIES.len())];
                let country = if city == Some("London") {
                    "GB"
                } else if city.is_some() {
                    "PK"
                } else {
                    COUNTRIES[rng.gen_range(0..2)]
                };
                // Up to the current second; a third in the last minutes, which are live on
                // Postgres until they settle.
                let end = (now - start).num_seconds();
                let seconds = if id % 3 == 0 {
                    rng.gen_range(end - 150..end)
                } else {
                    rng.gen_range(0..end)
                };
                new_report(id + 1, country, city, start + TimeDelta::seconds(seconds))
            })
            .collect();
        store_all(&*store, &reports, now).await;
        // An expectation for every quarter of every series over the span, across a midnight
        // where the span has one, so the reads together have day rows to join.
        let quarter = |q: i64| floor_to(start, 900) + TimeDelta::minutes(15 * q);
        let mut written = Vec::new();
        for q in -1..(SPAN_MINUTES / 15 + 10) {
            for (country, city) in [
                ("", ""),
                ("PK", ""),
                ("GB", ""),
                ("PK", "Lahore"),
                ("PK", "Karachi"),
                ("GB", "London"),
            ] {
                written.push(Expectation {
                    service: "x".into(),
                    country: country.into(),
                    city: city.into(),
                    quarter: quarter(q),
                    expected: 0.25 * q as f64 + city.len() as f64 / 3.0,
                });
            }
        }
        store
            .insert_recomputed_expectations(&written)
            .await
            .unwrap();
        // Incidents of every scope, open and resolved, one of a city without reports.
        let incidents: Vec<Incident> = [
            (1, Scope::City, Some("PK"), Some("Lahore"), Status::Open),
            (2, Scope::City, Some("GB"), Some("Bristol"), Status::Open),
            (
                3,
                Scope::City,
                Some("PK"),
                Some("Karachi"),
                Status::Resolved,
            ),
            (4, Scope::Country, Some("GB"), None, Status::Open),
            (5, Scope::Country, Some("PK"), None, Status::Resolved),
            (6, Scope::Global, None, None, Status::Open),
        ]
        .into_iter()
        .map(|(n, scope, country, city, status)| Incident {
            scope,
            city: city.map(str::to_owned),
            ..common::incident("x", country, start + TimeDelta::minutes(n), status)
        })
        .collect();
        store
            .write_detection(&DetectionWrite {
                incidents: &incidents,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        reads_match(&*store, &reports, now, 1).await;

        // Postgres moves every minute out of its live table into the tiers.
        let moved = store
            .settle_rollups(minute_of(now) + TimeDelta::minutes(1))
            .await
            .unwrap();
        if matches!(backend, common::Backend::Postgres) {
            assert!(moved > 0, "nothing was live");
        }
        reads_match(&*store, &reports, now, 2).await;

        // A late report for a minute long settled adds to every tier.
        let late = new_report(1_000, "PK", Some("Lahore"), start + TimeDelta::seconds(61));
        store_all(&*store, std::slice::from_ref(&late), now).await;
        reports.push(late);
        reads_match(&*store, &reports, now, 3).await;
    }
);

on_both_backends!(
    the_migration_fills_the_tiers_from_the_stored_minutes,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let earlier = common::EarlierDb::migrate(backend, &db, "0010").await;
        // Minute rows as an earlier release stored them: 3 hours from 2025-03-10 10:00 UTC,
        // a country total and a city each minute.
        let start = DateTime::from_timestamp(1_741_600_800, 0).unwrap();
        let rows: Vec<(DateTime<Utc>, &str, i64)> = (0..180)
            .flat_map(|m| {
                let minute = start + TimeDelta::minutes(m);
                [(minute, "", 2 + m % 5), (minute, "Lahore", 1 + m % 3)]
            })
            .collect();
        let insert = "insert into rollups_minute (service, country, city, minute, count) \
             values ('x', 'PK', $1, $2, $3)";
        match &earlier {
            common::EarlierDb::Sqlite(pool) => {
                for (minute, city, count) in &rows {
                    sqlx::query(insert)
                        .bind(city)
                        .bind(minute.timestamp())
                        .bind(count)
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }
            common::EarlierDb::Postgres(pool) => {
                for (minute, city, count) in &rows {
                    sqlx::query(insert)
                        .bind(city)
                        .bind(minute)
                        .bind(count)
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }
        }
        earlier.close().await;
        let store = db.open_store().await;
        let range = TimeRange::new(start, start + TimeDelta::hours(3));
        for (series, city) in [
            (SeriesKey::country("x", "PK"), ""),
            (SeriesKey::city("x", "PK", "Lahore"), "Lahore"),
        ] {
            for bucket in [900, 3600] {
                let mut expected: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
                for (minute, _, count) in rows.iter().filter(|r| r.1 == city) {
                    *expected.entry(floor_to(*minute, bucket)).or_default() += count;
                }
                let got: Vec<(DateTime<Utc>, i64)> = store
                    .counts(&series, range, bucket)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|b| (b.start, b.count))
                    .collect();
                assert_eq!(
                    got,
                    expected.into_iter().collect::<Vec<_>>(),
                    "{series:?} by {bucket} s"
                );
            }
        }
    }
);

/// Migration 0013 turns Postgres' quarter rows into a row per series per day: every quarter's
/// count is read back as it was stored, on both sides of midnight, by each counts read and at
/// 15 minutes and an hour (SQLite keeps its quarter rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0013_keeps_every_quarter_count_on_postgres() {
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let earlier = common::EarlierDb::migrate(common::Backend::Postgres, &db, "0013").await;
    let common::EarlierDb::Postgres(pool) = &earlier else {
        unreachable!()
    };
    // Quarter rows as the release before stored them, from 2025-03-09 22:00 to 2025-03-10
    // 02:00 UTC: a country total in every quarter but each fifth, and a city in every third.
    let start = DateTime::from_timestamp(1_741_557_600, 0).unwrap();
    let rows: Vec<(DateTime<Utc>, &str, i64)> = (0..16)
        .flat_map(|q| {
            let quarter = start + TimeDelta::minutes(15 * q);
            let total = (q % 5 != 0).then_some((quarter, "", 10 + q));
            let city = (q % 3 == 0).then_some((quarter, "Lahore", 1 + q));
            total.into_iter().chain(city)
        })
        .collect();
    for (quarter, city, count) in &rows {
        sqlx::query(
            "insert into rollups_quarter (service, country, city, quarter, count) \
             values ('x', 'PK', $1, $2, $3)",
        )
        .bind(city)
        .bind(quarter)
        .bind(count)
        .execute(pool)
        .await
        .unwrap();
    }
    earlier.close().await;
    let store = db.open_store().await;
    let day_rows: i64 = sqlx::query_scalar("select count(*) from rollups_quarter_day")
        .fetch_one(&sqlx::PgPool::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(day_rows, 4, "two series on two days");
    let range = TimeRange::new(start, start + TimeDelta::hours(4));
    for (series, city) in [
        (SeriesKey::country("x", "PK"), ""),
        (SeriesKey::city("x", "PK", "Lahore"), "Lahore"),
    ] {
        let expected: Vec<(DateTime<Utc>, i64)> = rows
            .iter()
            .filter(|r| r.1 == city)
            .map(|&(quarter, _, count)| (quarter, count))
            .collect();
        let got: Vec<(DateTime<Utc>, i64)> = store
            .counts(&series, range, 900)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.start, b.count))
            .collect();
        assert_eq!(got, expected, "{series:?}");
        let (answer, _) = store
            .counts_expected(&series, range, 900, range)
            .await
            .unwrap();
        let answer: Vec<(DateTime<Utc>, i64)> =
            answer.into_iter().map(|b| (b.start, b.count)).collect();
        assert_eq!(answer, expected, "{series:?} in one statement");
    }
}

on_both_backends!(
    a_range_that_ends_or_starts_within_a_second_counts_the_minutes_it_covers,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let now = outagewatch::runtime::clock::now();
        let minute = minute_of(now);
        let before = minute - TimeDelta::minutes(1);
        let reports = [
            new_report(1, "PK", Some("Lahore"), before),
            new_report(2, "PK", Some("Lahore"), minute),
        ];
        store_all(&*store, &reports, now).await;

        // Half a second into each minute: the earlier minute starts before the range, the
        // later one within it (a read in the first second of the minute a report came in).
        let half = TimeDelta::milliseconds(500);
        let range = TimeRange::new(before + half, minute + half);
        let counts: Vec<(DateTime<Utc>, i64)> = store
            .counts(&SeriesKey::global("x"), range, 60)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.start, b.count))
            .collect();
        assert_eq!(counts, vec![(minute, 1)]);
        let regions: Vec<(String, i64)> = store
            .region_counts("x", None, false, range)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.country, r.count))
            .collect();
        assert_eq!(regions, vec![("PK".to_owned(), 1)]);
    }
);
