//! Test fixtures: fresh SQLite files and Postgres databases, and a `TestApp` served on port 0.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use outagewatch::app::App;
use outagewatch::config::Settings;
use outagewatch::store::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The environment variable the test script sets to its throwaway cluster.
pub const POSTGRES_ENV: &str = "OUTAGEWATCH_TEST_POSTGRES_URL";

/// A database for one test: a new SQLite file, or a new database in the throwaway cluster.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
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

    /// Settings for this database with the rate limit and the read cache off (tests read right
    /// after they write), plus `extra` TOML.
    pub fn settings(&self, extra: &str) -> Settings {
        let base = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nread_cache_seconds = 0\n[database]\nurl = \"{}\"\n[rate_limit]\nper_ip_per_minute = 0\n",
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
