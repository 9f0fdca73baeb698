//! Rounds under load: kill -9, Postgres stopped and stalled, 10x overload, SIGTERM, and slowloris, each driven by the load generator that records every id and answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outagewatch_loadgen::{self as loadgen, Answer, LoadgenOptions, LoadgenSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::Cluster;
use crate::service::{open_store, rss_kib, verify, Service};
use crate::{Row, Scale};

/// The longest answer allowed while the database is down or stalled.
const OUTAGE_ANSWER_LIMIT: Duration = Duration::from_millis(1500);

/// Service 2xx must be back this soon after the database is.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

fn options(url: String, connections: usize, duration: Duration) -> LoadgenOptions {
    LoadgenOptions {
        url,
        connections,
        duration,
        warmup: Duration::ZERO,
        distinct_reporters: 100_000,
        record_answers: true,
        ..LoadgenOptions::default()
    }
}

async fn run_load(options: LoadgenOptions) -> LoadgenSummary {
    loadgen::run(options)
        .await
        .expect("the load generator runs")
}

/// A random duration in `[low, high)`.
fn random_between(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis().max(1);
    low + Duration::from_millis((uuid::Uuid::new_v4().as_u128() % span) as u64)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn statuses(by_status: &BTreeMap<u16, u64>) -> String {
    by_status
        .iter()
        .map(|(status, n)| format!("{n}×{status}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// kill -9 at a random moment under load, restart at once; every acknowledged id survives.
pub async fn kill_nine(cluster: &Cluster, scale: Scale) -> Row {
    let url = cluster.create_db("faults_kill").await;
    let mut service = Service::start(&url, &[]).await;
    let rounds = scale.pick(2, 5);
    let round = Duration::from_secs(scale.pick(3, 4));
    let load = tokio::spawn(run_load(options(
        service.url(""),
        64,
        round * rounds + Duration::from_secs(2),
    )));
    let mut restarts = Vec::new();
    for _ in 0..rounds {
        // The fault's moment is random: the wait is the test's input, not a wait for a condition.
        let before = random_between(Duration::from_millis(500), round);
        tokio::time::sleep(before).await;
        service.kill9().await;
        let down = Instant::now();
        service.restart().await;
        restarts.push(down.elapsed());
        tokio::time::sleep(round.saturating_sub(before)).await;
    }
    let summary = load.await.expect("load task");
    let check = verify(&url, &[&summary]).await;
    let slowest = restarts.iter().max().copied().unwrap_or_default();
    Row {
        test: "kill -9 under load, restart (rounds)",
        pass: check.holds() && check.acknowledged > 0,
        figures: format!(
            "{rounds} kills, back up in ≤ {}; {}",
            ms(slowest),
            check.describe()
        ),
    }
}

/// One probe of a read path during an outage.
struct Probe {
    sent_after: Duration,
    path: &'static str,
    status: u16,
    latency: Duration,
}

/// GETs readiness and an uncached read every 200 ms until `until`.
async fn probe(service_url: String, start: Instant, until: Instant) -> Vec<Probe> {
    let http = reqwest::Client::new();
    let mut probes = Vec::new();
    let base = outagewatch::runtime::clock::now() - chrono::TimeDelta::days(1);
    let mut i = 0i64;
    while Instant::now() < until {
        i += 1;
        // A new `from` each time, so the read cache never answers for the store.
        let from = (base - chrono::TimeDelta::seconds(i)).format("%Y-%m-%dT%H:%M:%SZ");
        for (path, target) in [
            ("/readyz", "/readyz".to_owned()),
            (
                "counts",
                format!("/api/v1/counts?service=x&interval=1h&from={from}"),
            ),
        ] {
            let sent = Instant::now();
            let status = http
                .get(format!("{service_url}{target}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            probes.push(Probe {
                sent_after: sent - start,
                path,
                status,
                latency: sent.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    probes
}

/// How the service behaved around a database outage from `down` to `back` (times after `start`).
struct Outage {
    /// Requests sent during the outage, by status (0: transport error).
    during: BTreeMap<u16, u64>,
    slowest: Duration,
    /// From the database's return to the first 2xx answer to a request sent after it.
    recovered: Option<Duration>,
    probes_ok: bool,
    probes_slowest: Duration,
    /// Each probed path's statuses during the outage.
    probe_statuses: BTreeMap<&'static str, BTreeMap<u16, u64>>,
}

/// `restoring` is when the restart (or SIGCONT) began and `back` when it was done: a request
/// counts as "during the outage" if it was sent after the fault had settled and answered
/// before the repair began.
fn outage(
    answers: &[Answer],
    probes: &[Probe],
    down: Duration,
    restoring: Duration,
    back: Duration,
) -> Outage {
    // Requests in flight at the moment of the fault may still have been answered 2xx.
    let settled = down + Duration::from_millis(100);
    let inside = |sent: Duration, latency: Duration| sent >= settled && sent + latency < restoring;
    let mut during = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for answer in answers.iter().filter(|a| inside(a.sent_after, a.latency)) {
        *during.entry(answer.status).or_insert(0) += 1;
        slowest = slowest.max(answer.latency);
    }
    let recovered = answers
        .iter()
        .filter(|a| a.sent_after >= back && (200..300).contains(&a.status))
        .map(|a| a.sent_after + a.latency - back)
        .min();
    let outage_probes: Vec<&Probe> = probes
        .iter()
        .filter(|p| inside(p.sent_after, p.latency))
        .collect();
    let probes_ok = ["/readyz", "counts"]
        .iter()
        .all(|path| outage_probes.iter().any(|p| p.path == *path))
        && outage_probes
            .iter()
            .all(|p| p.status == 503 && p.latency < OUTAGE_ANSWER_LIMIT);
    let probes_slowest = outage_probes
        .iter()
        .map(|p| p.latency)
        .max()
        .unwrap_or_default();
    let mut probe_statuses: BTreeMap<&'static str, BTreeMap<u16, u64>> = BTreeMap::new();
    for p in &outage_probes {
        *probe_statuses
            .entry(p.path)
            .or_default()
            .entry(p.status)
            .or_default() += 1;
    }
    Outage {
        during,
        slowest,
        recovered,
        probes_ok,
        probes_slowest,
        probe_statuses,
    }
}

/// Waits (at most `within`) until the detector's watermark reaches `minute`: it has taken the
/// lead again after losing its lock connection and caught up with no minute skipped.
async fn detector_caught_up(
    url: &str,
    minute: chrono::DateTime<chrono::Utc>,
    within: Duration,
) -> bool {
    let store = open_store(url).await;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(checkpoint)) = store.checkpoint().await {
            if checkpoint.watermark >= minute {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// How the database goes away in a [`database_fault`] round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseFault {
    /// `pg_ctl stop -m immediate` under load, started again later.
    Stopped,
    /// SIGSTOP on every Postgres process under load, SIGCONT later.
    Stalled,
}

impl DatabaseFault {
    /// The round's name in the table, and the database it runs in.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            DatabaseFault::Stopped => (
                "postgres stopped (pg_ctl stop -m immediate), restarted",
                "faults_pg_stop",
            ),
            DatabaseFault::Stalled => (
                "postgres stalled (SIGSTOP, then SIGCONT)",
                "faults_pg_stall",
            ),
        }
    }

    /// How long the database stays away.
    fn length(self, scale: Scale) -> Duration {
        Duration::from_secs(match self {
            DatabaseFault::Stopped => scale.pick(6, 20),
            DatabaseFault::Stalled => scale.pick(5, 10),
        })
    }
}

/// The database goes away (stopped, or stalled) for a while under load, then comes back.
pub async fn database_fault(cluster: &Cluster, scale: Scale, fault: DatabaseFault) -> Row {
    let (name, db) = fault.names();
    let length = fault.length(scale);
    let stall = fault == DatabaseFault::Stalled;
    let url = cluster.create_db(db).await;
    let service = Service::start(&url, &[]).await;
    let before = Duration::from_secs(3);
    let after = Duration::from_secs(8);
    let start = Instant::now();
    let end = start + before + length + after;
    let load = tokio::spawn(run_load(options(
        service.url(""),
        32,
        before + length + after,
    )));
    let probes = tokio::spawn(probe(service.url(""), start, end));
    tokio::time::sleep_until((start + before).into()).await;
    if stall {
        cluster.signal_all("STOP");
    } else {
        cluster.stop_immediately();
    }
    let down = start.elapsed();
    let down_minute = outagewatch::store::minute_of(outagewatch::runtime::clock::now());
    tokio::time::sleep_until((start + before + length).into()).await;
    let restoring = start.elapsed();
    if stall {
        cluster.signal_all("CONT");
    } else if let Err(error) = cluster.restart() {
        return Row {
            test: name,
            pass: false,
            figures: format!("postgres did not restart: {error}"),
        };
    }
    let back = start.elapsed();
    let back_minute = outagewatch::store::minute_of(outagewatch::runtime::clock::now());
    let summary = load.await.expect("load task");
    let probes = probes.await.expect("probe task");
    let seen = outage(&summary.answers, &probes, down, restoring, back);
    let check = verify(&url, &[&summary]).await;
    // The detector notices a lost lock at its next tick (once a minute), leads again and
    // resumes from its watermark; it has processed the outage's minute (short suite) or the
    // minute the database came back (full) only if it did, with no minute skipped.
    let (goal, what) = if scale.full {
        (back_minute, "the minute postgres came back")
    } else {
        (down_minute, "the outage's minute")
    };
    let detector = if detector_caught_up(&url, goal, Duration::from_secs(150)).await {
        format!("detector resumed and processed {what}")
    } else {
        format!("detector did NOT process {what} within 150 s")
    };
    let only_503 = seen.during.keys().all(|status| *status == 503);
    let recovered_in_time = seen.recovered.is_some_and(|r| r < RECOVERY_LIMIT);
    let pass = check.holds()
        && only_503
        && seen.slowest < OUTAGE_ANSWER_LIMIT
        && recovered_in_time
        && seen.probes_ok
        && !detector.contains("NOT");
    Row {
        test: name,
        pass,
        figures: format!(
            "{} s out: ingest {} (slowest {}), readyz {} and reads {} (slowest {}); 2xx again {} after; {}; {}",
            length.as_secs(),
            statuses(&seen.during),
            ms(seen.slowest),
            statuses(&seen.probe_statuses.get("/readyz").cloned().unwrap_or_default()),
            statuses(&seen.probe_statuses.get("counts").cloned().unwrap_or_default()),
            ms(seen.probes_slowest),
            seen.recovered.map_or("never".to_owned(), ms),
            check.describe(),
            detector
        ),
    }
}

/// RSS samples (seconds after start, MiB) until `stop` turns true.
async fn sample_rss(pid: u32, start: Instant, stop: Arc<AtomicBool>) -> Vec<(f64, f64)> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(kib) = rss_kib(pid) {
            samples.push((start.elapsed().as_secs_f64(), kib as f64 / 1024.0));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples
}

fn peak(samples: &[(f64, f64)], from: f64, to: f64) -> f64 {
    samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, mib)| *mib)
        .fold(0.0, f64::max)
}

/// Ten times the measured capacity, then half of it: only 201/429/503, memory levels off, and
/// the calm phase is all successes.
pub async fn overload(cluster: &Cluster, scale: Scale) -> Row {
    let url = cluster.create_db("faults_overload").await;
    let service = Service::start(&url, &[]).await;
    let mut measure = options(service.url(""), 64, Duration::from_secs(4));
    measure.warmup = Duration::from_secs(1);
    let measured = run_load(measure).await;
    let capacity = measured.answered_per_second.max(1.0);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(
        service.pid().unwrap_or_default(),
        start,
        stop.clone(),
    ));
    let over_seconds = scale.pick(10, 60);
    let mut over = options(
        service.url(""),
        scale.pick(1600, 2000),
        Duration::from_secs(over_seconds),
    );
    over.rate_per_second = Some(10.0 * capacity);
    over.record_answers = false;
    let flood = run_load(over).await;
    let calm_from = start.elapsed().as_secs_f64();
    let mut calm = options(service.url(""), 32, Duration::from_secs(scale.pick(5, 15)));
    calm.rate_per_second = Some(capacity / 2.0);
    calm.record_answers = false;
    let quiet = run_load(calm).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let over_secs = over_seconds as f64;
    let first_third = peak(&samples, 0.0, over_secs / 3.0);
    let last_third = peak(&samples, 2.0 * over_secs / 3.0, over_secs + 5.0);
    let calm_peak = peak(&samples, calm_from, f64::MAX);
    // Levels off: the last third of the flood holds no more than a fifth (plus 16 MiB of
    // allocator slack) over the first third's peak.
    let plateau = last_third <= first_third * 1.2 + 16.0;
    let allowed = [200u16, 201, 429, 503];
    let only_allowed = flood.by_status.keys().all(|s| allowed.contains(s));
    let calm_ok = quiet.transport_errors == 0
        && quiet.by_status.keys().all(|s| *s == 201 || *s == 200)
        && quiet.sent > 0;
    let check = verify(&url, &[&measured, &flood, &quiet]).await;
    Row {
        test: "10× capacity, then half capacity",
        pass: only_allowed && flood.transport_errors == 0 && plateau && calm_ok && check.holds(),
        figures: format!(
            "capacity {capacity:.0}/s; flood {over_seconds} s at {:.0}/s offered: {} ({} transport errors); \
             RSS {first_third:.0} → {last_third:.0} MiB (calm {calm_peak:.0}); calm at {:.0}/s: {} ({} errors); {}",
            10.0 * capacity,
            statuses(&flood.by_status),
            flood.transport_errors,
            capacity / 2.0,
            statuses(&quiet.by_status),
            quiet.transport_errors,
            check.describe()
        ),
    }
}

/// SIGTERM under load: exits within 10 s and keeps every acknowledged report.
pub async fn sigterm(cluster: &Cluster, _scale: Scale) -> Row {
    let url = cluster.create_db("faults_sigterm").await;
    let mut service = Service::start(&url, &[]).await;
    let load = tokio::spawn(run_load(options(
        service.url(""),
        64,
        Duration::from_secs(6),
    )));
    // The signal's moment is the test's input: load has been running for a while.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let exit = service.terminate(Duration::from_secs(10)).await;
    let summary = load.await.expect("load task");
    let check = verify(&url, &[&summary]).await;
    let (figures, clean) = match exit {
        Some((took, clean)) => (
            format!(
                "exited {} after SIGTERM ({}); {}",
                ms(took),
                if clean { "status 0" } else { "non-zero status" },
                check.describe()
            ),
            clean,
        ),
        None => ("still running 10 s after SIGTERM".to_owned(), false),
    };
    Row {
        test: "SIGTERM under load",
        pass: clean && check.holds() && check.acknowledged > 0,
        figures,
    }
}

/// What one slow connection saw.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// The connect itself failed.
    Refused,
    /// The server closed it this long after it opened.
    Closed(Duration),
    /// Still open when the client gave up.
    Open,
}

/// One slow client: connects, then sends nothing (`trickle` false) or a request line and one
/// header byte a second, never finishing; reports when the server closed it.
async fn slow_client(port: u16, trickle: bool, give_up: Duration) -> Slow {
    let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return Slow::Refused;
    };
    slow_talk(stream, trickle, give_up)
        .await
        .map_or(Slow::Open, Slow::Closed)
}

async fn slow_talk(
    mut stream: tokio::net::TcpStream,
    trickle: bool,
    give_up: Duration,
) -> Option<Duration> {
    let opened = Instant::now();
    let mut buffer = [0u8; 256];
    if trickle {
        stream
            .write_all(b"POST /api/v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .ok()?;
    }
    while opened.elapsed() < give_up {
        if trickle && stream.write_all(b"X").await.is_err() {
            return Some(opened.elapsed());
        }
        // One byte a second, and notice the server closing meanwhile.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

/// 500 slow connections (most trickling a header a byte a second, some idle) beside normal
/// load: the normal requests keep their p99 and the slow ones are closed.
pub async fn slowloris(cluster: &Cluster, scale: Scale) -> Row {
    let url = cluster.create_db("faults_slowloris").await;
    let service = Service::start(&url, &[]).await;
    let seconds = Duration::from_secs(scale.pick(5, 10));
    let mut normal = options(service.url(""), 32, seconds);
    normal.warmup = Duration::from_secs(1);
    normal.record_answers = false;
    let baseline = run_load(normal.clone()).await;
    let header_timeout = Duration::from_secs(5);
    let give_up = header_timeout + Duration::from_secs(10);
    let slow: Vec<_> = (0..500)
        .map(|i| tokio::spawn(slow_client(service.port, i % 5 != 0, give_up)))
        .collect();
    let attacked = run_load(normal).await;
    let mut seen = Vec::new();
    for task in slow {
        seen.push(task.await.unwrap_or(Slow::Open));
    }
    let refused = seen.iter().filter(|s| **s == Slow::Refused).count();
    let still_open = seen.iter().filter(|s| **s == Slow::Open).count();
    let closed_after: Vec<Duration> = seen
        .iter()
        .filter_map(|s| match s {
            Slow::Closed(d) => Some(*d),
            _ => None,
        })
        .collect();
    let closed = closed_after.len();
    let longest = closed_after.iter().max().copied().unwrap_or_default();
    let allowed_p99 =
        (baseline.latency_p99 * 2).max(baseline.latency_p99 + Duration::from_millis(50));
    let normal_ok = attacked.transport_errors == 0
        && attacked.by_status.keys().all(|s| *s == 201)
        && attacked.latency_p99 <= allowed_p99;
    Row {
        test: "500 slowloris connections + normal load",
        pass: normal_ok && closed == 500 && longest <= header_timeout + Duration::from_secs(2),
        figures: format!(
            "normal p99 {} alone, {} beside them ({} answers, {}); slow ones closed: {closed}/500, after ≤ {} \
             ({refused} refused, {still_open} still open)",
            ms(baseline.latency_p99),
            ms(attacked.latency_p99),
            attacked.sent,
            statuses(&attacked.by_status),
            ms(longest)
        ),
    }
}
