//! Closed-loop HTTP/1.1 load generator: posts reports to `POST /api/v1/reports` and records every report id's fate so a later check can verify what the server stored, or GETs read endpoints to measure their latency.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use uuid::Uuid;

/// Path of the ingest endpoint, appended to the base URL's path.
const REPORTS_PATH: &str = "/api/v1/reports";
/// Problem kinds the generated reports cycle through; they must be in the server's vocabulary.
pub const PROBLEMS: &[&str] = &[
    "app",
    "website",
    "login",
    "server_connection",
    "notifications",
    "other",
];
/// How long one TCP connect may take before it counts as a transport error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take, from sending to the end of its answer's body.
///
/// This also bounds how far past `warmup + duration` a run can go.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before reconnecting after a failed connect, so a dead server is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest `Retry-After` honoured; a longer one would stall a connection for most of a run.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// Wait after a 429 or 503 that carries no usable `Retry-After`.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_millis(100);
/// Largest latency the histogram tells apart, in microseconds; longer ones saturate.
const LATENCY_CEILING_MICROS: u64 = 60_000_000;

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`; only `http` is supported.
    pub url: String,
    /// Keep-alive connections, each sending one request at a time, back to back.
    pub connections: usize,
    /// Length of the measuring phase, after the warm-up.
    pub duration: Duration,
    /// Length of the warm-up: its answers are recorded but not its latency or throughput.
    pub warmup: Duration,
    /// Service slugs the reports vary over.
    pub services: Vec<String>,
    /// `(country, city)` pairs the reports vary over.
    pub places: Vec<(String, Option<String>)>,
    /// Number of distinct `User-Agent` values, so the server's dedup sees that many reporters.
    pub distinct_reporters: u32,
    /// Reports per request: 1 sends one report per body, more sends `{"reports":[...]}`.
    pub batch: usize,
    /// Request targets (path and query, e.g. `/api/v1/regions?service=x`) to GET, one picked
    /// at random per request, instead of posting reports; empty posts reports.
    pub reads: Vec<String>,
    /// Ask for gzip-compressed reads (`Accept-Encoding: gzip`), as browsers do.
    pub gzip: bool,
    /// Open loop: the requests per second all connections send together, each connection at
    /// an even pace (a slow answer delays only its own connection's next request); None sends
    /// back to back (closed loop).
    pub rate_per_second: Option<f64>,
    /// Keep every answer's send time, latency and status in [`LoadgenSummary::answers`].
    pub record_answers: bool,
}

/// One answer (or transport error), for looking at a run over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// When the request was sent, after the start of the run (warm-up included).
    pub sent_after: Duration,
    pub latency: Duration,
    /// The HTTP status, or 0 for a transport error (failed connect, broken connection, timeout).
    pub status: u16,
}

impl Default for LoadgenOptions {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            connections: 256,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            // The CLI passes the configured catalog instead.
            services: vec!["x".to_owned(), "youtube".to_owned()],
            places: vec![
                ("PK".to_owned(), Some("Lahore".to_owned())),
                ("PK".to_owned(), Some("Karachi".to_owned())),
                ("PK".to_owned(), Some("Rawalpindi".to_owned())),
                ("PK".to_owned(), None),
                ("US".to_owned(), Some("Chicago".to_owned())),
                ("US".to_owned(), Some("Los Angeles".to_owned())),
                ("US".to_owned(), None),
                ("GB".to_owned(), Some("London".to_owned())),
                ("GB".to_owned(), Some("Manchester".to_owned())),
                ("IN".to_owned(), Some("Mumbai".to_owned())),
                ("DE".to_owned(), Some("Berlin".to_owned())),
                ("BR".to_owned(), Some("São Paulo".to_owned())),
                ("BR".to_owned(), None),
            ],
            distinct_reporters: 10_000,
            batch: 1,
            reads: Vec::new(),
            gzip: false,
            rate_per_second: None,
            record_answers: false,
        }
    }
}

/// Outcome of a run.
///
/// `sent`, `by_status`, `transport_errors` and the id lists cover the whole run, warm-up
/// included; latencies and `acknowledged_per_second` cover the measuring phase only, i.e.
/// requests sent after the warm-up.
#[derive(Debug, Clone, Default)]
pub struct LoadgenSummary {
    /// HTTP requests sent, retries included.
    pub sent: u64,
    /// Length of the measuring phase, up to the last answer to a request sent in it.
    pub elapsed: Duration,
    /// Answers counted by HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed connects, broken connections and timed-out requests.
    pub transport_errors: u64,
    /// Every report id answered 201 or 200, i.e. stored by the server.
    pub acknowledged_ids: Vec<Uuid>,
    /// Every report id answered 4xx other than 429, i.e. not stored.
    pub rejected_ids: Vec<Uuid>,
    /// Report ids whose fate is unknown: the run ended while they awaited a retry after a
    /// 429, a 503 or a transport error, or they got an unexpected status such as a 500.
    pub unresolved_ids: Vec<Uuid>,
    /// Median latency of answered requests.
    pub latency_p50: Duration,
    /// 90th percentile latency of answered requests.
    pub latency_p90: Duration,
    /// 99th percentile latency of answered requests.
    pub latency_p99: Duration,
    /// Largest latency of an answered request.
    pub latency_max: Duration,
    /// Acknowledged reports (not requests) per second.
    pub acknowledged_per_second: f64,
    /// Requests answered per second, whatever their status.
    pub answered_per_second: f64,
    /// The longest latency seen for each status (warm-up included).
    pub max_latency_by_status: BTreeMap<u16, Duration>,
    /// Every answer in the order the connections saw them, when `record_answers` is set.
    pub answers: Vec<Answer>,
}

impl LoadgenSummary {
    /// Renders the figures as a human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("requests sent".into(), self.sent.to_string()),
            ("transport errors".into(), self.transport_errors.to_string()),
        ];
        for (status, count) in &self.by_status {
            let slowest = self
                .max_latency_by_status
                .get(status)
                .map_or_else(String::new, |d| format!(" (max {})", millis(*d)));
            rows.push((format!("status {status}"), format!("{count}{slowest}")));
        }
        rows.extend([
            (
                "acknowledged ids".into(),
                self.acknowledged_ids.len().to_string(),
            ),
            ("rejected ids".into(), self.rejected_ids.len().to_string()),
            (
                "unresolved ids".into(),
                self.unresolved_ids.len().to_string(),
            ),
            (
                "measured for".into(),
                format!("{:.2} s", self.elapsed.as_secs_f64()),
            ),
            (
                "acknowledged/s".into(),
                format!("{:.0}", self.acknowledged_per_second),
            ),
            (
                "answered/s".into(),
                format!("{:.0}", self.answered_per_second),
            ),
            ("latency p50".into(), millis(self.latency_p50)),
            ("latency p90".into(), millis(self.latency_p90)),
            ("latency p99".into(), millis(self.latency_p99)),
            ("latency max".into(), millis(self.latency_max)),
        ]);
        let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{label:<label_width$}  {value:>value_width$}");
        }
        out
    }
}

impl fmt::Display for LoadgenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// An option is out of range, e.g. no connections or no services.
    #[error("invalid load generator options: {0}")]
    InvalidOptions(String),
    /// The base URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to any address.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// Host and port looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not accept a probe connection before the run.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// A connection task panicked or was cancelled.
    #[error("a load generator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Sends reports as fast as `options.connections` closed-loop connections allow and
/// accounts for every answer; the run stops by itself after `warmup + duration`, plus at
/// most one request timeout for the last answers.
///
/// Must be called inside a Tokio runtime with I/O and timers enabled; the connections are
/// spawned onto it, so a multi-thread runtime spreads them over its workers.
pub async fn run(options: LoadgenOptions) -> Result<LoadgenSummary, LoadgenError> {
    let plan = Arc::new(Plan::new(&options).await?);

    // Fail fast with a clear error rather than run a whole load test of refused connects.
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(plan.addr)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(source)) => {
            return Err(LoadgenError::Connect {
                addr: plan.addr,
                source,
            })
        }
        Err(_) => {
            return Err(LoadgenError::Connect {
                addr: plan.addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })
        }
    }

    let start = Instant::now();
    let measure_start = start + options.warmup;
    let end = measure_start + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    // Open loop: each connection sends every `connections / rate` seconds, the connections'
    // phases spread evenly over one such interval.
    let pace = options
        .rate_per_second
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(options.connections as f64 / rate));
    for i in 0..options.connections {
        let plan = Arc::clone(&plan);
        let schedule = pace.map(|every| Schedule {
            next: start + every.mul_f64(i as f64 / options.connections as f64),
            every,
        });
        tasks.spawn(connection_loop(
            plan,
            Times {
                start,
                measure_start,
                end,
            },
            schedule,
        ));
    }

    let mut total = ConnStats::new();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined?);
    }
    Ok(total.into_summary(measure_start, options.duration))
}

/// A connection's send times in open-loop mode.
#[derive(Clone, Copy)]
struct Schedule {
    next: Instant,
    every: Duration,
}

/// The run's start, the start of its measuring phase, and its end.
#[derive(Clone, Copy)]
struct Times {
    start: Instant,
    measure_start: Instant,
    end: Instant,
}

/// Everything the connection tasks share, prepared once.
struct Plan {
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
    /// `"service":"…"` fragments, JSON-escaped.
    services: Vec<String>,
    /// `"country":"…","city":"…"` fragments, JSON-escaped.
    places: Vec<String>,
    /// `"problem":"…"` fragments.
    problems: Vec<String>,
    distinct_reporters: u32,
    batch: usize,
    /// GET targets; when present, reads are sent instead of reports.
    reads: Vec<Uri>,
    gzip: bool,
    record_answers: bool,
}

impl Plan {
    async fn new(options: &LoadgenOptions) -> Result<Self, LoadgenError> {
        let invalid = |reason: &str| Err(LoadgenError::InvalidOptions(reason.to_owned()));
        if options.connections == 0 {
            return invalid("connections must be at least 1");
        }
        if options.batch == 0 {
            return invalid("batch must be at least 1");
        }
        if options.services.is_empty() {
            return invalid("at least one service is needed");
        }
        if options.places.is_empty() {
            return invalid("at least one place is needed");
        }
        if options.distinct_reporters == 0 {
            return invalid("distinct_reporters must be at least 1");
        }
        if options.duration.is_zero() {
            return invalid("duration must be positive");
        }

        let bad_url = |reason: &str| LoadgenError::InvalidUrl {
            url: options.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = options
            .url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad_url(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(bad_url("only http:// is supported")),
            None => return Err(bad_url("missing scheme, e.g. http://127.0.0.1:8080")),
        }
        let authority = uri.authority().ok_or_else(|| bad_url("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad_url("credentials in the URL are not supported"));
        }
        let host_port = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let path: Uri = format!("{}{REPORTS_PATH}", uri.path().trim_end_matches('/'))
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad_url(&e.to_string()))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad_url("host is not a valid header value"))?;

        let addr = tokio::net::lookup_host(&host_port)
            .await
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| std::io::ErrorKind::NotFound.into())
            })
            .map_err(|source| LoadgenError::Resolve {
                host: host_port.clone(),
                source,
            })?;

        let services = options
            .services
            .iter()
            .map(|s| {
                let mut f = String::from("\"service\":");
                push_json_string(&mut f, s);
                f
            })
            .collect();
        let places = options
            .places
            .iter()
            .map(|(country, city)| {
                let mut f = String::from("\"country\":");
                push_json_string(&mut f, country);
                if let Some(city) = city {
                    f.push_str(",\"city\":");
                    push_json_string(&mut f, city);
                }
                f
            })
            .collect();
        let problems = PROBLEMS
            .iter()
            .map(|p| {
                let mut f = String::from("\"problem\":");
                push_json_string(&mut f, p);
                f
            })
            .collect();

        let reads = options
            .reads
            .iter()
            .map(|target| {
                target
                    .parse::<Uri>()
                    .ok()
                    .filter(|uri| uri.scheme().is_none() && target.starts_with('/'))
                    .ok_or_else(|| {
                        LoadgenError::InvalidOptions(format!(
                            "read target {target:?} is not a path such as /api/v1/services"
                        ))
                    })
            })
            .collect::<Result<Vec<Uri>, LoadgenError>>()?;

        Ok(Self {
            addr,
            host,
            path,
            services,
            places,
            problems,
            distinct_reporters: options.distinct_reporters,
            batch: options.batch,
            reads,
            gzip: options.gzip,
            record_answers: options.record_answers,
        })
    }

    /// Writes the next request body into `buf`, and the ids it carries into `ids`.
    fn write_body(&self, rng: &mut Rng, buf: &mut BytesMut, ids: &mut Vec<Uuid>) {
        ids.clear();
        if self.batch > 1 {
            buf.put_slice(b"{\"reports\":[");
        }
        for i in 0..self.batch {
            if i > 0 {
                buf.put_u8(b',');
            }
            let id = rng.uuid_v7();
            ids.push(id);
            buf.put_u8(b'{');
            buf.put_slice(self.services[rng.below(self.services.len())].as_bytes());
            buf.put_u8(b',');
            buf.put_slice(self.places[rng.below(self.places.len())].as_bytes());
            buf.put_u8(b',');
            buf.put_slice(self.problems[rng.below(self.problems.len())].as_bytes());
            buf.put_slice(b",\"id\":\"");
            buf.put_slice(
                id.hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer())
                    .as_bytes(),
            );
            buf.put_slice(b"\"}");
        }
        if self.batch > 1 {
            buf.put_slice(b"]}");
        }
    }

    fn user_agent(&self, rng: &mut Rng) -> HeaderValue {
        let reporter = rng.below(self.distinct_reporters as usize);
        // ASCII digits and letters only, so the conversion cannot fail.
        HeaderValue::try_from(format!("outagewatch-loadgen/1 (reporter {reporter})"))
            .unwrap_or_else(|_| HeaderValue::from_static("outagewatch-loadgen/1"))
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Three SplitMix64 streams seeded by the OS: one picks the variety, two mint the ids.
///
/// Runs against the same database must not reuse ids; two 64-bit id streams per connection
/// collide only if both states meet at the same step, which is negligible.
struct Rng {
    picks: u64,
    id_hi: u64,
    id_lo: u64,
}

impl Rng {
    fn from_os() -> Self {
        let a = Uuid::new_v4().as_u128();
        let b = Uuid::new_v4().as_u128();
        Self {
            picks: a as u64,
            id_hi: (a >> 64) as u64,
            id_lo: b as u64,
        }
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift rather than a biased modulo.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(splitmix64(&mut self.picks)) * n as u128) >> 64) as usize
    }

    /// A UUIDv7 (time-ordered, as the README advises clients to send): its random part
    /// comes from the two streams, its time part from the clock.
    fn uuid_v7(&mut self) -> Uuid {
        let hi = splitmix64(&mut self.id_hi);
        let lo = splitmix64(&mut self.id_lo);
        let bytes = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
        let mut random = [0u8; 10];
        random.copy_from_slice(&bytes[..10]);
        let millis = u64::try_from(crate::clock::now().timestamp_millis()).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Latency histogram in microseconds with three significant digits.
struct Latencies(Histogram<u64>);

impl Latencies {
    fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, LATENCY_CEILING_MICROS, 3)
                .expect("constant histogram bounds are valid"),
        )
    }

    fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot overflow the value range.
        let _ = self.0.add(&other.0);
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.max())
    }
}

/// What one connection task saw; merged into the summary at the end.
struct ConnStats {
    sent: u64,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    acknowledged: Vec<Uuid>,
    rejected: Vec<Uuid>,
    unresolved: Vec<Uuid>,
    measured_acknowledged: u64,
    measured_answers: u64,
    last_measured_answer: Option<Instant>,
    latencies: Latencies,
    max_latency_by_status: BTreeMap<u16, Duration>,
    answers: Vec<Answer>,
}

impl ConnStats {
    /// Notes one answer (status 0: a transport error) of a request sent at `sent`.
    fn note(&mut self, plan: &Plan, start: Instant, sent: Instant, status: u16) {
        let latency = sent.elapsed();
        let slowest = self.max_latency_by_status.entry(status).or_default();
        *slowest = (*slowest).max(latency);
        if plan.record_answers {
            self.answers.push(Answer {
                sent_after: sent.saturating_duration_since(start),
                latency,
                status,
            });
        }
    }

    fn new() -> Self {
        Self {
            sent: 0,
            by_status: BTreeMap::new(),
            transport_errors: 0,
            acknowledged: Vec::new(),
            rejected: Vec::new(),
            unresolved: Vec::new(),
            measured_acknowledged: 0,
            measured_answers: 0,
            last_measured_answer: None,
            latencies: Latencies::new(),
            max_latency_by_status: BTreeMap::new(),
            answers: Vec::new(),
        }
    }

    fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        for (status, count) in other.by_status {
            *self.by_status.entry(status).or_insert(0) += count;
        }
        self.transport_errors += other.transport_errors;
        self.acknowledged.extend(other.acknowledged);
        self.rejected.extend(other.rejected);
        self.unresolved.extend(other.unresolved);
        self.measured_acknowledged += other.measured_acknowledged;
        self.measured_answers += other.measured_answers;
        self.last_measured_answer = self.last_measured_answer.max(other.last_measured_answer);
        self.latencies.merge(&other.latencies);
        for (status, latency) in other.max_latency_by_status {
            let slowest = self.max_latency_by_status.entry(status).or_default();
            *slowest = (*slowest).max(latency);
        }
        self.answers.extend(other.answers);
    }

    fn into_summary(self, measure_start: Instant, duration: Duration) -> LoadgenSummary {
        // Answers to requests sent just before the end arrive after it; stretch the window
        // to cover them so the rate is not inflated.
        let elapsed = self
            .last_measured_answer
            .map_or(duration, |t| t.saturating_duration_since(measure_start))
            .max(duration);
        LoadgenSummary {
            sent: self.sent,
            elapsed,
            by_status: self.by_status,
            transport_errors: self.transport_errors,
            acknowledged_ids: self.acknowledged,
            rejected_ids: self.rejected,
            unresolved_ids: self.unresolved,
            latency_p50: self.latencies.quantile(0.50),
            latency_p90: self.latencies.quantile(0.90),
            latency_p99: self.latencies.quantile(0.99),
            latency_max: self.latencies.max(),
            acknowledged_per_second: self.measured_acknowledged as f64 / elapsed.as_secs_f64(),
            answered_per_second: self.measured_answers as f64 / elapsed.as_secs_f64(),
            max_latency_by_status: self.max_latency_by_status,
            answers: self.answers,
        }
    }
}

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One closed-loop connection: send, read the whole answer, account for it, repeat until
/// `end`; reconnects when the connection breaks.
async fn connection_loop(
    plan: Arc<Plan>,
    times: Times,
    mut schedule: Option<Schedule>,
) -> ConnStats {
    let Times {
        start,
        measure_start,
        end,
    } = times;
    let mut stats = ConnStats::new();
    let mut rng = Rng::from_os();
    let mut buf = BytesMut::new();
    let mut ids = Vec::with_capacity(plan.batch);
    // A request answered 429/503 or lost to a transport error is resent with the same ids
    // and reporter, so the server's idempotency settles whether it was stored.
    let mut pending: Option<(Bytes, HeaderValue)> = None;
    // One timer per connection enforces REQUEST_TIMEOUT; see `within`.
    let mut watchdog = pin!(tokio::time::sleep(REQUEST_TIMEOUT));

    'connect: while Instant::now() < end {
        let connect_deadline = end.min(Instant::now() + CONNECT_TIMEOUT);
        let connecting = Instant::now();
        let stream =
            match tokio::time::timeout_at(connect_deadline, TcpStream::connect(plan.addr)).await {
                Ok(Ok(stream)) => stream,
                // Cut short by the end of the run rather than failed.
                Err(_) if Instant::now() >= end => break,
                Ok(Err(_)) | Err(_) => {
                    stats.transport_errors += 1;
                    stats.note(&plan, start, connecting, 0);
                    let retry_at = end.min(Instant::now() + RECONNECT_BACKOFF);
                    tokio::time::sleep_until(retry_at).await;
                    continue;
                }
            };
        // Small requests back to back: Nagle would add delayed-ACK stalls to every one.
        let _ = stream.set_nodelay(true);
        // One flat write per request is cheaper than a writev of head and body.
        let handshake = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream));
        let Ok((mut sender, conn)) = handshake.await else {
            stats.transport_errors += 1;
            continue;
        };
        let mut conn = pin!(conn);
        let mut conn_done = false;

        loop {
            if Instant::now() >= end {
                break 'connect;
            }
            // A connection closed while idle (e.g. the server's keep-alive limit) lost nothing.
            if drive(conn.as_mut(), &mut conn_done, sender.ready())
                .await
                .is_err()
            {
                continue 'connect;
            }
            if let Some(slot) = schedule.as_mut() {
                // A retry waits for its Retry-After only; a new request waits for its turn.
                if pending.is_none() {
                    let due = slot.next;
                    slot.next = (due + slot.every).max(Instant::now());
                    if due >= end {
                        break 'connect;
                    }
                    drive(conn.as_mut(), &mut conn_done, tokio::time::sleep_until(due)).await;
                    if conn_done {
                        continue 'connect;
                    }
                }
            }
            let reading = !plan.reads.is_empty();
            let (body, user_agent) = match pending.take() {
                Some(retry) => retry,
                None if reading => (Bytes::new(), plan.user_agent(&mut rng)),
                None => {
                    plan.write_body(&mut rng, &mut buf, &mut ids);
                    (buf.split().freeze(), plan.user_agent(&mut rng))
                }
            };
            let mut request = Request::new(Full::new(body.clone()));
            let headers = request.headers_mut();
            headers.insert(HOST, plan.host.clone());
            headers.insert(USER_AGENT, user_agent.clone());
            if reading {
                *request.uri_mut() = plan.reads[rng.below(plan.reads.len())].clone();
                if plan.gzip {
                    request
                        .headers_mut()
                        .insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
                }
            } else {
                *request.method_mut() = Method::POST;
                *request.uri_mut() = plan.path.clone();
                request
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }

            let started = Instant::now();
            stats.sent += 1;
            let answer = within(watchdog.as_mut(), started, async {
                let response =
                    drive(conn.as_mut(), &mut conn_done, sender.send_request(request)).await?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(parse_retry_after);
                // The body must be read to the end before the connection takes another
                // request; its content is not needed because we know which ids we sent.
                let mut body = response.into_body();
                while let Some(frame) = drive(conn.as_mut(), &mut conn_done, body.frame()).await {
                    frame?;
                }
                Ok::<_, hyper::Error>((status, retry_after))
            })
            .await;

            let Some(Ok((status, retry_after))) = answer else {
                stats.transport_errors += 1;
                stats.note(&plan, start, started, 0);
                pending = Some((body, user_agent));
                continue 'connect;
            };
            stats.note(&plan, start, started, status);
            let answered = Instant::now();
            *stats.by_status.entry(status).or_insert(0) += 1;
            let measured = started >= measure_start;
            if measured {
                stats.latencies.record(answered - started);
                stats.last_measured_answer = Some(answered);
                stats.measured_answers += 1;
            }
            match status {
                // A read is not retried: its status is the figure.
                _ if reading => {}
                200 | 201 => {
                    stats.acknowledged.extend_from_slice(&ids);
                    if measured {
                        stats.measured_acknowledged += ids.len() as u64;
                    }
                }
                429 | 503 => {
                    pending = Some((body, user_agent));
                    let wait = retry_after
                        .unwrap_or(DEFAULT_RETRY_WAIT)
                        .min(MAX_RETRY_WAIT);
                    let sleep = tokio::time::sleep_until(end.min(answered + wait));
                    drive(conn.as_mut(), &mut conn_done, sleep).await;
                }
                400..=499 => stats.rejected.extend_from_slice(&ids),
                _ => stats.unresolved.extend_from_slice(&ids),
            }
            if conn_done {
                continue 'connect;
            }
        }
    }
    if pending.is_some() {
        stats.unresolved.extend_from_slice(&ids);
    }
    stats
}

/// Polls `fut` while also driving the connection in this same task, which saves a task
/// hand-off per request compared with spawning the connection.
///
/// Once the connection has finished it is not polled again; `fut` then resolves on its own
/// (with the answer hyper already delivered, or with an error).
async fn drive<F: Future>(mut conn: Pin<&mut Conn>, conn_done: &mut bool, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if !*conn_done && conn.as_mut().poll(cx).is_ready() {
            *conn_done = true;
            return fut.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// Runs `fut` until it is done, or `None` once REQUEST_TIMEOUT has passed since `started`.
///
/// A timer per request would cost a timer-wheel insert and removal each time; instead the
/// connection's one `watchdog` stays armed and, when it fires, is re-armed to the current
/// request's deadline unless that has passed: about one timer operation per timeout period.
async fn within<F: Future>(
    mut watchdog: Pin<&mut tokio::time::Sleep>,
    started: Instant,
    fut: F,
) -> Option<F::Output> {
    let deadline = started + REQUEST_TIMEOUT;
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while watchdog.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            watchdog.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Reads a `Retry-After` given in seconds; the HTTP-date form falls back to the default.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let seconds = value.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};

    /// Reads the report ids out of a single or batch body, as the server would.
    fn ids_in(body: &[u8]) -> Vec<Uuid> {
        let value: serde_json::Value = serde_json::from_slice(body).expect("body is JSON");
        let reports = match value.get("reports") {
            Some(list) => list.as_array().expect("reports is an array").clone(),
            None => vec![value],
        };
        reports
            .iter()
            .map(|r| {
                r["id"]
                    .as_str()
                    .expect("id is a string")
                    .parse()
                    .expect("id is a UUID")
            })
            .collect()
    }

    fn created() -> Response {
        (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"counted":true}"#,
        )
            .into_response()
    }

    /// Serves `router` on an ephemeral loopback port; the task ends with the test runtime.
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    fn options(url: String) -> LoadgenOptions {
        LoadgenOptions {
            url,
            connections: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            distinct_reporters: 7,
            ..LoadgenOptions::default()
        }
    }

    fn set(ids: &[Uuid]) -> HashSet<Uuid> {
        ids.iter().copied().collect()
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut low = Latencies::new();
        let mut high = Latencies::new();
        for ms in 1..=500 {
            low.record(Duration::from_millis(ms));
        }
        for ms in 501..=1000 {
            high.record(Duration::from_millis(ms));
        }
        low.merge(&high);
        let close = |got: Duration, want_ms: u64| {
            let want = Duration::from_millis(want_ms).as_secs_f64();
            let error = (got.as_secs_f64() - want).abs() / want;
            assert!(error < 0.002, "got {got:?}, want about {want_ms} ms");
        };
        close(low.quantile(0.50), 500);
        close(low.quantile(0.90), 900);
        close(low.quantile(0.99), 990);
        close(low.max(), 1000);
        assert_eq!(low.0.len(), 1000);

        let empty = Latencies::new();
        assert_eq!(empty.quantile(0.99), Duration::ZERO);
        assert_eq!(empty.max(), Duration::ZERO);

        // Sub-microsecond and overlong latencies are clamped, not dropped.
        let mut edges = Latencies::new();
        edges.record(Duration::from_nanos(10));
        edges.record(Duration::from_secs(3600));
        assert_eq!(edges.0.len(), 2);
        assert!(edges.max() >= Duration::from_secs(59));
    }

    #[test]
    fn summary_rate_and_window() {
        let start = Instant::now();
        let mut a = ConnStats::new();
        a.sent = 10;
        a.measured_acknowledged = 300;
        a.by_status.insert(201, 10);
        a.last_measured_answer = Some(start + Duration::from_millis(1500));
        let mut b = ConnStats::new();
        b.sent = 5;
        b.measured_acknowledged = 100;
        b.by_status.insert(201, 3);
        b.by_status.insert(503, 2);
        b.last_measured_answer = Some(start + Duration::from_millis(2000));
        a.merge(b);
        let summary = a.into_summary(start, Duration::from_secs(1));
        assert_eq!(summary.sent, 15);
        assert_eq!(summary.by_status, BTreeMap::from([(201, 13), (503, 2)]));
        assert_eq!(summary.elapsed, Duration::from_secs(2));
        assert!((summary.acknowledged_per_second - 200.0).abs() < 1e-9);
        assert!(summary.table().contains("status 503"));
    }

    #[tokio::test]
    async fn bodies_are_valid_json_with_fresh_ids() {
        let mut opts = options("http://127.0.0.1:9".into());
        opts.places = vec![
            ("PK".into(), Some("La\"ho\\re\n".into())),
            ("US".into(), None),
        ];
        opts.batch = 3;
        let plan = Plan::new(&opts).await.expect("plan");
        let mut rng = Rng::from_os();
        let mut buf = BytesMut::new();
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            plan.write_body(&mut rng, &mut buf, &mut ids);
            let body = buf.split().freeze();
            assert_eq!(ids_in(&body), ids);
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            for report in value["reports"].as_array().expect("batch") {
                assert!(opts.services.iter().any(|s| report["service"] == **s));
                assert!(PROBLEMS.iter().any(|p| report["problem"] == **p));
                if report["country"] == "PK" {
                    assert_eq!(report["city"], "La\"ho\\re\n");
                } else {
                    assert!(report.get("city").is_none());
                }
            }
            for id in &ids {
                assert_eq!(id.get_version_num(), 7);
                assert!(seen.insert(*id), "duplicate id {id}");
            }
        }
        assert_eq!(plan.path, "/api/v1/reports");
    }

    #[tokio::test]
    async fn even_requests_acknowledged_odd_rejected() {
        #[derive(Default)]
        struct Seen {
            count: AtomicU64,
            created: Mutex<Vec<Uuid>>,
            rejected: Mutex<Vec<Uuid>>,
            agents: Mutex<HashSet<String>>,
        }
        let seen = Arc::new(Seen::default());
        let state = Arc::clone(&seen);
        let router = axum::Router::new().route(
            "/api/v1/reports",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                async move {
                    let agent = headers[header::USER_AGENT].to_str().expect("ASCII");
                    state.agents.lock().expect("lock").insert(agent.to_owned());
                    let ids = ids_in(&body);
                    if state.count.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                        state.created.lock().expect("lock").extend(ids);
                        created()
                    } else {
                        state.rejected.lock().expect("lock").extend(ids);
                        (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            [(header::CONTENT_TYPE, "application/problem+json")],
                            r#"{"title":"unknown service"}"#,
                        )
                            .into_response()
                    }
                }
            }),
        );
        let summary = run(options(serve(router).await)).await.expect("run");

        let requests = seen.count.load(Ordering::SeqCst);
        assert!(requests > 10, "only {requests} requests");
        assert_eq!(summary.sent, requests);
        assert_eq!(summary.transport_errors, 0);
        assert_eq!(
            summary.by_status,
            BTreeMap::from([(201, requests.div_ceil(2)), (422, requests / 2)])
        );
        assert_eq!(summary.acknowledged_ids.len() as u64, requests.div_ceil(2));
        assert_eq!(summary.rejected_ids.len() as u64, requests / 2);
        assert_eq!(
            set(&summary.acknowledged_ids),
            set(&seen.created.lock().expect("lock"))
        );
        assert_eq!(
            set(&summary.rejected_ids),
            set(&seen.rejected.lock().expect("lock"))
        );
        assert!(summary.unresolved_ids.is_empty());
        assert!(summary.acknowledged_per_second > 0.0);
        assert!(summary.latency_p50 <= summary.latency_p99);
        assert!(summary.latency_p99 <= summary.latency_max);
        assert!(summary.elapsed >= Duration::from_millis(300));
        assert!(seen.agents.lock().expect("lock").len() <= 7);
    }

    #[tokio::test]
    async fn unavailable_answers_are_retried_with_the_same_ids() {
        // Every third new id is stored but answered 503, so only the retry (a 200 replay)
        // tells the loadgen it was stored; every fifth request is a 429 that stores nothing.
        #[derive(Default)]
        struct Store {
            count: AtomicU64,
            stored: Mutex<HashSet<Uuid>>,
        }
        let store = Arc::new(Store::default());
        let state = Arc::clone(&store);
        let router = axum::Router::new().route(
            "/api/v1/reports",
            axum::routing::post(move |body: Bytes| {
                let state = Arc::clone(&state);
                async move {
                    let n = state.count.fetch_add(1, Ordering::SeqCst);
                    if n % 5 == 4 {
                        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")])
                            .into_response();
                    }
                    let id = ids_in(&body)[0];
                    let fresh = state.stored.lock().expect("lock").insert(id);
                    if !fresh {
                        (StatusCode::OK, r#"{"counted":false}"#).into_response()
                    } else if n % 3 == 0 {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "0")],
                        )
                            .into_response()
                    } else {
                        created()
                    }
                }
            }),
        );
        let summary = run(options(serve(router).await)).await.expect("run");

        let stored = store.stored.lock().expect("lock").clone();
        let acknowledged = set(&summary.acknowledged_ids);
        assert_eq!(acknowledged.len(), summary.acknowledged_ids.len());
        assert!(acknowledged.is_subset(&stored));
        // Whatever was stored but not acknowledged is still awaiting its retry.
        let unresolved = set(&summary.unresolved_ids);
        assert!(stored
            .difference(&acknowledged)
            .all(|id| unresolved.contains(id)));
        assert!(
            unresolved.len() <= 4,
            "one pending request per connection at most"
        );
        assert!(summary.rejected_ids.is_empty());
        for status in [200, 201, 429, 503] {
            assert!(summary.by_status.get(&status).copied().unwrap_or(0) > 0);
        }
        assert_eq!(summary.sent, store.count.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn batches_count_reports_not_requests() {
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        let router = axum::Router::new().route(
            "/api/v1/reports",
            axum::routing::post(move |body: Bytes| {
                let counter = Arc::clone(&counter);
                async move {
                    assert_eq!(ids_in(&body).len(), 5);
                    counter.fetch_add(1, Ordering::SeqCst);
                    created()
                }
            }),
        );
        let mut opts = options(serve(router).await);
        opts.batch = 5;
        opts.warmup = Duration::ZERO;
        let summary = run(opts).await.expect("run");
        let requests = count.load(Ordering::SeqCst);
        assert_eq!(summary.sent, requests);
        assert_eq!(summary.acknowledged_ids.len() as u64, requests * 5);
        assert_eq!(set(&summary.acknowledged_ids).len() as u64, requests * 5);
        // With no warm-up every acknowledged report is in the rate.
        let rate = requests as f64 * 5.0 / summary.elapsed.as_secs_f64();
        assert!((summary.acknowledged_per_second - rate).abs() < 1e-6 * rate);
    }

    #[tokio::test]
    async fn broken_connections_are_counted_and_leave_ids_unresolved() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        // Accepts and hangs up at once: every request dies without an answer.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let mut opts = options(format!("http://{addr}"));
        opts.connections = 2;
        opts.warmup = Duration::ZERO;
        opts.duration = Duration::from_millis(100);
        let summary = run(opts).await.expect("run");
        assert!(summary.transport_errors > 0);
        assert!(summary.by_status.is_empty());
        assert!(summary.acknowledged_ids.is_empty());
        // Each connection ends with its one request still awaiting a retry.
        assert!((1..=2).contains(&summary.unresolved_ids.len()));
        assert_eq!(summary.acknowledged_per_second, 0.0);
    }

    #[tokio::test]
    async fn a_silent_server_cannot_stall_the_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        // Accepts and holds connections open without ever answering.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut opts = options(format!("http://{addr}"));
        opts.connections = 2;
        opts.warmup = Duration::ZERO;
        opts.duration = Duration::from_millis(100);
        let started = std::time::Instant::now();
        let summary = run(opts).await.expect("run");
        assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2));
        assert_eq!(summary.sent, 2);
        assert_eq!(summary.transport_errors, 2);
        assert_eq!(summary.unresolved_ids.len(), 2);
        assert_eq!(summary.latency_max, Duration::ZERO);
    }

    #[tokio::test]
    async fn bad_options_and_unreachable_servers_are_errors() {
        for url in [
            "ftp://127.0.0.1:21",
            "127.0.0.1:8080",
            "http://",
            "not a url",
        ] {
            let err = run(options(url.into())).await.expect_err(url);
            assert!(
                matches!(err, LoadgenError::InvalidUrl { .. }),
                "{url}: {err}"
            );
        }
        let mut opts = options("http://127.0.0.1:8080".into());
        opts.connections = 0;
        assert!(matches!(
            run(opts).await,
            Err(LoadgenError::InvalidOptions(_))
        ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let err = run(options(format!("http://{addr}")))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, LoadgenError::Connect { .. }), "{err}");
    }
}
