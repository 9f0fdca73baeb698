//! A Postgres cluster of the fault suite's own (initdb + pg_ctl, random port, temp dir), which rounds stop, stall and restart under the service's feet.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running (or stopped) throwaway cluster; removed when dropped.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// initdb and postgres refuse to run as root: run them as `postgres`.
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| PathBuf::from("/usr/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// initdb and start on a free port.
    pub fn start() -> Result<Cluster, String> {
        let bin = pg_bin();
        let dir =
            std::env::temp_dir().join(format!("outagewatch-faults-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(&dir))?;
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        for attempt in 0..8u16 {
            cluster.port = 20_000 + (std::process::id() as u16 % 20_000) + attempt * 997;
            if cluster.pg_start().is_ok() {
                return Ok(cluster);
            }
        }
        Err(format!(
            "could not start PostgreSQL: {}",
            std::fs::read_to_string(cluster.dir.join("postgres.log")).unwrap_or_default()
        ))
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run_pg(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        run(command.args(args))
    }

    fn pg_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// The URL of database `name` (created by [`Cluster::create_db`]).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a database for one round.
    pub async fn create_db(&self, name: &str) -> String {
        let pool = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .expect("connect to the suite's cluster");
        sqlx::query(&format!("create database {name}"))
            .execute(&pool)
            .await
            .expect("create a database");
        pool.close().await;
        self.url(name)
    }

    /// `pg_ctl stop -m immediate`: every backend is killed, nothing is flushed.
    pub fn stop_immediately(&self) {
        let _ = self.run_pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }

    /// Starts it again (crash recovery first) and waits until it accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_start()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the postmaster and every process it forked.
    pub fn signal_all(&self, signal: &str) {
        let Some(postmaster) = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        else {
            return;
        };
        let mut pids = vec![postmaster.clone()];
        pids.extend(children_of(&postmaster));
        // Children that exited meanwhile are no longer there to signal; that is fine.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            pid.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(Path::new("/proc").join(&pid).join("stat")).ok()?;
            // pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
            let after = stat.rsplit_once(')')?.1;
            let ppid = after.split_whitespace().nth(1)?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A stalled cluster cannot stop: wake it first.
        self.signal_all("CONT");
        self.stop_immediately();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
