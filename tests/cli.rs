//! Black-box tests of the `outagewatch` binary: import, and SIGTERM under load.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use common::{Backend, TestDb};
use outagewatch::store::{self, ConnectOptions, Store};
use serde_json::json;
use tokio::sync::Mutex;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_outagewatch");

fn outagewatch(db: &TestDb) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("OUTAGEWATCH__RATE_LIMIT__PER_IP_PER_MINUTE", "0")
        .env("OUTAGEWATCH__LOG__LEVEL", "warn");
    command
}

async fn open(db: &TestDb) -> Arc<dyn Store> {
    let options = ConnectOptions {
        max_connections: 2,
        read_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    };
    store::connect(&db.url, &options).await.unwrap()
}

const CSV: &str = "\
received_at,service,country,city,problem,reporter
2025-03-10T10:08:05Z,x,PK,lahore,app,r1
2025-03-10T10:08:10Z,x,PK,Lahore,app,r1
2025-03-10T10:08:20Z,x,XX,,app,r2
2025-03-10 10:08,x,PK,,app,r3
2025-03-10T10:08:30Z,x,PK,Karachi,login,
2025-03-10T10:08:30Z,x,PK,Karachi,login,
2025-03-10T10:09:00+05:00,x,PK,Rawalpindi,website,r4
";

async fn import_csv(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reports.csv");
    std::fs::write(&file, CSV).unwrap();

    let first = outagewatch(&db).arg("import").arg(&file).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("7 rows in"), "{stdout}");
    assert!(
        stdout.ends_with(": 5 stored (4 counted), 0 already stored, 2 rejected\n"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("line 4: country: \"XX\" is not an ISO 3166-1 alpha-2 country code"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: received_at: not an RFC 3339 time"),
        "{stderr}"
    );
    // The default retention keeps 90 days of reports and of minutes: March 2025 is past both.
    let from = (outagewatch::runtime::clock::now() - chrono::TimeDelta::days(90)).date_naive();
    for (what, key) in [
        ("reports", "retention.reports_days"),
        ("minute counts", "retention.minute_rollups_days"),
    ] {
        let warning = format!(
            "warning: 5 rows were received before {from}: their {what} are past {key} and will \
             be deleted at serve's next upkeep (set it to 0 to keep them)\n"
        );
        assert!(stderr.contains(&warning), "{stderr}");
    }
    assert!(!stderr.contains("hourly counts"), "{stderr}");

    // Re-running the same file stores nothing new.
    let again = outagewatch(&db).arg("import").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.ends_with(": 0 stored (0 counted), 5 already stored, 2 rejected\n"),
        "{stdout}"
    );

    let store = open(&db).await;
    assert_eq!(store.report_count().await.unwrap(), 5);
    let from = DateTime::parse_from_rfc3339("2025-03-10T04:00:00Z")
        .unwrap()
        .to_utc();
    let to = DateTime::parse_from_rfc3339("2025-03-10T11:00:00Z")
        .unwrap()
        .to_utc();
    let rows: Vec<(String, String, i64)> = store
        .rollups("x", from, to)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.minute.format("%H:%M").to_string(), r.city, r.count))
        .collect();
    let expected = [
        // 10:09+05:00 is 05:09 UTC.
        ("05:09", "", 1),
        ("05:09", "Rawalpindi", 1),
        // r1 counted once; the two identical rows without a reporter are two reporters.
        ("10:08", "", 3),
        ("10:08", "Karachi", 2),
        ("10:08", "Lahore", 1),
    ];
    let expected: Vec<(String, String, i64)> = expected
        .iter()
        .map(|(m, c, n)| (m.to_string(), c.to_string(), *n))
        .collect();
    assert_eq!(rows, expected);

    // The ops commands read the same counts and incidents as the API.
    let counts = outagewatch(&db)
        .args([
            "counts",
            "--service",
            "x",
            "--country",
            "pk",
            "--interval",
            "1h",
        ])
        .args([
            "--from",
            "2025-03-10T04:30:00Z",
            "--to",
            "2025-03-10T11:00:00Z",
        ])
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(
        counts.status.success(),
        "{}",
        String::from_utf8_lossy(&counts.stderr)
    );
    let expected_csv = "start,count,expected\n\
        2025-03-10T04:00:00Z,0,\n2025-03-10T05:00:00Z,1,\n2025-03-10T06:00:00Z,0,\n\
        2025-03-10T07:00:00Z,0,\n2025-03-10T08:00:00Z,0,\n2025-03-10T09:00:00Z,0,\n\
        2025-03-10T10:00:00Z,3,\n";
    assert_eq!(String::from_utf8_lossy(&counts.stdout), expected_csv);
    let table = outagewatch(&db)
        .args([
            "counts",
            "--service",
            "x",
            "--country",
            "PK",
            "--city",
            "lahore",
        ])
        .args([
            "--from",
            "2025-03-10T10:00:00Z",
            "--to",
            "2025-03-10T10:30:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&table.stdout),
        "start                 count  expected\n\
         2025-03-10T10:00:00Z  1\n\
         2025-03-10T10:15:00Z  0\n"
    );
    let bad = outagewatch(&db)
        .args(["counts", "--service", "myspace", "--interval", "2m"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--service: \"myspace\" is not a known service"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--interval: interval must be one of 1m, 5m, 15m, 1h, 1d"),
        "{stderr}"
    );
    let incidents = outagewatch(&db)
        .args(["incidents", "--open", "--format", "json"])
        .output()
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&incidents.stdout).unwrap();
    assert_eq!(page, json!({"incidents": [], "next_cursor": null}));
}

on_both_backends!(
    import_validates_each_row_reports_bad_lines_and_is_idempotent,
    import_csv
);

/// Starts `outagewatch serve` listening on 127.0.0.1:`port`, with `env` set over what
/// [`outagewatch`] sets, its stdout discarded and its stderr to `stderr`.
fn start_serve(
    db: &TestDb,
    port: u16,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> tokio::process::Child {
    let mut serve = outagewatch(db);
    serve
        .arg("serve")
        .env("OUTAGEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr);
    tokio::process::Command::from(serve).spawn().unwrap()
}

/// Sends SIGTERM to `child`, as a service manager stopping it does.
fn terminate(child: &tokio::process::Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

async fn sigterm_under_load(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = common::free_port();
    let mut child = start_serve(&db, port, &[], Stdio::inherit());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the service did not start");

    let acknowledged = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut clients = Vec::new();
    for client in 0..32 {
        let (http, base, acknowledged, count_tx) = (
            http.clone(),
            base.clone(),
            acknowledged.clone(),
            count_tx.clone(),
        );
        clients.push(tokio::spawn(async move {
            // Bounded: each client stops at its first failure or after 2,000 reports.
            for _ in 0..2000 {
                let id = Uuid::new_v4();
                let body = json!({"service":"x","country":"US","problem":"app","id":id});
                let request = http
                    .post(format!("{base}/api/v1/reports"))
                    .header("user-agent", format!("client {client}"))
                    .json(&body);
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        acknowledged.lock().await.push(id);
                        count_tx.send_modify(|n| *n += 1);
                    }
                    _ => break,
                }
            }
        }));
    }
    // Let load build up, then ask the service to stop while requests are in flight.
    tokio::time::timeout(Duration::from_secs(60), count_rx.wait_for(|&n| n >= 500))
        .await
        .expect("500 reports acknowledged within 60 s")
        .unwrap();
    terminate(&child);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(acknowledged.len() >= 500);
    let store = open(&db).await;
    let stored = store.stored_ids(&acknowledged).await.unwrap();
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "acknowledged reports missing after SIGTERM"
    );
}

on_both_backends!(
    sigterm_during_load_loses_no_acknowledged_report,
    sigterm_under_load
);

#[tokio::test]
async fn serve_logs_without_colour_codes_when_stderr_is_not_a_terminal() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut child = start_serve(
        &db,
        common::free_port(),
        &[
            ("OUTAGEWATCH__LOG__LEVEL", "info"),
            ("OUTAGEWATCH__DETECTOR__ENABLED", "false"),
        ],
        Stdio::piped(),
    );
    let stderr = child.stderr.take().unwrap();
    let mut lines = {
        use tokio::io::AsyncBufReadExt;
        tokio::io::BufReader::new(stderr).lines()
    };
    let mut logged = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let serving = line.contains("serving");
            logged.push(line);
            if serving {
                return;
            }
        }
        panic!("serve exited before it logged \"serving\": {logged:?}");
    })
    .await
    .expect("serve logs \"serving\" within 60 s");
    terminate(&child);
    // Its shutdown lines too, up to the end of its stderr.
    while let Some(line) = lines.next_line().await.unwrap() {
        logged.push(line);
    }
    let exit = child.wait().await.unwrap();
    assert!(exit.success(), "{exit}: {logged:?}");
    assert!(
        logged.iter().any(|line| line.contains("stopped")),
        "{logged:?}"
    );
    for line in &logged {
        assert!(!line.contains("\x1b["), "{line:?}");
    }
}

/// A `serve` process whose stderr lines arrive on `lines` tagged with `name`.
fn spawn_serve(
    db: &TestDb,
    name: &'static str,
    lines: tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
) -> tokio::process::Child {
    let mut child = start_serve(
        db,
        common::free_port(),
        &[
            ("OUTAGEWATCH__LOG__LEVEL", "warn,outagewatch::detector=info"),
            ("OUTAGEWATCH__DETECTOR__LEADER_RETRY_SECONDS", "1"),
        ],
        Stdio::piped(),
    );
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send((name, line)).is_err() {
                break;
            }
        }
    });
    child
}

/// Detector-lock holders in the database, as Postgres sees them.
async fn advisory_lock_holders(db: &TestDb) -> i64 {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let holders = sqlx::query_scalar(
        "select count(*) from pg_locks l join pg_database d on d.oid = l.database
         where l.locktype = 'advisory' and l.granted and d.datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    holders
}

/// Waits for a "now runs the detector" line; returns which process said it.
async fn next_leader(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<(&'static str, String)>,
    within: Duration,
) -> Option<&'static str> {
    tokio::time::timeout(within, async {
        while let Some((name, line)) = lines.recv().await {
            if line.contains("this process now runs the detector") {
                return Some(name);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_postgres_one_detects_and_the_other_takes_over_when_it_dies() {
    let db = TestDb::new(Backend::Postgres).await;
    let migrate = outagewatch(&db).arg("migrate").output().unwrap();
    assert!(migrate.status.success());
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let mut a = spawn_serve(&db, "a", tx.clone());
    let mut b = spawn_serve(&db, "b", tx);

    let leader = next_leader(&mut lines, Duration::from_secs(30))
        .await
        .expect("one process leads within 30 s");
    // The other retries every second; over five tries it must not lead too.
    assert_eq!(next_leader(&mut lines, Duration::from_secs(5)).await, None);
    assert_eq!(advisory_lock_holders(&db).await, 1);

    let (dead, survivor) = if leader == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let killed_at = std::time::Instant::now();
    dead.kill().await.unwrap(); // SIGKILL: no goodbye to the database
    let taken_over_by = next_leader(&mut lines, Duration::from_secs(60))
        .await
        .expect("the standby takes over within a minute");
    assert_ne!(taken_over_by, leader);
    eprintln!("takeover after {:?}", killed_at.elapsed());
    assert_eq!(advisory_lock_holders(&db).await, 1);

    survivor.kill().await.unwrap();
}

/// An empty SQLite database (the refusal comes before the store is opened).
fn empty_sqlite_db() -> TestDb {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::new(Backend::Sqlite))
}

#[test]
fn redetect_from_before_the_kept_minutes_is_refused_naming_the_settings() {
    let db = empty_sqlite_db();
    let output = outagewatch(&db)
        .args(["redetect", "--from", "2025-03-10T00:00:00Z"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Default retention: 90 days of minutes; the replay starts 35 days (history) before --from.
    let first_day = (outagewatch::runtime::clock::now() - chrono::TimeDelta::days(90)).date_naive();
    let expected = format!(
        "redetect --from 2025-03-10T00:00:00+00:00: its replay starts 35 days earlier \
         (detector.history_days), before {first_day}, the first day of minute counts kept \
         (retention.minute_rollups_days); start on {} or later",
        first_day + chrono::TimeDelta::days(35)
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
