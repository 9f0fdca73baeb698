//! The deployment under test, on loopback: a fresh database on the throwaway primary (read
//! from its streaming replica), `serve` replicas on it, HAProxy in front of them with
//! compose.yaml's configuration, and what the test hears from them (log lines, event streams).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use outagewatch::config::Settings;
use outagewatch::domain::buckets::minute_of;
use outagewatch::runtime::clock;
use outagewatch::store::Store;
use outagewatch_scenario::Scenario;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::mpsc;

use crate::common::{self, free_port, Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_outagewatch");

/// What the detector leader logs when it takes the lock.
const LEADS: &str = "this process now runs the detector";

/// Service replicas: compose.yaml's three.
pub const REPLICAS: usize = 3;

/// HAProxy: `$HAPROXY`, else Debian's `/usr/sbin/haproxy`, else one on the PATH.
fn haproxy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("HAPROXY") {
        return path.into();
    }
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| PathBuf::from(dir).join("haproxy"))
        .collect::<Vec<_>>();
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "HAProxy not found: install it (Debian: apt-get install haproxy; ./scripts/test \
                 does as root) or set HAPROXY to its path"
            )
        })
}

/// compose.yaml's HAProxy configuration on loopback: its frontend bound to 127.0.0.1:`listen`
/// and one `server` line per replica port, each with the options of compose's servers.
fn haproxy_config(listen: u16, ports: &[u16]) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml at the repository's root");
    let compose = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap()
        .remove(0);
    let config = compose["configs"]["haproxy"]["content"]
        .as_str()
        .expect("compose.yaml's configs.haproxy.content");
    let mut lines = Vec::new();
    // Where compose's server lines were, their indent, and each one's options.
    let mut servers: Option<(usize, String)> = None;
    let mut options = Vec::new();
    for line in config.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            // Compose's maxconn asks for more open files than this machine may allow a process
            // (HAProxy 2.6 then refuses to start); the test opens a few hundred at most.
            Some(&"global") => {
                lines.push(line.to_owned());
                lines.push("  no strict-limits".to_owned());
            }
            Some(&"bind") => lines.push(format!("{indent}bind 127.0.0.1:{listen}")),
            // server NAME ADDRESS OPTIONS…
            Some(&"server") => {
                servers.get_or_insert((lines.len(), indent.to_owned()));
                options.push(words[3..].join(" "));
            }
            _ => lines.push(line.to_owned()),
        }
    }
    let (at, indent) = servers.expect("compose's proxy has server lines");
    assert_eq!(options.len(), ports.len(), "one server line per replica");
    let server_lines = ports
        .iter()
        .zip(&options)
        .enumerate()
        .map(|(i, (port, options))| {
            format!("{indent}server app{} 127.0.0.1:{port} {options}", i + 1)
        });
    lines.splice(at..at, server_lines);
    lines.join("\n") + "\n"
}

/// An HTTP client whose connections come from `address` (all of 127.0.0.0/8 is this machine's).
pub fn client_at(address: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(address))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The moment `at` (wall clock) falls, as an `Instant`.
pub fn instant_at(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - clock::now()).to_std().unwrap_or_default()
}

/// If fewer than `needed` are left of the current minute, waits for the next one to begin: the
/// network caps, and the surges the detector sees, count per minute.
pub async fn wait_for_room_in_minute(needed: Duration) {
    let next = minute_of(clock::now()) + TimeDelta::minutes(1);
    let left = (next - clock::now()).to_std().unwrap_or_default();
    if left < needed {
        tokio::time::sleep_until((instant_at(next) + Duration::from_millis(200)).into()).await;
    }
}

/// What the test hears from the deployment: a replica's log line or an event of a stream.
pub enum Heard {
    Line(usize, Instant, String),
    Event(Event),
}

/// One Server-Sent Event, as stream `stream` delivered it.
#[derive(Clone, Debug)]
pub struct Event {
    pub stream: usize,
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub name: String,
    pub data: Value,
}

impl Event {
    /// Whether this announces that `service`'s incident in `country` opened.
    pub fn opens(&self, service: &str, country: &str) -> bool {
        let incident = &self.data["incident"];
        self.name == "incident"
            && self.data["kind"] == "opened"
            && incident["service"] == service
            && incident["country"] == country
            && incident["scope"] == "country"
    }

    /// The minute of a `counts` event of X (every processed minute has one).
    pub fn minute_of_x(&self) -> Option<DateTime<Utc>> {
        (self.name == "counts" && self.data["service"] == "x")
            .then(|| self.data["minute"].as_str().unwrap().parse().unwrap())
    }
}

/// Everything heard so far, and the channel the rest arrives on.
pub struct Ears {
    rx: mpsc::UnboundedReceiver<Heard>,
    tx: mpsc::UnboundedSender<Heard>,
    pub lines: Vec<(usize, Instant, String)>,
    pub events: Vec<Event>,
}

impl Ears {
    fn new() -> Ears {
        let (tx, rx) = mpsc::unbounded_channel();
        Ears {
            rx,
            tx,
            lines: Vec::new(),
            events: Vec::new(),
        }
    }

    fn keep(&mut self, heard: Heard) {
        match heard {
            Heard::Line(replica, at, text) => {
                // Shown with a failing test's output.
                eprintln!("app{}: {text}", replica + 1);
                self.lines.push((replica, at, text));
            }
            Heard::Event(event) => self.events.push(event),
        }
    }

    /// Keeps what arrives until `at`.
    pub async fn listen_until(&mut self, at: Instant) {
        while let Ok(Some(heard)) = tokio::time::timeout_at(at.into(), self.rx.recv()).await {
            self.keep(heard);
        }
    }

    /// Keeps what arrives until `found` finds what it looks for in all that was heard; fails
    /// naming `what` after `within`.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut found: impl FnMut(&Ears) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = found(self) {
                return value;
            }
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(heard)) => self.keep(heard),
                _ => panic!("{what}: not within {within:?}"),
            }
        }
    }

    /// The replica that last said it runs the detector, and when.
    pub fn leader(&self) -> Option<(usize, Instant)> {
        self.lines
            .iter()
            .rev()
            .find(|(_, _, text)| text.contains(LEADS))
            .map(|(replica, at, _)| (*replica, *at))
    }

    /// Opens the event stream at `url` and hands its events on as stream `stream`.
    pub async fn open_stream(&self, url: &str, stream: usize) -> Result<(), String> {
        let mut response = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        if response.status() != 200 {
            return Err(format!("answered {}", response.status()));
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                for (name, data) in common::complete_sse_events(&mut buffer, &chunk) {
                    let event = Event {
                        stream,
                        at: Instant::now(),
                        wall: clock::now(),
                        name,
                        data,
                    };
                    if tx.send(Heard::Event(event)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

/// The deployment: a fresh database on the throwaway primary, read from the streaming replica,
/// [`REPLICAS`] `serve` replicas on it and HAProxy in front of them.
pub struct Topology {
    pub store: Arc<dyn Store>,
    pub db: TestDb,
    /// The settings every replica shares, as environment variables (each adds its listen address).
    env: Vec<(String, String)>,
    /// Each replica's port and, until it is killed, its process.
    replicas: Vec<(u16, Option<tokio::process::Child>)>,
    proxy_port: u16,
    proxy: tokio::process::Child,
    proxy_dir: tempfile::TempDir,
    pub ears: Ears,
    /// Reports stored before the replicas started.
    pub seeded: usize,
}

impl Topology {
    /// Seeds the database with `history` (if any) before the replicas start with the shared
    /// settings plus `extra`; returns once every replica and the proxy answer ready.
    pub async fn start(extra: &[(&str, &str)], history: Option<&Scenario>) -> Topology {
        let db = TestDb::new(Backend::Postgres).await;
        let store = db.open_store().await;
        let seeded = match history {
            Some(history) => common::insert_scenario(&store, history).await,
            None => 0,
        };
        let read_url = db.replica_url();
        wait_for_replica(&read_url).await;
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("OUTAGEWATCH__DATABASE__READ_URL", &read_url),
            // The proxy connects to the replicas from 127.0.0.1; its clients come from elsewhere
            // in 127.0.0.0/8.
            ("OUTAGEWATCH__HTTP__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
            ("OUTAGEWATCH__LOG__LEVEL", "warn,outagewatch::detector=info"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.sort();
        let mut ears = Ears::new();
        let mut running = Vec::new();
        for index in 0..REPLICAS {
            let port = free_port();
            let mut child = tokio::process::Command::new(BIN)
                .arg("serve")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("OUTAGEWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let tx = ears.tx.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(Heard::Line(index, Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
            running.push((port, Some(child)));
        }
        let http = reqwest::Client::new();
        for (index, (port, _)) in running.iter().enumerate() {
            let url = format!("http://127.0.0.1:{port}/readyz");
            let what = format!("app{} ready", index + 1);
            ready(&mut ears, &http, &url, &what).await;
        }

        let proxy_dir = tempfile::tempdir().unwrap();
        let proxy_port = free_port();
        let ports: Vec<u16> = running.iter().map(|(port, _)| *port).collect();
        let config = proxy_dir.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(proxy_port, &ports)).unwrap();
        let proxy = tokio::process::Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(proxy_dir.path().join("haproxy.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut topology = Topology {
            store,
            db,
            env,
            replicas: running,
            proxy_port,
            proxy,
            proxy_dir,
            ears,
            seeded,
        };
        // Ready through the proxy twice in a row per replica: every one is in the rotation.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut in_a_row = 0;
        while in_a_row < 2 * REPLICAS {
            if let Ok(Some(status)) = topology.proxy.try_wait() {
                panic!("haproxy exited ({status}): {}", topology.proxy_log());
            }
            let url = topology.proxy_url("/readyz");
            let answer = http.get(&url).timeout(Duration::from_secs(2)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                in_a_row += 1;
                continue;
            }
            in_a_row = 0;
            assert!(
                Instant::now() < deadline,
                "the proxy not ready within a minute: {}",
                topology.proxy_log()
            );
            let soon = Instant::now() + Duration::from_millis(50);
            topology.ears.listen_until(soon).await;
        }
        topology
    }

    pub fn url(&self, replica: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replicas[replica].0)
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy_port)
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.proxy_dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// The settings the replicas run with, read as `serve` reads them.
    pub fn settings(&self) -> Settings {
        Settings::load_with_env(None, self.env.clone()).unwrap()
    }

    /// `kill -9` of a replica: when the signal went (the process is gone on return).
    pub async fn kill(&mut self, replica: usize) -> Instant {
        let mut child = self.replicas[replica].1.take().expect("a running replica");
        let at = Instant::now();
        child.kill().await.unwrap();
        at
    }

    /// Waits (at most `within`) until the detector has processed every complete minute.
    pub async fn wait_until_caught_up(&mut self, within: Duration) {
        let settle = Duration::from_secs(self.settings().detector.settle_seconds);
        let deadline = Instant::now() + within;
        loop {
            let last_complete =
                outagewatch::detector::complete_until(clock::now(), settle) - TimeDelta::minutes(1);
            let watermark = self.store.checkpoint().await.unwrap().map(|c| c.watermark);
            if watermark >= Some(last_complete) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the detector did not catch up within {within:?} (at {watermark:?})"
            );
            let soon = Instant::now() + Duration::from_millis(200);
            self.ears.listen_until(soon).await;
        }
    }
}

/// Waits (at most a minute) until `url` answers 200, keeping what is heard meanwhile.
async fn ready(ears: &mut Ears, http: &reqwest::Client, url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http.get(url).timeout(Duration::from_secs(2)).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        ears.listen_until(Instant::now() + Duration::from_millis(50))
            .await;
    }
}

/// Waits until the streaming replica has the database at `url` (it replays its creation).
async fn wait_for_replica(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(connection) => {
                let _ = connection.close().await;
                return;
            }
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the replica never had the database: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
