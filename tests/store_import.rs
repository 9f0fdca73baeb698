//! The import path ([`ReportStore::import_reports`], on Postgres a COPY) stores and counts a
//! batch exactly as the live insert does: the same outcomes (dedup within the batch and
//! against stored reports, replays of stored ids) and the same counts, on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use outagewatch::domain::buckets::floor_to;
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::store::{Fingerprint, ImportHints, NewReport, SeriesKey, Store, TimeRange};
use uuid::Uuid;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn report(
    id: u128,
    reporter: u8,
    city: Option<&'static str>,
    received_at: DateTime<Utc>,
) -> NewReport {
    NewReport {
        id: Uuid::from_u128(id),
        client_id: true,
        received_at,
        service: Catalog::new([("x", "X")]).services()[0].slug.clone(),
        country: CountryCode::parse("PK").unwrap(),
        city,
        problem: Problem::App,
        fingerprint: Fingerprint([reporter; 16]),
        dedup_window_start: floor_to(received_at, 900),
        network: None,
    }
}

/// What a store holds after the batches: each batch's (id, counted, replay), the report
/// count and the quarter-hour counts of Pakistan and of Lahore.
/// How the batches are written: the live insert, or the import path with or without the
/// hints an importer learns from its earlier batches.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Insert,
    Import,
    ImportLearning,
}

async fn stored(store: &dyn Store, batches: &[Vec<NewReport>], path: Path) -> String {
    let now = at("2025-03-12T00:00:00Z");
    let mut answer = String::new();
    let mut hints = ImportHints::default();
    for batch in batches {
        let outcomes = match path {
            Path::Insert => store.insert_reports(batch, now).await.unwrap(),
            Path::Import => store
                .import_reports(batch, &ImportHints::default(), now)
                .await
                .unwrap(),
            Path::ImportLearning => {
                let outcomes = store.import_reports(batch, &hints, now).await.unwrap();
                hints.learn(batch, &outcomes);
                outcomes
            }
        };
        for o in outcomes {
            answer += &format!(
                "{}:{}{} ",
                o.id.as_u128(),
                u8::from(o.counted),
                u8::from(o.replay)
            );
        }
        answer += "| ";
    }
    answer += &format!("reports {} |", store.report_count().await.unwrap());
    let range = TimeRange::new(at("2025-03-10T00:00:00Z"), at("2025-03-11T00:00:00Z"));
    for series in [
        SeriesKey::country("x", "PK"),
        SeriesKey::city("x", "PK", "Lahore"),
    ] {
        for bucket in store.counts(&series, range, 900).await.unwrap() {
            answer += &format!(" {}={}", bucket.start.format("%H:%M"), bucket.count);
        }
        answer += " |";
    }
    answer
}

on_both_backends!(
    an_import_stores_and_counts_as_the_live_insert_does,
    |backend| async move {
        let t = at("2025-03-10T10:00:00Z");
        let minute = |m: i64| t + TimeDelta::minutes(m);
        let batches = vec![
            // Reporter 1 twice in one window (the second uncounted), reporter 2 in Lahore.
            vec![
                report(1, 1, None, minute(0)),
                report(2, 1, Some("Lahore"), minute(3)),
                report(3, 2, Some("Lahore"), minute(5)),
            ],
            // A re-run of report 1, reporter 1 again in the window (already counted there),
            // reporter 1 in the next window, and a new reporter.
            vec![
                report(1, 1, None, minute(0)),
                report(4, 1, None, minute(10)),
                report(5, 1, Some("Lahore"), minute(16)),
                report(6, 3, None, minute(20)),
            ],
            // Reporter 1 again in the second window (counted by report 5: learning, the
            // import knows without asking) and a new reporter there.
            vec![
                report(7, 1, None, minute(25)),
                report(8, 4, Some("Lahore"), minute(26)),
            ],
        ];
        let live = common::TestDb::new(backend).await;
        let by_insert = stored(live.open_store().await.as_ref(), &batches, Path::Insert).await;
        assert_eq!(
            by_insert,
            "1:10 2:00 3:10 | 1:11 4:00 5:10 6:10 | 7:00 8:10 | reports 8 | \
             10:00=2 10:15=3 | 10:00=1 10:15=2 |"
        );
        for path in [Path::Import, Path::ImportLearning] {
            let imported = common::TestDb::new(backend).await;
            let by_import = stored(imported.open_store().await.as_ref(), &batches, path).await;
            assert_eq!(by_import, by_insert);
        }
    }
);
