//! The store contract: every test runs on SQLite and on Postgres and must give the same answers.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::incidents::{self, CityCount, Incident, Status};
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::store::{
    self, Attempt, Checkpoint, ConnectOptions, DeliveryStatus, DetectionWrite, Fingerprint,
    IncidentAction, IncidentQuery, NetworkQuota, NewDelivery, NewReport, Rollup, SeriesKey,
    ServiceRecord, Store, TimeRange,
};
// The Postgres-only tests call a concrete PostgresStore: its roles must be in scope.
use outagewatch::store::{CoordinationStore, DetectionStore, ReadStore, ReportStore};
use uuid::Uuid;

async fn open(backend: common::Backend) -> (Arc<dyn Store>, common::TestDb) {
    let db = common::TestDb::new(backend).await;
    let store = db.open_store().await;
    // Migrating twice is a no-op.
    store.migrate().await.unwrap();
    (store, db)
}

/// 2025-03-10 10:08:00 UTC.
const T0: i64 = 1_741_601_280;

fn at(seconds_after_t0: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + seconds_after_t0, 0).unwrap()
}

fn report(id: u128, reporter: u8, city: Option<&'static str>, seconds_after_t0: i64) -> NewReport {
    report_at(id, reporter, city, at(seconds_after_t0))
}

fn report_at(
    id: u128,
    reporter: u8,
    city: Option<&'static str>,
    received_at: DateTime<Utc>,
) -> NewReport {
    let catalog = Catalog::new([("x", "X")]);
    let window = received_at.timestamp() - received_at.timestamp().rem_euclid(900);
    NewReport {
        id: Uuid::from_u128(id),
        client_id: true,
        received_at,
        service: catalog.services()[0].slug.clone(),
        country: CountryCode::parse("PK").unwrap(),
        city,
        problem: Problem::App,
        fingerprint: Fingerprint([reporter; 16]),
        dedup_window_start: DateTime::from_timestamp(window, 0).unwrap(),
        network: None,
    }
}

fn rollup(seconds_after_t0: i64, city: &str, count: i64) -> Rollup {
    rollup_in(at(seconds_after_t0), city, count)
}

fn rollup_in(minute: DateTime<Utc>, city: &str, count: i64) -> Rollup {
    Rollup {
        minute,
        country: "PK".into(),
        city: city.into(),
        count,
    }
}

/// Stores a batch as the batch writer does, committed now; the outcomes in the batch's order.
async fn insert(store: &(impl ReportStore + ?Sized), reports: &[NewReport]) -> Vec<store::Outcome> {
    store
        .insert_reports(reports, outagewatch::runtime::clock::now())
        .await
        .unwrap()
}

/// Stores incidents as the detector writes them, in one transaction.
async fn write_incidents(store: &dyn Store, incidents: &[Incident]) {
    let write = DetectionWrite {
        incidents,
        ..DetectionWrite::default()
    };
    store.write_detection(&write).await.unwrap();
}

/// Queues webhook deliveries as the detector does, in one transaction.
async fn queue_deliveries(store: &dyn Store, deliveries: &[NewDelivery]) {
    let write = DetectionWrite {
        deliveries,
        ..DetectionWrite::default()
    };
    store.write_detection(&write).await.unwrap();
}

/// Stores the detector's learned expectations, in one transaction.
async fn write_expectations(store: &dyn Store, expectations: &[store::Expectation]) {
    let write = DetectionWrite {
        expectations,
        ..DetectionWrite::default()
    };
    store.write_detection(&write).await.unwrap();
}

/// Problem counts as (kind, count) pairs, to compare with literals.
fn problem_pairs(counts: Vec<store::ProblemCount>) -> Vec<(String, i64)> {
    counts.into_iter().map(|p| (p.problem, p.count)).collect()
}

/// The start of the `n`-th quarter hour from the one `T0` falls in (10:00 UTC).
fn quarter(n: i64) -> DateTime<Utc> {
    at(n * 900 - 480)
}

/// The expectations of `key` over the hour from the quarter `T0` falls in, as (quarter,
/// expected) pairs to compare with literals.
async fn first_hour_expectations(store: &dyn Store, key: &SeriesKey) -> Vec<(DateTime<Utc>, f64)> {
    store
        .expectations(key, TimeRange::new(quarter(0), quarter(4)))
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.quarter, q.expected))
        .collect()
}

/// An expectation of X in Pakistan (in `city`, or the country's own with `""`) for the
/// `n`-th quarter hour from the one `T0` falls in.
fn expectation(city: &str, n: i64, expected: f64) -> store::Expectation {
    store::Expectation {
        service: "x".into(),
        country: "PK".into(),
        city: city.into(),
        quarter: quarter(n),
        expected,
    }
}

on_both_backends!(a_new_report_is_stored_and_counted, |backend| async move {
    let (store, _db) = open(backend).await;
    let outcomes = insert(&*store, &[report(1, 1, Some("Lahore"), 5)]).await;
    assert_eq!((outcomes[0].counted, outcomes[0].replay), (true, false));
    let stored = store.report(Uuid::from_u128(1)).await.unwrap().unwrap();
    assert_eq!(stored.city.as_deref(), Some("Lahore"));
    assert_eq!(stored.country, "PK");
    assert_eq!(stored.problem, "app");
    assert_eq!(stored.received_at, at(5));
    assert!(stored.counted);
});

on_both_backends!(
    a_duplicate_report_is_stored_but_not_counted,
    |backend| async move {
        let (store, _db) = open(backend).await;
        // Same reporter, same service, same 15-minute window (10:00-10:15): in one batch and in a later one.
        let first = insert(&*store, &[report(1, 9, None, 0), report(2, 9, None, 30)]).await;
        let later = insert(&*store, &[report(3, 9, None, 400)]).await;
        let counted: Vec<bool> = first.iter().chain(&later).map(|o| o.counted).collect();
        assert_eq!(counted, [true, false, false]);
        assert_eq!(store.report_count().await.unwrap(), 3);
        let rollups = store.rollups("x", at(0), at(3600)).await.unwrap();
        assert_eq!(rollups, [rollup(0, "", 1)]);
    }
);

on_both_backends!(
    the_same_reporter_counts_again_in_the_next_window,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let outcomes = insert(&*store, &[report(1, 9, None, 0), report(2, 9, None, 900)]).await;
        assert_eq!(
            outcomes.iter().map(|o| o.counted).collect::<Vec<_>>(),
            [true, true]
        );
    }
);

on_both_backends!(
    replaying_an_id_stores_nothing_twice_and_returns_the_original_outcome,
    |backend| async move {
        let (store, _db) = open(backend).await;
        insert(&*store, &[report(1, 1, None, 0), report(2, 1, None, 1)]).await;
        let replay = insert(
            &*store,
            &[
                report(2, 1, None, 1),
                report(1, 1, None, 0),
                report(3, 2, None, 2),
            ],
        )
        .await;
        let got: Vec<(u128, bool, bool)> = replay
            .iter()
            .map(|o| (o.id.as_u128(), o.counted, o.replay))
            .collect();
        assert_eq!(got, [(2, false, true), (1, true, true), (3, true, false)]);
        assert_eq!(store.report_count().await.unwrap(), 3);
        assert_eq!(
            store.rollups("x", at(0), at(60)).await.unwrap(),
            [rollup(0, "", 2)]
        );
    }
);

on_both_backends!(
    rollups_count_each_counted_report_in_its_city_and_its_country_total,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let batch = [
            report(1, 1, Some("Lahore"), 0),
            report(2, 2, Some("Lahore"), 10),
            report(3, 3, Some("Karachi"), 20),
            report(4, 4, None, 70),
            report(5, 4, Some("Lahore"), 80), // reporter 4 again: stored, not counted
        ];
        insert(&*store, &batch).await;
        insert(&*store, &[report(6, 5, Some("Lahore"), 75)]).await;
        let rollups = store.rollups("x", at(0), at(120)).await.unwrap();
        assert_eq!(
            rollups,
            [
                rollup(0, "", 3),
                rollup(0, "Karachi", 1),
                rollup(0, "Lahore", 2),
                rollup(60, "", 2),
                rollup(60, "Lahore", 1),
            ]
        );
        assert!(store
            .rollups("youtube", at(0), at(120))
            .await
            .unwrap()
            .is_empty());
    }
);

on_both_backends!(
    stored_ids_finds_exactly_the_stored_ones,
    |backend| async move {
        let (store, _db) = open(backend).await;
        insert(&*store, &[report(1, 1, None, 0), report(2, 2, None, 0)]).await;
        let found = store
            .stored_ids(&[Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)])
            .await
            .unwrap();
        let mut found: Vec<u128> = found.into_iter().map(|id| id.as_u128()).collect();
        found.sort();
        assert_eq!(found, [1, 2]);
        assert!(store.report(Uuid::from_u128(3)).await.unwrap().is_none());
    }
);

on_both_backends!(
    the_reporter_secret_is_kept_per_day_and_old_ones_are_deleted,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let day = |d: u32| NaiveDate::from_ymd_opt(2025, 3, d).unwrap();
        let first = store.reporter_secret(day(10), [1; 32]).await.unwrap();
        let again = store.reporter_secret(day(10), [2; 32]).await.unwrap();
        assert_eq!((first, again), ([1; 32], [1; 32]));
        assert_eq!(
            store.reporter_secret(day(11), [3; 32]).await.unwrap(),
            [3; 32]
        );
        // Day 12 keeps day 11 (still within 48 h) and deletes day 10, so asking for 10 again stores a new one.
        assert_eq!(
            store.reporter_secret(day(12), [4; 32]).await.unwrap(),
            [4; 32]
        );
        assert_eq!(
            store.reporter_secret(day(11), [5; 32]).await.unwrap(),
            [3; 32]
        );
        assert_eq!(
            store.reporter_secret(day(10), [6; 32]).await.unwrap(),
            [6; 32]
        );
    }
);

on_both_backends!(a_large_batch_commits_in_one_piece, |backend| async move {
    let (store, _db) = open(backend).await;
    // Over the SQLite statement chunk size, to cross chunk boundaries.
    let batch: Vec<NewReport> = (0..2500u128)
        .map(|i| report(i + 1, (i % 200) as u8, None, (i % 60) as i64))
        .collect();
    let outcomes = insert(&*store, &batch).await;
    assert_eq!(outcomes.len(), 2500);
    assert_eq!(outcomes.iter().filter(|o| o.counted).count(), 200);
    assert_eq!(store.report_count().await.unwrap(), 2500);
    assert_eq!(
        store.rollups("x", at(0), at(60)).await.unwrap(),
        [rollup(0, "", 200)]
    );
});

/// The shared incident fixture with cities, a problem mix and a summary of its own, updated a
/// minute after it started.
fn incident(service: &str, country: Option<&str>, started: i64, status: Status) -> Incident {
    Incident {
        excess_reports: 1234.5,
        top_cities: vec![CityCount {
            country: "PK".into(),
            city: "Lahore".into(),
            count: 50,
        }],
        problems: [("app".to_owned(), 0.75), ("login".to_owned(), 0.25)]
            .into_iter()
            .collect(),
        summary: "Reports about X in Pakistan rose.".into(),
        updated_at: at(started + 60),
        ..common::incident(service, country, at(started), status)
    }
}

on_both_backends!(
    incidents_round_trip_filter_and_page_newest_first,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let mut pk = incident("x", Some("PK"), 0, Status::Open);
        let global = incident("x", None, 60, Status::Resolved);
        let yt = incident("youtube", Some("PK"), 120, Status::Open);
        pk.parent_id = Some(global.id);
        let all = [pk.clone(), global.clone(), yt.clone()];
        write_incidents(&*store, &all).await;
        assert_eq!(store.incident(pk.id).await.unwrap(), Some(pk.clone()));
        assert_eq!(store.incident(Uuid::from_u128(9)).await.unwrap(), None);
        let list = |query: IncidentQuery| {
            let store = store.clone();
            async move {
                let found = store.incidents(&query).await.unwrap();
                found.into_iter().map(|i| i.id).collect::<Vec<_>>()
            }
        };
        let everything = IncidentQuery {
            limit: 10,
            ..IncidentQuery::default()
        };
        assert_eq!(list(everything.clone()).await, [yt.id, global.id, pk.id]);
        assert_eq!(
            list(IncidentQuery {
                service: Some("x".into()),
                ..everything.clone()
            })
            .await,
            [global.id, pk.id]
        );
        assert_eq!(
            list(IncidentQuery {
                country: Some("PK".into()),
                status: Some(Status::Open),
                ..everything.clone()
            })
            .await,
            [yt.id, pk.id]
        );
        assert_eq!(
            list(IncidentQuery {
                since: Some(at(60)),
                ..everything.clone()
            })
            .await,
            [yt.id, global.id]
        );
        assert_eq!(
            list(IncidentQuery {
                limit: 1,
                after: Some((global.started_at, global.id)),
                ..everything.clone()
            })
            .await,
            [pk.id]
        );
        // Writing again overwrites by id; a replaced range is deleted first.
        let mut resolved = pk.clone();
        resolved.status = Status::Resolved;
        resolved.resolved_at = Some(at(7200));
        store
            .write_detection(&DetectionWrite {
                replace: Some((at(60), at(180))),
                incidents: std::slice::from_ref(&resolved),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        assert_eq!(list(everything).await, [pk.id]);
        assert_eq!(store.incident(pk.id).await.unwrap(), Some(resolved));
    }
);

on_both_backends!(
    an_incident_keeps_the_minute_it_was_detected_and_a_rewrite_replaces_it,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let mut pk = incident("x", Some("PK"), 0, Status::Open);
        assert_eq!((pk.started_at, pk.detected_at), (at(0), at(120)));
        let write = |incident: Incident| {
            let store = store.clone();
            async move {
                write_incidents(&*store, &[incident]).await;
            }
        };
        write(pk.clone()).await;
        let stored = store.incident(pk.id).await.unwrap().unwrap();
        assert_eq!((stored.started_at, stored.detected_at), (at(0), at(120)));
        let listed = store
            .incidents(&IncidentQuery {
                limit: 10,
                ..IncidentQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(listed[0].detected_at, at(120));
        // A redetect that computes another minute writes it over the stored one.
        pk.detected_at = at(180);
        write(pk.clone()).await;
        assert_eq!(
            store.incident(pk.id).await.unwrap().unwrap().detected_at,
            at(180)
        );
    }
);

on_both_backends!(
    incidents_stored_before_detected_at_existed_are_given_their_start,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        // The schema as it stood before migration 0009, from a copy of the earlier files.
        let earlier = common::EarlierDb::migrate(backend, &db, "0009").await;
        let id = incidents::incident_id("x", Some("PK"), None, at(0));
        let columns = "id, service, scope, country, city, status, started_at, peak_at, \
             peak_count, expected_at_peak, start_count, excess_reports, resolved_at, top_cities, \
             problems, parent_id, summary, updated_at";
        match &earlier {
            common::EarlierDb::Sqlite(pool) => {
                sqlx::query(&format!(
                    "insert into incidents ({columns}) values (?, 'x', 'country', 'PK', null, \
                     'resolved', ?, ?, 136, 4.5, 74, 900, ?, '[]', '{{}}', null, 'Old.', ?)"
                ))
                .bind(id)
                .bind(at(0).timestamp())
                .bind(at(600).timestamp())
                .bind(at(3600).timestamp())
                .bind(at(3600).timestamp())
                .execute(pool)
                .await
                .unwrap();
            }
            common::EarlierDb::Postgres(pool) => {
                sqlx::query(&format!(
                    "insert into incidents ({columns}) values ($1, 'x', 'country', 'PK', null, \
                     'resolved', $2, $3, 136, 4.5, 74, 900, $4, '[]', '{{}}', null, 'Old.', $4)"
                ))
                .bind(id)
                .bind(at(0))
                .bind(at(600))
                .bind(at(3600))
                .execute(pool)
                .await
                .unwrap();
            }
        }
        earlier.close().await;
        let store = db.open_store().await;
        let old = store.incident(id).await.unwrap().unwrap();
        assert_eq!(
            (old.started_at, old.detected_at, old.peak_at),
            (at(0), at(0), at(600))
        );
        // New incidents carry their own.
        let new = incident("x", Some("GB"), 60, Status::Open);
        write_incidents(&*store, std::slice::from_ref(&new)).await;
        assert_eq!(
            store.incident(new.id).await.unwrap().unwrap().detected_at,
            at(180)
        );
    }
);

on_both_backends!(
    the_checkpoint_keeps_the_watermark_and_the_last_snapshot,
    |backend| async move {
        let (store, _db) = open(backend).await;
        assert_eq!(store.checkpoint().await.unwrap(), None);
        store
            .write_detection(&DetectionWrite {
                watermark: Some(at(0)),
                state: Some((at(0), "{\"a\":1}")),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        store
            .write_detection(&DetectionWrite {
                watermark: Some(at(120)),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        assert_eq!(
            store.checkpoint().await.unwrap(),
            Some(Checkpoint {
                watermark: at(120),
                state: Some((at(0), "{\"a\":1}".to_owned())),
            })
        );
    }
);

on_both_backends!(
    the_detector_reads_minutes_cities_and_problems,
    |backend| async move {
        let (store, _db) = open(backend).await;
        assert_eq!(store.first_rollup_minute().await.unwrap(), None);
        let mut batch = vec![
            report(1, 1, Some("Lahore"), 5),
            report(2, 2, Some("Lahore"), 65),
            report(3, 3, Some("Karachi"), 70),
            report(4, 4, None, 75),
            // A duplicate of reporter 1: stored, not counted, so in no count below.
            report(5, 1, Some("Karachi"), 80),
        ];
        batch[1].problem = Problem::Login;
        insert(&*store, &batch).await;
        assert_eq!(store.first_rollup_minute().await.unwrap(), Some(at(0)));
        let minutes = store.minute_counts(at(60), at(120)).await.unwrap();
        let rows: Vec<(i64, &str, &str, i64)> = minutes
            .in_order()
            .iter()
            .map(|m| (m.minute.timestamp() - T0, m.service, m.city, m.count))
            .collect();
        assert_eq!(
            rows,
            [
                (60, "x", "", 3),
                (60, "x", "Karachi", 1),
                (60, "x", "Lahore", 1)
            ]
        );
        let cities = store
            .top_cities(
                &SeriesKey::country("x", "PK"),
                TimeRange::new(at(0), at(120)),
                5,
            )
            .await
            .unwrap();
        let cities: Vec<(&str, i64)> = cities.iter().map(|c| (c.city.as_str(), c.count)).collect();
        assert_eq!(cities, [("Lahore", 2), ("Karachi", 1)]);
        assert_eq!(
            store
                .top_cities(&SeriesKey::global("x"), TimeRange::new(at(0), at(120)), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .problem_counts(
                    &SeriesKey::country("x", "PK"),
                    TimeRange::new(at(0), at(120))
                )
                .await
                .map(problem_pairs)
                .unwrap(),
            [("app".to_owned(), 3), ("login".to_owned(), 1)]
        );
        assert_eq!(
            store
                .problem_counts(
                    &SeriesKey::city("x", "PK", "Lahore"),
                    TimeRange::new(at(60), at(120))
                )
                .await
                .map(problem_pairs)
                .unwrap(),
            [("login".to_owned(), 1)]
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_postgres_session_leads_the_detector_until_it_lets_go() {
    let (store, _db) = open(common::Backend::Postgres).await;
    let mut first = store.try_lead_detector().await.unwrap().expect("free lock");
    assert!(first.still_held().await);
    assert!(store.try_lead_detector().await.unwrap().is_none());
    first.release().await;
    let second = store.try_lead_detector().await.unwrap();
    assert!(second.expect("lock freed").still_held().await);
}

on_both_backends!(
    old_expectations_are_pruned_by_the_day_and_newer_kept,
    |backend| async move {
        let (store, _db) = open(backend).await;
        // Expectations are kept a UTC day at a time: quarter -4 is 09:00 of the same day as
        // quarters 0 and 1, quarter -96 the day before.
        write_expectations(
            &*store,
            &[
                expectation("", -96, 0.5),
                expectation("", -4, 1.0),
                expectation("", 0, 1.5),
                expectation("", 1, 2.5),
            ],
        )
        .await;
        store
            .write_detection(&DetectionWrite {
                prune_expectations_before: Some(quarter(1)),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        let kept = |from: i64| {
            let store = store.clone();
            async move {
                store
                    .expectations(
                        &SeriesKey::country("x", "PK"),
                        TimeRange::new(quarter(from), quarter(4)),
                    )
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|q| (q.quarter, q.expected))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            kept(-200).await,
            [(quarter(-4), 1.0), (quarter(0), 1.5), (quarter(1), 2.5)]
        );
    }
);

on_both_backends!(
    recomputed_expectations_replace_a_cleared_range_and_nothing_outside_it,
    |backend| async move {
        let (store, _db) = open(backend).await;
        write_expectations(
            &*store,
            &[
                expectation("", 0, 1.0),
                expectation("", 1, 2.0),
                expectation("", 2, 3.0),
                expectation("Lahore", 1, 0.5),
            ],
        )
        .await;
        // One day row each for the country and Lahore, trimmed.
        assert_eq!(
            store
                .clear_expectations(quarter(1), quarter(2))
                .await
                .unwrap(),
            2
        );
        // A name COPY's text format would otherwise read as a tab and a line break.
        let odd = "Odd\tname\\with\nbreaks";
        store
            .insert_recomputed_expectations(&[expectation("", 1, 2.25), expectation(odd, 1, 0.75)])
            .await
            .unwrap();
        assert_eq!(
            first_hour_expectations(&*store, &SeriesKey::country("x", "PK")).await,
            [(quarter(0), 1.0), (quarter(1), 2.25), (quarter(2), 3.0)]
        );
        assert_eq!(
            first_hour_expectations(&*store, &SeriesKey::city("x", "PK", "Lahore")).await,
            []
        );
        assert_eq!(
            first_hour_expectations(&*store, &SeriesKey::city("x", "PK", odd)).await,
            [(quarter(1), 0.75)]
        );
        // Recomputed rows land only where the range was cleared.
        assert!(store
            .insert_recomputed_expectations(&[expectation("", 2, 9.0)])
            .await
            .is_err());
    }
);

fn delivery(event: u128, endpoint: &str, incident: &Incident, created: i64) -> NewDelivery {
    NewDelivery {
        event_id: Uuid::from_u128(event),
        endpoint: endpoint.into(),
        event_type: "incident.opened",
        incident_id: incident.id,
        occurred_at: at(created),
        payload: format!("{{\"event\":{event}}}"),
        created_at: at(created),
    }
}

/// (event, endpoint) of each delivery, in the order given.
fn keys(deliveries: &[store::Delivery]) -> Vec<(u128, &str)> {
    deliveries
        .iter()
        .map(|d| (d.event_id.as_u128(), d.endpoint.as_str()))
        .collect()
}

on_both_backends!(
    webhook_deliveries_are_queued_with_their_incident_claimed_when_due_and_finished_once,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let pk = incident("x", Some("PK"), 0, Status::Open);
        let queued = [
            delivery(1, "a", &pk, 0),
            delivery(1, "b", &pk, 0),
            delivery(2, "a", &pk, 600),
        ];
        store
            .write_detection(&DetectionWrite {
                incidents: std::slice::from_ref(&pk),
                deliveries: &queued,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        // Queued again (a replay): the stored row stays as it was.
        let mut again = delivery(1, "a", &pk, 60);
        again.payload = "{}".into();
        queue_deliveries(&*store, &[again]).await;
        assert_eq!(store.incident(pk.id).await.unwrap(), Some(pk.clone()));
        let stored = store.webhook_deliveries(100).await.unwrap();
        assert_eq!(keys(&stored), [(1, "a"), (1, "b"), (2, "a")]);
        assert_eq!(stored[0].payload, "{\"event\":1}");
        assert_eq!(stored[0].status, DeliveryStatus::Pending);
        assert_eq!(stored[0].attempts, 0);
        assert_eq!(stored[0].incident_id, pk.id);
        assert_eq!(stored[0].event_type, "incident.opened");
        assert_eq!(
            (stored[0].created_at, stored[0].next_attempt_at),
            (at(0), at(0))
        );
        assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 3);

        let a = ["a".to_owned()];
        let both = ["a".to_owned(), "b".to_owned()];
        // Only due rows of the named endpoints; a claimed row is leased.
        let claimed = store
            .claim_webhook_deliveries(&a, at(300), at(330), 10)
            .await
            .unwrap();
        assert_eq!(keys(&claimed), [(1, "a")]);
        assert_eq!(claimed[0].next_attempt_at, at(330));
        assert!(store
            .claim_webhook_deliveries(&a, at(300), at(330), 10)
            .await
            .unwrap()
            .is_empty());
        // A lease that ends with no attempt recorded (the claimer died) makes the row due again.
        let claimed = store
            .claim_webhook_deliveries(&a, at(330), at(360), 10)
            .await
            .unwrap();
        assert_eq!(keys(&claimed), [(1, "a")]);
        let retry = Attempt::Retry {
            next_attempt_at: at(700),
            error: "HTTP 500".into(),
        };
        store
            .record_webhook_attempt(Uuid::from_u128(1), "a", at(340), &retry)
            .await
            .unwrap();

        // Oldest due first, at most the limit.
        let claimed = store
            .claim_webhook_deliveries(&both, at(650), at(680), 1)
            .await
            .unwrap();
        assert_eq!(keys(&claimed), [(1, "b")]);
        store
            .record_webhook_attempt(Uuid::from_u128(1), "b", at(660), &Attempt::Delivered)
            .await
            .unwrap();
        let claimed = store
            .claim_webhook_deliveries(&both, at(700), at(730), 10)
            .await
            .unwrap();
        assert_eq!(keys(&claimed), [(1, "a"), (2, "a")]);
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(claimed[0].last_error.as_deref(), Some("HTTP 500"));
        store
            .record_webhook_attempt(Uuid::from_u128(1), "a", at(710), &Attempt::Delivered)
            .await
            .unwrap();
        let failed = Attempt::Failed {
            error: "HTTP 404".into(),
        };
        store
            .record_webhook_attempt(Uuid::from_u128(2), "a", at(710), &failed)
            .await
            .unwrap();

        // Finished rows are never claimed again, and a late attempt does not reopen them.
        assert!(store
            .claim_webhook_deliveries(&both, at(99_999), at(99_999), 10)
            .await
            .unwrap()
            .is_empty());
        store
            .record_webhook_attempt(Uuid::from_u128(1), "b", at(720), &retry)
            .await
            .unwrap();
        let stored = store.webhook_deliveries(100).await.unwrap();
        let summary: Vec<_> = stored
            .iter()
            .map(|d| {
                (
                    d.status,
                    d.attempts,
                    d.last_error.as_deref(),
                    d.last_attempt_at,
                    d.finished_at,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    DeliveryStatus::Delivered,
                    2,
                    None,
                    Some(at(710)),
                    Some(at(710))
                ),
                (
                    DeliveryStatus::Delivered,
                    1,
                    None,
                    Some(at(660)),
                    Some(at(660))
                ),
                (
                    DeliveryStatus::Failed,
                    1,
                    Some("HTTP 404"),
                    Some(at(710)),
                    Some(at(710))
                ),
            ]
        );
        assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 0);
    }
);

on_both_backends!(
    webhook_deliveries_past_the_give_up_age_fail_and_finished_ones_are_forgotten_later,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let pk = incident("x", Some("PK"), 0, Status::Open);
        let queued = [
            delivery(1, "gone", &pk, 0),
            delivery(2, "a", &pk, 600),
            delivery(3, "a", &pk, 60),
        ];
        queue_deliveries(&*store, &queued).await;
        store
            .record_webhook_attempt(Uuid::from_u128(3), "a", at(120), &Attempt::Delivered)
            .await
            .unwrap();
        // Pending and enqueued before 300: given up, even for an endpoint nobody configures now.
        assert_eq!(
            store
                .expire_webhook_deliveries(at(300), at(0), at(900))
                .await
                .unwrap(),
            1
        );
        let stored = store.webhook_deliveries(100).await.unwrap();
        let summary: Vec<_> = stored
            .iter()
            .map(|d| {
                (
                    d.event_id.as_u128(),
                    d.status,
                    d.last_error.as_deref(),
                    d.finished_at,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    1,
                    DeliveryStatus::Failed,
                    Some("never attempted"),
                    Some(at(900))
                ),
                (3, DeliveryStatus::Delivered, None, Some(at(120))),
                (2, DeliveryStatus::Pending, None, None),
            ]
        );
        // Finished before 500 is forgotten; the one given up at 900 and the pending one stay.
        assert_eq!(
            store
                .expire_webhook_deliveries(at(300), at(500), at(901))
                .await
                .unwrap(),
            0
        );
        let left: Vec<u128> = store
            .webhook_deliveries(100)
            .await
            .unwrap()
            .iter()
            .map(|d| d.event_id.as_u128())
            .collect();
        assert_eq!(left, [1, 2]);
    }
);

fn from_network(mut report: NewReport, network: u8, quota: u32) -> NewReport {
    report.network = Some(NetworkQuota {
        network: Fingerprint([network; 16]),
        max_counted_per_minute: quota,
    });
    report
}

on_both_backends!(
    a_network_counts_up_to_its_quota_per_service_and_minute_across_batches,
    |backend| async move {
        let (store, _db) = open(backend).await;
        // Network 9, quota 3: two count in the first batch, one in the second, then none; the
        // next minute starts afresh. Network 8 and an import (no quota) are not held back.
        let first = [
            from_network(report(1, 1, Some("Lahore"), 0), 9, 3),
            from_network(report(2, 2, None, 1), 9, 3),
        ];
        let second = [
            from_network(report(3, 3, None, 2), 9, 3),
            from_network(report(4, 4, Some("Lahore"), 3), 9, 3),
            from_network(report(5, 5, None, 4), 8, 3),
            report(6, 6, None, 5),
            // The same reporter again: a duplicate, which uses none of the quota.
            from_network(report(7, 5, None, 6), 8, 3),
        ];
        let third = [
            from_network(report(8, 8, None, 7), 9, 3),
            from_network(report(9, 9, None, 60), 9, 3),
        ];
        let mut counted = Vec::new();
        for batch in [&first[..], &second[..], &third[..]] {
            let outcomes = insert(&*store, batch).await;
            counted.extend(outcomes.iter().map(|o| o.counted));
        }
        assert_eq!(
            counted,
            [true, true, true, false, true, true, false, false, true]
        );
        // Over-quota reports are stored, uncounted, and absent from the rollups.
        let capped = store.report(Uuid::from_u128(4)).await.unwrap().unwrap();
        assert!(!capped.counted);
        assert_eq!(store.report_count().await.unwrap(), 9);
        assert_eq!(
            store.rollups("x", at(0), at(120)).await.unwrap(),
            [rollup(0, "", 5), rollup(0, "Lahore", 1), rollup(60, "", 1)]
        );
        // A replay of an over-quota report keeps its outcome.
        let replay = insert(&*store, &second[1..2]).await;
        assert_eq!((replay[0].counted, replay[0].replay), (false, true));
        // Past minutes' counts can be forgotten; the current minute's stay.
        store.forget_network_counts(at(60)).await.unwrap();
        let fourth = [from_network(report(10, 10, None, 61), 9, 3)];
        let outcomes = insert(&*store, &fourth).await;
        assert!(outcomes[0].counted);
    }
);

on_both_backends!(
    the_catalog_is_seeded_once_in_order_and_changed_by_put,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let seed = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
                .collect()
        };
        store
            .seed_services(&seed(&[("x", "X"), ("youtube", "YouTube")]), at(0))
            .await
            .unwrap();
        let disabled = ServiceRecord {
            slug: "x".into(),
            name: "X (Twitter)".into(),
            enabled: false,
        };
        assert!(!store.put_service(&disabled, at(1)).await.unwrap());
        let added = ServiceRecord {
            slug: "bluesky".into(),
            name: "'; drop table services; --".into(),
            enabled: true,
        };
        assert!(store.put_service(&added, at(2)).await.unwrap());
        // A second seed (a restart) adds what is new and changes nothing stored.
        store
            .seed_services(&seed(&[("x", "X"), ("reddit", "Reddit")]), at(3))
            .await
            .unwrap();
        let names: Vec<(String, String, bool)> = store
            .services()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.slug, s.name, s.enabled))
            .collect();
        let expected = [
            ("x", "X (Twitter)", false),
            ("youtube", "YouTube", true),
            ("bluesky", "'; drop table services; --", true),
            ("reddit", "Reddit", true),
        ];
        assert_eq!(
            names,
            expected
                .iter()
                .map(|(s, n, e)| ((*s).to_owned(), (*n).to_owned(), *e))
                .collect::<Vec<_>>()
        );
    }
);

on_both_backends!(
    a_hand_resolved_incident_is_kept_by_the_detector_and_by_a_redetect,
    |backend| async move {
        let (store, _db) = open(backend).await;
        let open_one = incident("x", Some("PK"), 0, Status::Open);
        let write = |incidents: Vec<Incident>, replace: Option<(DateTime<Utc>, DateTime<Utc>)>| {
            let store = store.clone();
            async move {
                store
                    .write_detection(&DetectionWrite {
                        incidents: &incidents,
                        replace,
                        ..DetectionWrite::default()
                    })
                    .await
                    .unwrap();
            }
        };
        write(vec![open_one.clone()], None).await;
        let note = "\" or 1=1 --";
        let noted = store
            .act_on_incident(open_one.id, &IncidentAction::Annotate { note }, at(100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(noted.note.as_deref(), Some(note));
        let resolved = store
            .act_on_incident(open_one.id, &IncidentAction::Resolve { by: "ops" }, at(200))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                resolved.status,
                resolved.resolved_at,
                resolved.resolved_by.as_deref()
            ),
            (Status::Resolved, Some(at(200)), Some("ops"))
        );
        // The detector writes the incident again (still open, a higher peak): nothing changes.
        let mut later = open_one.clone();
        later.peak_count = 500.0;
        later.updated_at = at(300);
        write(vec![later], None).await;
        // A redetect of its range deletes what it recomputes, but not this one.
        write(Vec::new(), Some((at(-60), at(3600)))).await;
        let kept = store.incident(open_one.id).await.unwrap().unwrap();
        assert_eq!(kept, resolved);
        assert_eq!(
            store
                .act_on_incident(
                    Uuid::from_u128(77),
                    &IncidentAction::Resolve { by: "ops" },
                    at(1)
                )
                .await
                .unwrap(),
            None
        );
    }
);

/// Postgres keeps the current minutes' counts in `rollups_live` (cheap updates) and moves
/// settled minutes to `rollups_minute` (indexed for reads); no read may see a count change
/// for it, and a late report for a settled minute adds to it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_settling_minutes_changes_no_count() {
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let options = ConnectOptions {
        max_connections: 4,
        read_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let pg = store::PostgresStore::connect(&db.url, &options)
        .await
        .unwrap();
    pg.migrate().await.unwrap();
    let raw = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows_in = |table: &'static str| {
        let raw = raw.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>(&format!(
                "select city, count from {table} order by minute, city"
            ))
            .fetch_all(&raw)
            .await
            .unwrap()
        }
    };
    let pair = |city: &str, count: i64| (city.to_string(), count);

    // Current minutes (the one before this one, and this one) are counted in rollups_live.
    let now = outagewatch::runtime::clock::now();
    let this_minute = DateTime::from_timestamp(now.timestamp() - now.timestamp() % 60, 0).unwrap();
    let minute = |i: i64| this_minute + chrono::TimeDelta::seconds(60 * (i - 1));
    let rollup_at = |i: i64, city: &str, count: i64| rollup_in(minute(i), city, count);
    insert(
        &pg,
        &[
            report_at(1, 1, Some("Lahore"), minute(0)),
            report_at(2, 2, None, minute(1)),
        ],
    )
    .await;
    assert_eq!(rows_in("rollups_minute").await, []);
    assert_eq!(
        rows_in("rollups_live").await,
        [pair("", 1), pair("Lahore", 1), pair("", 1)]
    );
    let range = (minute(0), minute(60));
    let before_settling = [
        rollup_at(0, "", 1),
        rollup_at(0, "Lahore", 1),
        rollup_at(1, "", 1),
    ];
    assert_eq!(
        pg.rollups("x", range.0, range.1).await.unwrap(),
        before_settling
    );
    // The first minute only: it moves to rollups_minute and no count changes.
    assert_eq!(pg.settle_rollups(minute(1)).await.unwrap(), 2);
    assert_eq!(
        rows_in("rollups_minute").await,
        [pair("", 1), pair("Lahore", 1)]
    );
    assert_eq!(
        pg.rollups("x", range.0, range.1).await.unwrap(),
        before_settling
    );

    // A late report for the settled minute: its count is in both tables until the next settle.
    insert(
        &pg,
        &[report_at(
            3,
            3,
            Some("Lahore"),
            minute(0) + chrono::TimeDelta::seconds(10),
        )],
    )
    .await;
    let with_late = [
        rollup_at(0, "", 2),
        rollup_at(0, "Lahore", 2),
        rollup_at(1, "", 1),
    ];
    assert_eq!(pg.rollups("x", range.0, range.1).await.unwrap(), with_late);
    let series = |buckets: Vec<store::CountBucket>| -> Vec<(DateTime<Utc>, i64)> {
        buckets.into_iter().map(|b| (b.start, b.count)).collect()
    };
    assert_eq!(
        series(
            pg.counts(
                &SeriesKey::country("x", "PK"),
                TimeRange::new(minute(0), minute(2)),
                60
            )
            .await
            .unwrap()
        ),
        [(minute(0), 2), (minute(1), 1)]
    );
    let minutes = pg.minute_counts(range.0, range.1).await.unwrap();
    assert_eq!(
        minutes
            .in_order()
            .iter()
            .map(|m| (m.minute, m.city, m.count))
            .collect::<Vec<_>>(),
        [
            (minute(0), "", 2),
            (minute(0), "Lahore", 2),
            (minute(1), "", 1)
        ]
    );
    assert_eq!(pg.first_rollup_minute().await.unwrap(), Some(minute(0)));

    pg.settle_rollups(minute(60)).await.unwrap();
    assert_eq!(pg.rollups("x", range.0, range.1).await.unwrap(), with_late);
    assert_eq!(rows_in("rollups_live").await, []);
    assert_eq!(
        rows_in("rollups_minute").await,
        [pair("", 2), pair("Lahore", 2), pair("", 1)]
    );

    // A batch of history (an import) is counted in rollups_minute directly.
    insert(
        &pg,
        &[report(4, 4, Some("Lahore"), 0), report(5, 5, None, 60)],
    )
    .await;
    assert_eq!(rows_in("rollups_live").await, []);
    assert_eq!(
        pg.rollups("x", at(0), at(3600)).await.unwrap(),
        [rollup(0, "", 1), rollup(0, "Lahore", 1), rollup(60, "", 1)]
    );
    assert_eq!(pg.first_rollup_minute().await.unwrap(), Some(at(0)));
}
