//! Reports by day: a retry across midnight is a replay stored once, dedup holds within a
//! window and restarts at the next, an import of last year makes its own days, retention
//! deletes whole expired days (and nothing else) on both backends; on Postgres the day
//! partitions exist with the detector off, and migration 0012 keeps every row.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use outagewatch::domain::buckets::floor_to;
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::domain::retention::{live_days, Retention};
use outagewatch::store::{Expired, Fingerprint, NewReport, Outcome, SeriesKey, Store, TimeRange};
use uuid::Uuid;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A report of X in Pakistan (no city) by `reporter`, in its 15-minute dedup window.
fn report(id: u128, reporter: u8, received_at: DateTime<Utc>) -> NewReport {
    NewReport {
        id: Uuid::from_u128(id),
        client_id: true,
        received_at,
        service: Catalog::new([("x", "X")]).services()[0].slug.clone(),
        country: CountryCode::parse("PK").unwrap(),
        city: None,
        problem: Problem::App,
        fingerprint: Fingerprint([reporter; 16]),
        dedup_window_start: floor_to(received_at, 900),
        network: None,
    }
}

fn outcome(id: u128, counted: bool, replay: bool) -> Outcome {
    Outcome {
        id: Uuid::from_u128(id),
        counted,
        replay,
    }
}

/// (bucket start, count) of X in Pakistan over `range` in buckets of `seconds`.
async fn counts(store: &dyn Store, range: TimeRange, seconds: i64) -> Vec<(DateTime<Utc>, i64)> {
    store
        .counts(&SeriesKey::country("x", "PK"), range, seconds)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.start, b.count))
        .collect()
}

fn day_range(day: &str) -> TimeRange {
    let from = at(&format!("{day}T00:00:00Z"));
    TimeRange::new(from, from + TimeDelta::days(1))
}

/// The day partitions of `table` on Postgres, by name.
async fn partitions(url: &str, table: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let names = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = $1::regclass order by 1",
    )
    .bind(table)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    names
}

on_both_backends!(
    a_retry_across_midnight_is_a_replay_stored_once,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let first = at("2025-03-10T23:59:30Z");
        let sent = store
            .insert_reports(&[report(1, 1, first)], first)
            .await
            .unwrap();
        assert_eq!(sent, vec![outcome(1, true, false)]);
        // The client timed out and resends after midnight: another window, another day.
        let again = at("2025-03-11T00:00:20Z");
        let retried = store
            .insert_reports(&[report(1, 1, again)], again)
            .await
            .unwrap();
        assert_eq!(retried, vec![outcome(1, true, true)]);
        assert_eq!(store.report_count().await.unwrap(), 1);
        let stored = store.report(Uuid::from_u128(1)).await.unwrap().unwrap();
        assert_eq!(stored.received_at, first);
        let both_days = TimeRange::new(at("2025-03-10T00:00:00Z"), at("2025-03-12T00:00:00Z"));
        assert_eq!(
            counts(store.as_ref(), both_days, 86_400).await,
            vec![(at("2025-03-10T00:00:00Z"), 1)]
        );
    }
);

on_both_backends!(
    dedup_holds_within_a_window_and_restarts_after_midnight,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let mut outcomes = Vec::new();
        for (id, received_at) in [
            (1, "2025-03-10T23:50:00Z"),
            (2, "2025-03-10T23:59:59Z"),
            (3, "2025-03-11T00:00:01Z"),
            (4, "2025-03-11T00:14:00Z"),
        ] {
            let received_at = at(received_at);
            outcomes.extend(
                store
                    .insert_reports(&[report(id, 7, received_at)], received_at)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            outcomes,
            vec![
                outcome(1, true, false),
                outcome(2, false, false),
                outcome(3, true, false),
                outcome(4, false, false)
            ]
        );
        assert_eq!(store.report_count().await.unwrap(), 4);
        let both_days = TimeRange::new(at("2025-03-10T00:00:00Z"), at("2025-03-12T00:00:00Z"));
        assert_eq!(
            counts(store.as_ref(), both_days, 86_400).await,
            vec![
                (at("2025-03-10T00:00:00Z"), 1),
                (at("2025-03-11T00:00:00Z"), 1)
            ]
        );
    }
);

on_both_backends!(
    an_import_of_last_year_makes_its_own_days,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let now = outagewatch::runtime::clock::now();
        let year_ago = now - TimeDelta::days(365);
        let reports: Vec<NewReport> = (0..3u128)
            .map(|i| report(i + 1, i as u8, year_ago + TimeDelta::days(i as i64)))
            .collect();
        let outcomes = store.insert_reports(&reports, now).await.unwrap();
        assert!(outcomes.iter().all(|o| o.counted && !o.replay));
        assert_eq!(store.report_count().await.unwrap(), 3);
        let range = TimeRange::new(
            floor_to(year_ago, 86_400),
            floor_to(year_ago, 86_400) + TimeDelta::days(3),
        );
        assert_eq!(
            counts(store.as_ref(), range, 86_400).await.len(),
            3,
            "one count on each imported day"
        );
        if backend == common::Backend::Postgres {
            let days: Vec<String> = (0..3)
                .map(|d| {
                    let day = (year_ago + TimeDelta::days(d)).date_naive();
                    format!("reports_{}", day.format("%Y%m%d"))
                })
                .collect();
            assert_eq!(partitions(&db.url, "reports").await, days);
        }
    }
);

on_both_backends!(
    retention_deletes_whole_expired_days_and_nothing_else,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = db.open_store().await;
        let now = at("2025-03-20T12:00:00Z");
        // Reports on three days, one a minute from 10:00: 4 on the 1st, 3 on the 10th, 2 on
        // the 19th; each its own reporter, so all count.
        let mut id = 0u128;
        let mut reports = Vec::new();
        for (day, n) in [("2025-03-01", 4), ("2025-03-10", 3), ("2025-03-19", 2)] {
            for minute in 0..n {
                id += 1;
                let received_at = at(&format!("{day}T10:00:00Z")) + TimeDelta::minutes(minute);
                reports.push(report(id, id as u8, received_at));
            }
        }
        store.insert_reports(&reports, now).await.unwrap();

        // Reports kept 5 days, minutes 15, the coarse tiers forever.
        let retention = Retention {
            reports_days: 5,
            minute_rollups_days: 15,
            coarse_rollups_days: 0,
        };
        let expired = store
            .apply_retention(&retention.cutoffs(now))
            .await
            .unwrap()
            .unwrap();
        let expected = match backend {
            // Reports of the 1st and 10th, minutes of the 1st; the ids of those reports.
            common::Backend::Postgres => Expired {
                days_dropped: 3,
                rows_deleted: 7,
            },
            // 7 reports and 4 minute rows, one by one.
            common::Backend::Sqlite => Expired {
                days_dropped: 0,
                rows_deleted: 11,
            },
        };
        assert_eq!(expired, expected);
        assert_eq!(store.report_count().await.unwrap(), 2);
        assert_eq!(
            counts(store.as_ref(), day_range("2025-03-01"), 60).await,
            vec![]
        );
        assert_eq!(
            counts(store.as_ref(), day_range("2025-03-10"), 60)
                .await
                .len(),
            3,
            "minutes of the 10th are kept"
        );
        assert_eq!(
            counts(store.as_ref(), day_range("2025-03-01"), 3600).await,
            vec![(at("2025-03-01T10:00:00Z"), 4)],
            "the hour tier outlives the minutes"
        );
        let problems = |day: &'static str| {
            let store = store.clone();
            async move {
                store
                    .problem_counts(&SeriesKey::country("x", "PK"), day_range(day))
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(
            (problems("2025-03-10").await, problems("2025-03-19").await),
            (0, 1)
        );
        // A retry of a kept report is still a replay: its id is within the horizon.
        let kept = reports.last().unwrap().clone();
        let retried = store.insert_reports(&[kept], now).await.unwrap();
        assert_eq!(retried, vec![outcome(9, true, true)]);
        // An import into an expired day stores again (Postgres makes the day anew).
        let late = report(100, 100, at("2025-03-01T11:00:00Z"));
        let stored = store.insert_reports(&[late], now).await.unwrap();
        assert_eq!(stored, vec![outcome(100, true, false)]);
        assert_eq!(store.report_count().await.unwrap(), 3);
        // Applying it again finds only that day.
        let again = store
            .apply_retention(&retention.cutoffs(now))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again,
            match backend {
                common::Backend::Postgres => Expired {
                    days_dropped: 2,
                    rows_deleted: 1,
                },
                common::Backend::Sqlite => Expired {
                    days_dropped: 0,
                    rows_deleted: 2,
                },
            }
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_the_coming_days_exist_with_the_detector_off() {
    let app =
        common::TestApp::spawn_with(common::Backend::Postgres, "[detector]\nenabled = false\n")
            .await;
    let today = outagewatch::runtime::clock::now();
    let names = |days: Vec<NaiveDate>, table: &str| {
        days.iter()
            .map(|d| format!("{table}_{}", d.format("%Y%m%d")))
            .collect::<Vec<_>>()
    };
    // Started just before midnight, the days may have moved on by one: both are fine.
    let expected = [today - TimeDelta::minutes(1), today].map(live_days);
    for table in ["reports", "rollups_minute"] {
        let made = partitions(&app.db.url, table).await;
        assert!(
            expected
                .iter()
                .any(|days| names(days.clone(), table).iter().all(|n| made.contains(n))),
            "{table}: {made:?}"
        );
        assert_eq!(made.len(), 4, "{table}: {made:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0012_keeps_every_report_and_minute() {
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let earlier = common::EarlierDb::migrate(common::Backend::Postgres, &db, "0012").await;
    let common::EarlierDb::Postgres(pool) = &earlier else {
        unreachable!()
    };
    let now = outagewatch::runtime::clock::now();
    // 30 reports over three days of last March (every tenth uncounted) and 5 from the last
    // hour, with a minute row each.
    let mut times: Vec<DateTime<Utc>> = (0..30)
        .map(|i| at("2025-03-09T22:00:00Z") + TimeDelta::minutes(97 * i))
        .collect();
    times.extend((0..5).map(|i| floor_to(now, 60) - TimeDelta::minutes(50 - 10 * i)));
    for (i, received_at) in times.iter().enumerate() {
        let r = report(i as u128 + 1, i as u8, *received_at);
        sqlx::query(
            "insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
             values ($1, $2, 'x', 'PK', null, 'app', $3, $4, $5)",
        )
        .bind(r.id)
        .bind(r.received_at)
        .bind(Uuid::from_bytes(r.fingerprint.0))
        .bind(r.dedup_window_start)
        .bind(i % 10 != 9)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "insert into rollups_minute (service, country, city, minute, count) values ('x', 'PK', '', $1, 1)",
        )
        .bind(floor_to(r.received_at, 60))
        .execute(pool)
        .await
        .unwrap();
    }
    earlier.close().await;

    let store = db.open_store().await;
    assert_eq!(store.report_count().await.unwrap(), 35);
    let ids: Vec<Uuid> = (1..=35).map(Uuid::from_u128).collect();
    assert_eq!(store.stored_ids(&ids).await.unwrap().len(), 35);
    let tenth = store.report(Uuid::from_u128(10)).await.unwrap().unwrap();
    assert_eq!((tenth.received_at, tenth.counted), (times[9], false));
    let minutes = store
        .rollups("x", at("2025-03-01T00:00:00Z"), now + TimeDelta::days(1))
        .await
        .unwrap();
    assert_eq!(minutes.len(), 35);
    // A partition for each day with rows, and none between.
    let mut days: Vec<String> = times
        .iter()
        .map(|t| format!("reports_{}", t.format("%Y%m%d")))
        .collect();
    days.dedup();
    assert_eq!(
        days[..3],
        ["reports_20250309", "reports_20250310", "reports_20250311"]
    );
    assert_eq!(partitions(&db.url, "reports").await, days);
    // Every id answers its retries, last March's too: the migration filled report_ids.
    let old = report(10, 9, times[9]);
    let mut old_retry = old.clone();
    old_retry.received_at = now;
    old_retry.dedup_window_start = floor_to(now, 900);
    let retried = store.insert_reports(&[old_retry], now).await.unwrap();
    assert_eq!(retried, vec![outcome(10, false, true)]);
    let recent = report(35, 34, times[34]);
    let mut retry = recent.clone();
    retry.received_at = now;
    retry.dedup_window_start = floor_to(now, 900);
    let retried = store.insert_reports(&[retry], now).await.unwrap();
    assert_eq!(retried, vec![outcome(35, true, true)]);
    assert_eq!(store.report_count().await.unwrap(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_its_uncommitted_original_is_a_replay_once_it_commits() {
    let db = common::TestDb::new(common::Backend::Postgres).await;
    let store = db.open_store().await;
    let first = at("2025-03-10T23:59:58Z");
    store.prepare_days(&[first.date_naive()]).await.unwrap();
    // The original, mid-commit in another transaction: its id is claimed but not visible.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut original = pool.begin().await.unwrap();
    let r = report(1, 1, first);
    sqlx::query(
        "insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         values ($1, $2, 'x', 'PK', null, 'app', $3, $4, true)",
    )
    .bind(r.id)
    .bind(first)
    .bind(Uuid::from_bytes(r.fingerprint.0))
    .bind(r.dedup_window_start)
    .execute(&mut *original)
    .await
    .unwrap();
    sqlx::query("insert into report_ids (id, dedup_window, counted) values ($1, $2, true)")
        .bind(r.id)
        .bind(r.dedup_window_start)
        .execute(&mut *original)
        .await
        .unwrap();
    // The retry lands in the next window, after midnight, and waits on the claimed id.
    let again = at("2025-03-11T00:00:03Z");
    let retry = tokio::spawn({
        let store = store.clone();
        async move { store.insert_reports(&[report(1, 1, again)], again).await }
    });
    // Until it does: a session of this database waiting for a lock (the original's id).
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while waiting().await == 0 {
            assert!(
                !retry.is_finished(),
                "the retry finished without waiting for the original"
            );
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the retry never waited for the original");
    original.commit().await.unwrap();
    let outcomes = retry.await.unwrap().unwrap();
    assert_eq!(outcomes, vec![outcome(1, true, true)]);
    assert_eq!(store.report_count().await.unwrap(), 1);
    pool.close().await;
}
