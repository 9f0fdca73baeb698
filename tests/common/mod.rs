//! Test fixtures: fresh SQLite files and Postgres databases, a `TestApp` served on port 0, and a recent surge scenario to import.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use outagewatch::app::{self, App};
use outagewatch::config::Settings;
use outagewatch::domain::incidents::{incident_id, Incident, Scope, Status};
use outagewatch::ingest::import;
use outagewatch::store::Store;
use outagewatch_scenario::{self as scenario, Scenario};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The environment variable the test script sets to its throwaway cluster.
pub const POSTGRES_ENV: &str = "OUTAGEWATCH_TEST_POSTGRES_URL";

/// The environment variable the test script sets to the cluster's streaming replica.
pub const REPLICA_ENV: &str = "OUTAGEWATCH_TEST_REPLICA_URL";

/// A database for one test: a new SQLite file, or a new database in the throwaway cluster.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path: PathBuf = dir.path().join("test.db");
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                    panic!("{POSTGRES_ENV} is not set: run the suite with ./scripts/test, which starts a throwaway PostgreSQL cluster")
                });
                let name = format!("ow_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap();
                sqlx::query(&format!("create database {name}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }

    /// The store of this database, migrated (4 connections).
    #[allow(dead_code)] // Not every test binary opens a store.
    pub async fn open_store(&self) -> Arc<dyn Store> {
        let options = outagewatch::store::ConnectOptions {
            max_connections: 4,
            read_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = outagewatch::store::connect(&self.url, &options)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// This Postgres database on the throwaway cluster's streaming replica (the same database
    /// name on the replica's server: it replays the whole cluster).
    pub fn replica_url(&self) -> String {
        let replica = std::env::var(REPLICA_ENV).unwrap_or_else(|_| {
            panic!("{REPLICA_ENV} is not set: run the tests with scripts/test, which starts a streaming replica")
        });
        let (server, _) = replica.rsplit_once('/').unwrap();
        let (_, name) = self.url.rsplit_once('/').unwrap();
        format!("{server}/{name}")
    }

    /// Settings for this database with the rate limit, the per-network cap (every test client
    /// is 127.0.0.1), the read cache (tests read right after they write) and retention (test
    /// data is of 2025) off, plus `extra` TOML.
    pub fn settings(&self, extra: &str) -> Settings {
        let base = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nread_cache_seconds = 0\n[database]\nurl = \"{}\"\n[rate_limit]\nper_ip_per_minute = 0\n[abuse]\nmax_counted_per_network_per_minute = 0\n[retention]\nreports_days = 0\nminute_rollups_days = 0\n",
            self.url
        );
        Settings::from_toml(&[&base, extra]).unwrap()
    }
}

/// The service, running in this process on a random port.
pub struct TestApp {
    pub address: SocketAddr,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, "").await
    }

    pub async fn spawn_with(backend: Backend, extra: &str) -> TestApp {
        TestApp::spawn_on(TestDb::new(backend).await, extra).await
    }

    /// Serves an existing database (e.g. one a stopped app left behind).
    pub async fn spawn_on(db: TestDb, extra: &str) -> TestApp {
        let app = App::build(&db.settings(extra)).await.unwrap();
        let address = app.local_addr().unwrap();
        let store = app.store();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestApp {
            address,
            store,
            client: reqwest::Client::new(),
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Posts a JSON body to the reports endpoint.
    pub async fn post_reports(&self, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/reports"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs a path: status, content type and the body as JSON.
    pub async fn get_json(&self, path: &str) -> (u16, String, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, response.json().await.unwrap())
    }

    /// Stops the service gracefully and hands back its database.
    pub async fn stop_keeping_db(mut self) -> TestDb {
        self.shut_down().await;
        self.db
    }

    /// Stops the service gracefully and waits until its queue is committed.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// An incident of `service` in `country` (worldwide when `None`) that started at `started_at`:
/// detected two minutes in, at its peak of 136 reports ten minutes in, and, when resolved,
/// over an hour in.
pub fn incident(
    service: &str,
    country: Option<&str>,
    started_at: DateTime<Utc>,
    status: Status,
) -> Incident {
    Incident {
        id: incident_id(service, country, None, started_at),
        service: service.into(),
        scope: if country.is_some() {
            Scope::Country
        } else {
            Scope::Global
        },
        country: country.map(Into::into),
        city: None,
        status,
        started_at,
        detected_at: started_at + TimeDelta::minutes(2),
        peak_at: started_at + TimeDelta::minutes(10),
        peak_count: 136.0,
        expected_at_peak: 4.5,
        start_count: 74.0,
        excess_reports: 900.0,
        resolved_at: (status == Status::Resolved).then(|| started_at + TimeDelta::hours(1)),
        top_cities: Vec::new(),
        problems: [("app".to_owned(), 1.0)].into_iter().collect(),
        parent_id: None,
        summary: format!("Reports about {service} rose."),
        updated_at: started_at + TimeDelta::minutes(10),
        note: None,
        resolved_by: None,
    }
}

/// An open country incident of X in Pakistan that started at `started_at`, as the detector
/// writes one (for tests of what admins do to incidents).
pub fn open_incident(started_at: DateTime<Utc>) -> Incident {
    Incident {
        peak_at: started_at,
        peak_count: 40.0,
        expected_at_peak: 4.0,
        start_count: 20.0,
        excess_reports: 36.0,
        problems: Default::default(),
        summary: "Reports about X in Pakistan rose.".into(),
        updated_at: started_at,
        ..incident("x", Some("PK"), started_at, Status::Open)
    }
}

/// A database as an earlier release left it: `db` migrated with a copy of `backend`'s
/// migrations numbered below `version` (e.g. "0009"), for tests of a migration over existing
/// rows. The caller inserts its rows through the pool, closes it, then migrates the rest.
pub enum EarlierDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl EarlierDb {
    pub async fn migrate(backend: Backend, db: &TestDb, version: &str) -> EarlierDb {
        let folder = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(folder);
        let earlier = tempfile::tempdir().unwrap();
        let mut copied = 0;
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < version {
                std::fs::copy(&path, earlier.path().join(&name)).unwrap();
                copied += 1;
            }
        }
        assert!(copied >= 7, "only {copied} migrations before {version}");
        let migrator = sqlx::migrate::Migrator::new(earlier.path()).await.unwrap();
        match backend {
            Backend::Sqlite => {
                let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
                let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                    .await
                    .unwrap();
                migrator.run(&pool).await.unwrap();
                EarlierDb::Sqlite(pool)
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                EarlierDb::Postgres(pool)
            }
        }
    }

    pub async fn close(self) {
        match self {
            EarlierDb::Sqlite(pool) => pool.close().await,
            EarlierDb::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs the same async test body on SQLite and on Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                ($body)(common::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                ($body)(common::Backend::Postgres).await;
            }
        }
    };
}

/// X's ordinary traffic in Pakistan as a scenario's `[[traffic]]` table: about a report a minute
/// with a daily rhythm that peaks at 16:00 UTC. A `[traffic.cities]` table after it places some
/// of it in cities.
pub const X_IN_PAKISTAN: &str = r#"[[traffic]]
service = "x"
country = "PK"
per_minute = 1.0
diurnal_amplitude = 0.3
peak_hour_utc = 16
dispersion = 0.05
"#;

/// Three days of ordinary X traffic in Pakistan ending two minutes before `now`, with a
/// Lahore-led surge to 300 reports a minute: it starts rising `surge_from` minutes before the
/// end, holds from 10 minutes later until 15 minutes before `surge_to`, and is over `surge_to`
/// minutes before the end.
pub fn pakistan_surge_scenario(
    now: DateTime<Utc>,
    seed: u64,
    surge_from: i64,
    surge_to: i64,
) -> Scenario {
    let end = now.duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(2);
    let start = end - TimeDelta::days(3);
    let at = |minutes_before_end: i64| (end - TimeDelta::minutes(minutes_before_end)).to_rfc3339();
    let text = format!(
        r#"
name = "pakistan surge"
start = "{start}"
end = "{end}"
seed = {seed}

[problems]
app = 0.6
login = 0.4

{X_IN_PAKISTAN}[traffic.cities]
Lahore = 0.4
Karachi = 0.3

[[surge]]
service = "x"
country = "PK"
points = [["{s0}", 0], ["{s1}", 300], ["{s2}", 300], ["{s3}", 0]]
[surge.cities]
Lahore = 0.7
Karachi = 0.2
"#,
        start = start.to_rfc3339(),
        end = end.to_rfc3339(),
        s0 = at(surge_from),
        s1 = at(surge_from - 10),
        s2 = at(surge_to + 15),
        s3 = at(surge_to),
    );
    Scenario::from_toml(&text).unwrap()
}

/// Imports a scenario's reports into the app's store through the ingest path, as `outagewatch
/// import` does; every report must be accepted.
pub async fn import_scenario(app: &TestApp, scenario: &Scenario) {
    let settings = app.db.settings("[detector]\nenabled = false\n");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("reports.csv");
    scenario::write_csv(scenario, std::fs::File::create(&csv).unwrap()).unwrap();
    let (ingest, writer) = app::start_ingest(app.store.clone(), &settings);
    let summary = import::import_file(&csv, &ingest, &app::catalog(&settings), |_| {})
        .await
        .unwrap();
    drop(ingest);
    writer.await.unwrap();
    assert_eq!(summary.rejected, 0);
}

/// Stores every report of a scenario in one transaction, straight through the store: a live
/// detector sees either none of it or all of it, however slow the machine.
pub async fn insert_scenario_at_once(app: &TestApp, scenario: &Scenario) {
    insert_scenario(&app.store, scenario).await;
}

/// Stores every report of a scenario into `store` in one transaction; how many there were.
pub async fn insert_scenario(store: &Arc<dyn Store>, scenario: &Scenario) -> usize {
    use outagewatch::domain::geo::{gazetteer, CountryCode};
    use outagewatch::domain::report::Problem;
    use outagewatch::store::{floor_to, Fingerprint, NewReport};

    let catalog = app::catalog(&Settings::from_toml(&[]).unwrap());
    let mut reports = Vec::new();
    scenario::generate(scenario, |row| {
        let country = CountryCode::parse(&row.country).unwrap();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&blake3::hash(row.reporter.as_bytes()).as_bytes()[..16]);
        reports.push(NewReport {
            id: uuid::Uuid::new_v4(),
            client_id: false,
            received_at: row.received_at,
            service: catalog.parse(&row.service).unwrap().slug.clone(),
            country,
            city: row
                .city
                .as_deref()
                .map(|city| gazetteer().lookup(country, city).unwrap().name),
            problem: Problem::parse(row.problem).unwrap(),
            fingerprint: Fingerprint(fingerprint),
            dedup_window_start: floor_to(row.received_at, 15 * 60),
            network: None,
        });
    });
    store
        .insert_reports(&reports, outagewatch::runtime::clock::now())
        .await
        .unwrap();
    reports.len()
}

/// The events the detector core raises over the stored rollups of `[from, to)`, stepping every
/// minute as the runner does.
pub async fn engine_events(
    store: &Arc<dyn Store>,
    model: &outagewatch::detect::DetectorConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<outagewatch::detect::EngineEvent> {
    use outagewatch::detect::{Engine, PlaceCount};
    let rollups = store.minute_counts(from, to).await.unwrap();
    let rows = rollups.in_order();
    let mut engine = Engine::new(model);
    let mut events = Vec::new();
    let mut minute = from;
    let mut next = 0;
    while minute < to {
        let mut counts = Vec::new();
        while next < rows.len() && rows[next].minute == minute {
            let row = &rows[next];
            counts.push(PlaceCount {
                service: row.service,
                country: row.country,
                city: row.city,
                count: row.count,
            });
            next += 1;
        }
        events.extend(engine.step(minute.timestamp(), &counts));
        minute += TimeDelta::minutes(1);
    }
    events
}

/// The minute the detector core raises `Opened` for each incident over the stored rollups of
/// `[from, to)`, keyed by its series and start: what the runner must store as `detected_at`.
pub async fn opened_minutes(
    store: &Arc<dyn Store>,
    model: &outagewatch::detect::DetectorConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::collections::BTreeMap<(outagewatch::detect::SeriesKey, DateTime<Utc>), DateTime<Utc>> {
    use outagewatch::detect::IncidentEvent;
    let at = |seconds| DateTime::from_timestamp(seconds, 0).unwrap();
    engine_events(store, model, from, to)
        .await
        .into_iter()
        .filter_map(|event| match event.event {
            IncidentEvent::Opened(summary) => {
                Some(((event.key, at(summary.started_at)), at(event.at)))
            }
            _ => None,
        })
        .collect()
}

/// A free port on 127.0.0.1 (its listener is closed again at once, so the port is free to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Adds one chunk of a Server-Sent Events stream to `buffer` and takes out the events it
/// completed: each one's `event:` name and its `data:` as JSON (an event whose data is not JSON,
/// such as the opening comment, is dropped).
pub fn complete_sse_events(buffer: &mut String, chunk: &[u8]) -> Vec<(String, serde_json::Value)> {
    buffer.push_str(&String::from_utf8_lossy(chunk));
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                name = rest.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim());
            }
        }
        if let Ok(value) = serde_json::from_str(&data) {
            events.push((name, value));
        }
    }
    events
}
