//! The service under test: the real `outagewatch serve` binary as a child process, started, probed, signalled and killed by the fault rounds.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outagewatch::store::{self, ConnectOptions, Store};
use outagewatch_loadgen::LoadgenSummary;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_outagewatch");

/// A running `serve` and how to start it again on the same port and database.
pub struct Service {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub database_url: String,
    env: Vec<(String, String)>,
    /// Every start's stderr, appended.
    pub log: PathBuf,
}

/// Settings every round starts from: quiet logs, the detector's standby retrying each second,
/// no rate limit and no network cap (all load comes from 127.0.0.1), and retention off (a
/// round may replay history of any age).
pub fn base_env() -> Vec<(String, String)> {
    [
        ("OUTAGEWATCH__LOG__LEVEL", "warn,outagewatch::detector=info"),
        ("OUTAGEWATCH__RATE_LIMIT__PER_IP_PER_MINUTE", "0"),
        (
            "OUTAGEWATCH__ABUSE__MAX_COUNTED_PER_NETWORK_PER_MINUTE",
            "0",
        ),
        ("OUTAGEWATCH__DETECTOR__LEADER_RETRY_SECONDS", "1"),
        ("OUTAGEWATCH__RETENTION__REPORTS_DAYS", "0"),
        ("OUTAGEWATCH__RETENTION__MINUTE_ROLLUPS_DAYS", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the binary with `args` on `database_url` and waits for it (import, redetect, migrate).
pub fn run_command(database_url: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("OUTAGEWATCH__LOG__LEVEL", "warn")
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Service {
    /// Starts `serve` on a new port with the base settings plus `extra`, and waits until healthy.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> Service {
        let mut env = base_env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let log = std::env::temp_dir().join(format!(
            "outagewatch-faults-{}-{}.log",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        let mut service = Service {
            child: None,
            port: free_port(),
            database_url: database_url.to_owned(),
            env,
            log,
        };
        service.restart().await;
        service
    }

    /// Starts the process again (same port, database and settings) and waits until healthy.
    pub async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the service log");
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env(
                "OUTAGEWATCH__HTTP__LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(command.spawn().expect("spawn outagewatch serve"));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let answer = http
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the service did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL: no shutdown, no goodbye to the database.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits (at most `within`) for the exit: how long it took and whether it
    /// exited cleanly, or None if it was still running.
    pub async fn terminate(&mut self, within: Duration) -> Option<(Duration, bool)> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let sent = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        match tokio::time::timeout(within, child.wait()).await {
            Ok(Ok(status)) => Some((sent.elapsed(), status.success())),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A store connection to check what was stored.
pub async fn open_store(url: &str) -> Arc<dyn Store> {
    let options = ConnectOptions {
        max_connections: 4,
        read_connections: 4,
        acquire_timeout: Duration::from_secs(10),
    };
    store::connect(url, &options).await.expect("open the store")
}

/// What a load run's answers came to in the database.
pub struct Verification {
    pub acknowledged: usize,
    pub acknowledged_stored: usize,
    pub rejected: usize,
    pub rejected_stored: usize,
    /// Ids acknowledged more than once.
    pub twice: usize,
    /// Counted reports equal the minute rollups' country totals (nothing counted twice or lost).
    pub counts_consistent: bool,
}

impl Verification {
    pub fn holds(&self) -> bool {
        self.acknowledged_stored == self.acknowledged
            && self.rejected_stored == 0
            && self.twice == 0
            && self.counts_consistent
    }

    pub fn describe(&self) -> String {
        format!(
            "{}/{} acked stored, {} of {} 4xx stored, {} twice, rollups {}",
            self.acknowledged_stored,
            self.acknowledged,
            self.rejected_stored,
            self.rejected,
            self.twice,
            if self.counts_consistent {
                "= counted"
            } else {
                "!= counted"
            }
        )
    }
}

/// Checks a run against the database: every acknowledged id stored, no rejected one, no id
/// acknowledged twice, and the rollups agree with the counted reports.
pub async fn verify(database_url: &str, summaries: &[&LoadgenSummary]) -> Verification {
    let store = open_store(database_url).await;
    let acknowledged: Vec<Uuid> = summaries
        .iter()
        .flat_map(|s| s.acknowledged_ids.iter().copied())
        .collect();
    let rejected: Vec<Uuid> = summaries
        .iter()
        .flat_map(|s| s.rejected_ids.iter().copied())
        .collect();
    let distinct: std::collections::HashSet<Uuid> = acknowledged.iter().copied().collect();
    let stored = store.stored_ids(&acknowledged).await.expect("read ids");
    let rejected_stored = store.stored_ids(&rejected).await.expect("read ids");
    let pool = sqlx::PgPool::connect(database_url).await.expect("connect");
    let (counted, rolled): (i64, i64) = sqlx::query_as(
        "select (select count(*) from reports where counted),
                (select coalesce(sum(count), 0)::int8 from rollups where city = '')",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    Verification {
        acknowledged: distinct.len(),
        acknowledged_stored: stored.len(),
        rejected: rejected.len(),
        rejected_stored: rejected_stored.len(),
        twice: acknowledged.len() - distinct.len(),
        counts_consistent: counted == rolled,
    }
}
