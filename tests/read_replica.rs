//! `database.read_url`: reads go to a streaming replica while it is fresh, marked with its
//! data's age (`X-Data-Age`), and back to the primary when it lags past
//! `database.max_replica_lag_seconds` or is down. `scripts/test` starts the replica
//! (`pg_basebackup -R` of the throwaway primary) and names it in OUTAGEWATCH_TEST_REPLICA_URL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, TestDb};
use serde_json::json;
use sqlx::Connection;

/// The total of x's counts in Pakistan over the last day, and the answer's `X-Data-Age`.
async fn pakistan_total(app: &TestApp) -> (i64, Option<String>) {
    let response = app
        .client
        .get(app.url("/api/v1/counts?service=x&country=PK&interval=1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let age = response
        .headers()
        .get("x-data-age")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.unwrap();
    let total = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .sum();
    (total, age)
}

/// The first answer of [`pakistan_total`] that `wanted` accepts, asked every 50 ms (the
/// replica's lag is measured at most once a second); fails after 30 s.
async fn answer_once(
    app: &TestApp,
    wanted: impl Fn(&(i64, Option<String>)) -> bool,
) -> (i64, Option<String>) {
    let started = Instant::now();
    loop {
        let answer = pakistan_total(app).await;
        if wanted(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no such answer; the last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn report(app: &TestApp, reporter: &str) {
    let response = app
        .client
        .post(app.url("/api/v1/reports"))
        .header("user-agent", reporter)
        .json(&json!({"service": "x", "country": "PK", "problem": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test]
async fn reads_come_from_a_fresh_replica_marked_with_its_age_then_from_the_primary_when_it_lags() {
    let db = TestDb::new(Backend::Postgres).await;
    let replica_url = db.replica_url();
    // The new database reaches the replica with the primary's WAL.
    let started = Instant::now();
    let mut replica = loop {
        match sqlx::PgConnection::connect(&replica_url).await {
            Ok(connection) => break connection,
            Err(error) if started.elapsed() < Duration::from_secs(20) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the replica never had the database: {error}"),
        }
    };
    let app = TestApp::spawn_on(
        db,
        &format!("[database]\nread_url = \"{replica_url}\"\nmax_replica_lag_seconds = 5\n"),
    )
    .await;
    report(&app, "reporter 1").await;
    // Once the replica has replayed everything, it answers, marked 0.0 seconds behind.
    answer_once(&app, |answer| *answer == (1, Some("0.0".to_owned()))).await;
    // A page reads through the same side, and says so too.
    let page = app.client.get(app.url("/status/x")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers().get("x-data-age").is_some(),
        "a page read from the replica is marked"
    );
    // A transaction the replica replays just before its replay stops, so its age counts from
    // the pause (the app may have written nothing for seconds).
    let mut primary = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("select txid_current()")
        .execute(&mut primary)
        .await
        .unwrap();
    // Its commit is asynchronous (it wrote nothing): wait for where it was inserted.
    let (written,): (i64,) =
        sqlx::query_as("select (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8")
            .fetch_one(&mut primary)
            .await
            .unwrap();
    loop {
        let (replayed,): (i64,) =
            sqlx::query_as("select (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8")
                .fetch_one(&mut replica)
                .await
                .unwrap();
        if replayed >= written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Replay stopped: the primary gets a second report the replica does not have.
    sqlx::query("select pg_wal_replay_pause()")
        .execute(&mut replica)
        .await
        .unwrap();
    let paused = Instant::now();
    report(&app, "reporter 2").await;
    // Measured again once the last measurement is a second old: the replica's stale answer,
    // marked with its age (a second or more, still well within the 5 s allowed).
    let older_than_a_second = |age: &str| age.parse::<f64>().is_ok_and(|a| a >= 1.0);
    let (total, age) = answer_once(&app, |(_, age)| {
        age.as_deref().is_none_or(older_than_a_second)
    })
    .await;
    let age: f64 = age.expect("a replica's answer is marked").parse().unwrap();
    let waited = paused.elapsed().as_secs_f64();
    assert_eq!(total, 1, "the replica has not replayed the second report");
    assert!(
        (1.0..=waited + 0.5).contains(&age),
        "age {age} after {waited:.1} s of pause"
    );
    // Past 5 s behind: the primary answers, unmarked, with both reports.
    let primary_answer = answer_once(&app, |(_, age)| age.is_none()).await;
    sqlx::query("select pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .unwrap();
    assert_eq!(primary_answer, (2, None));
    app.stop().await;
}

#[tokio::test]
async fn a_replica_that_is_down_sends_every_read_to_the_primary() {
    // Nothing listens on port 1: the replica is down from the start, which must not stop it.
    let app = TestApp::spawn_with(
        Backend::Postgres,
        "[database]\nread_url = \"postgres://postgres@127.0.0.1:1/none\"\n",
    )
    .await;
    report(&app, "reporter 1").await;
    assert_eq!(pakistan_total(&app).await, (1, None));
    let page = app.client.get(app.url("/status/x")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers().get("x-data-age").is_none());
    let (status, _, body) = app.get_json("/api/v1/services").await;
    assert_eq!(
        (status, body["services"].as_array().unwrap().len()),
        (200, 10)
    );
    app.stop().await;
}
