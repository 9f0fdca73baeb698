//! Compact expectations: a day row per series keeps every quarter's expectation exactly as the
//! quarter rows did, through migration 0011, across days, and through a cleared range.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use outagewatch::store::{self, DetectionWrite, Expectation, SeriesKey, TimeRange};

/// 2025-03-11 00:00 UTC: quarters below 0 are on the day before.
const T: i64 = 1_741_651_200;

fn quarter(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T + n * 900, 0).unwrap()
}

/// Doubles that a decimal text form with too few digits would change.
const AWKWARD: [f64; 6] = [
    0.1 + 0.2,
    1.0 / 3.0,
    2.0 / 3.0 * 1e-7,
    123_456.789_012_345_6,
    0.0,
    17.25,
];

fn expectations() -> Vec<(String, i64, f64)> {
    // Quarters -3 ..= 2, across midnight, for the country and for Lahore; and a whole day
    // (quarters 0 ..= 95) for Karachi.
    let karachi = (0..96).map(|n| {
        (
            "Karachi".to_owned(),
            n,
            AWKWARD[(n % 6) as usize] + n as f64,
        )
    });
    ["", "Lahore"]
        .into_iter()
        .flat_map(|city| {
            (-3..3).map(move |n| {
                (
                    city.to_owned(),
                    n,
                    AWKWARD[(n + 3) as usize] * (1.0 + city.len() as f64),
                )
            })
        })
        .chain(karachi)
        .collect()
}

async fn read(
    store: &dyn store::Store,
    city: &str,
    from: i64,
    to: i64,
) -> Vec<(DateTime<Utc>, f64)> {
    let key = if city.is_empty() {
        SeriesKey::country("x", "PK")
    } else {
        SeriesKey::city("x", "PK", city)
    };
    store
        .expectations(&key, TimeRange::new(quarter(from), quarter(to)))
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.quarter, q.expected))
        .collect()
}

fn expected(city: &str, from: i64, to: i64) -> Vec<(DateTime<Utc>, f64)> {
    expectations()
        .into_iter()
        .filter(|(c, n, _)| c == city && (from..to).contains(n))
        .map(|(_, n, e)| (quarter(n), e))
        .collect()
}

on_both_backends!(
    migration_0011_keeps_every_expectation_exactly,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let earlier = common::EarlierDb::migrate(backend, &db, "0011").await;
        let insert =
            "insert into expectations_quarter (service, country, city, quarter, expected) \
             values ('x', 'PK', $1, $2, $3)";
        match &earlier {
            common::EarlierDb::Sqlite(pool) => {
                for (city, n, e) in expectations() {
                    sqlx::query(insert)
                        .bind(city)
                        .bind(quarter(n).timestamp())
                        .bind(e)
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }
            common::EarlierDb::Postgres(pool) => {
                for (city, n, e) in expectations() {
                    sqlx::query(insert)
                        .bind(city)
                        .bind(quarter(n))
                        .bind(e)
                        .execute(pool)
                        .await
                        .unwrap();
                }
            }
        }
        earlier.close().await;
        let store = db.open_store().await;
        for city in ["", "Lahore", "Karachi"] {
            assert_eq!(
                read(&*store, city, -10, 100).await,
                expected(city, -10, 100)
            );
        }
        // Two days of two series and a day of a third: five rows where there were 108.
        let rows: i64 = match backend {
            common::Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
                sqlx::query_scalar("select count(*) from expectations_day")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
            common::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                sqlx::query_scalar("select count(*) from expectations_day")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(rows, 5);
    }
);

on_both_backends!(
    day_rows_answer_each_quarter_across_midnight_and_a_cleared_range,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let written: Vec<Expectation> = expectations()
            .into_iter()
            .map(|(city, n, expected)| Expectation {
                service: "x".into(),
                country: "PK".into(),
                city,
                quarter: quarter(n),
                expected,
            })
            .collect();
        // Written a quarter at a time, as the live detector does.
        for e in &written {
            store
                .write_detection(&DetectionWrite {
                    expectations: std::slice::from_ref(e),
                    ..DetectionWrite::default()
                })
                .await
                .unwrap();
        }
        for city in ["", "Lahore"] {
            assert_eq!(read(&*store, city, -10, 10).await, expected(city, -10, 10));
            // A range inside one day, and one starting mid-quarter-list.
            assert_eq!(read(&*store, city, -2, 0).await, expected(city, -2, 0));
            assert_eq!(read(&*store, city, 1, 2).await, expected(city, 1, 2));
        }
        // Clearing quarters -1 and 0 (across midnight) keeps the rest of both days.
        store
            .clear_expectations(quarter(-1), quarter(1))
            .await
            .unwrap();
        let mut kept = expected("", -3, -1);
        kept.extend(expected("", 1, 3));
        assert_eq!(read(&*store, "", -10, 10).await, kept);
        // The cleared quarters take recomputed values; a kept one refuses them.
        store
            .insert_recomputed_expectations(&[Expectation {
                quarter: quarter(-1),
                expected: 9.5,
                ..written[0].clone()
            }])
            .await
            .unwrap();
        assert_eq!(read(&*store, "", -1, 0).await, [(quarter(-1), 9.5)]);
        assert!(store
            .insert_recomputed_expectations(&[Expectation {
                quarter: quarter(1),
                expected: 9.5,
                ..written[0].clone()
            }])
            .await
            .is_err());
        // Clearing whole days deletes their rows.
        store
            .clear_expectations(quarter(-96), quarter(96))
            .await
            .unwrap();
        assert_eq!(read(&*store, "", -10, 10).await, []);
        assert_eq!(read(&*store, "Lahore", -10, 10).await, []);
    }
);
