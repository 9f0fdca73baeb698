//! The store: one narrow trait over Postgres (production) and SQLite (embedded default), spoken in domain terms.

#[macro_use]
mod shared_reads;
mod expectations;
mod postgres;
mod read_sql;
mod roles;
mod rows;
mod sql;
mod sqlite;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::geo::CountryCode;
use crate::domain::incidents::Incident;

pub use postgres::PostgresStore;
pub use roles::{
    CatalogStore, CoordinationStore, DetectionStore, OutboxStore, ReadStore, ReportStore, Store,
};
pub use sqlite::SqliteStore;
// The counting rules' types are the domain's; the store is spoken in them.
pub use crate::domain::buckets::{floor_to, minute_of, TimeRange};
pub use crate::domain::counting::{Fingerprint, ImportHints, NetworkQuota, NewReport, Outcome};
pub use crate::domain::incidents::IncidentQuery;
pub use crate::domain::series::SeriesKey;

/// One service of the stored catalog.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ServiceRecord {
    pub slug: String,
    pub name: String,
    /// A disabled service takes no reports and is left out of the public catalog; its data stays.
    pub enabled: bool,
}

/// What an admin did to an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentAction<'a> {
    /// Set (or replace) the incident's note.
    Annotate { note: &'a str },
    /// Resolve it now: the detector no longer changes it.
    Resolve { by: &'a str },
}

/// A stored report, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReport {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub service: String,
    pub country: String,
    pub city: Option<String>,
    pub problem: String,
    pub counted: bool,
}

/// One per-minute count; `city` is empty for the country total.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct Rollup {
    pub minute: DateTime<Utc>,
    pub country: String,
    pub city: String,
    pub count: i64,
}

/// Every service's per-minute counts over a range, as the detector reads them: each place
/// named once in `places`, its counts pointing at it by index, in no particular order. A place
/// may have two counts for one minute (a late report's count still live beside the settled
/// row): the detector adds them up. (One struct of names per row was most of what reading a
/// replay cost: three strings for every count.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinuteRollups {
    pub places: Vec<Place>,
    pub counts: Vec<PlaceMinute>,
}

impl MinuteRollups {
    /// The counts in minute, service, country, city order, a place's counts of one minute
    /// summed.
    pub fn in_order(&self) -> Vec<MinuteCount<'_>> {
        let mut rows: Vec<MinuteCount<'_>> = self
            .counts
            .iter()
            .map(|c| {
                let place = &self.places[c.place as usize];
                MinuteCount {
                    minute: DateTime::from_timestamp(c.minute, 0).unwrap_or_default(),
                    service: &place.service,
                    country: &place.country,
                    city: &place.city,
                    count: c.count,
                }
            })
            .collect();
        fn key<'a>(r: &MinuteCount<'a>) -> (DateTime<Utc>, &'a str, &'a str, &'a str) {
            (r.minute, r.service, r.country, r.city)
        }
        rows.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        rows::sum_adjacent(rows, |a, b| key(a) == key(b), |r| &mut r.count)
    }
}

/// One place's count of one minute, as [`MinuteRollups::in_order`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinuteCount<'a> {
    pub minute: DateTime<Utc>,
    pub service: &'a str,
    pub country: &'a str,
    pub city: &'a str,
    pub count: i64,
}

/// A place counts are kept for: `city` is empty for the country total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub service: String,
    pub country: String,
    pub city: String,
}

/// One place's count for one minute: the minute's start in unix seconds, the place's index in
/// [`MinuteRollups::places`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaceMinute {
    pub minute: i64,
    pub place: u32,
    pub count: i64,
}

/// The detector's expected count of one series for one quarter hour; `country` and `city`
/// are empty for the service's global series, `city` for a country's.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    pub service: String,
    pub country: String,
    pub city: String,
    pub quarter: DateTime<Utc>,
    pub expected: f64,
}

/// Counted reports of one problem kind.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProblemCount {
    pub problem: String,
    pub count: i64,
}

/// Counted reports of one region: a country's total (`city` empty) or a city of it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RegionCount {
    pub country: String,
    pub city: String,
    pub count: i64,
}

/// The detector's expected count of one series for one quarter hour.
#[derive(Clone, Copy, Debug, PartialEq, sqlx::FromRow)]
pub struct QuarterExpectation {
    pub quarter: DateTime<Utc>,
    pub expected: f64,
}

/// The expected count of one region (`city` empty for a country) for one quarter hour.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RegionExpectation {
    pub country: String,
    pub city: String,
    pub quarter: DateTime<Utc>,
    pub expected: f64,
}

/// What a regions answer reads ([`ReadStore::region_counts_expected`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionsRows {
    /// The regions' counts.
    pub counts: Vec<RegionCount>,
    /// The quarter-hour expectations of the regions counted.
    pub expected: Vec<RegionExpectation>,
    /// The open incidents of the level read (city incidents for cities, country incidents
    /// for countries), as (country, city or "", id), newest first.
    pub open: Vec<(String, String, uuid::Uuid)>,
}

/// One bucket of a counts series.
#[derive(Clone, Debug, PartialEq)]
pub struct CountBucket {
    pub start: DateTime<Utc>,
    pub count: i64,
}

/// Where the detector stands: the last minute it processed and a snapshot of its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub watermark: DateTime<Utc>,
    /// The snapshot (serialized detector state) and the minute it was taken after; at or
    /// before the watermark.
    pub state: Option<(DateTime<Utc>, String)>,
}

/// One transaction of detector output.
#[derive(Clone, Debug, Default)]
pub struct DetectionWrite<'a> {
    /// Delete the incidents that started in `[from, to)` first (a re-detection of that range).
    pub replace: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Incidents to insert or overwrite (by id).
    pub incidents: &'a [Incident],
    /// The new watermark, if it moves.
    pub watermark: Option<DateTime<Utc>>,
    /// A new snapshot and the minute it was taken after.
    pub state: Option<(DateTime<Utc>, &'a str)>,
    /// Quarter-hour expectations to insert or overwrite.
    pub expectations: &'a [Expectation],
    /// Delete the expectations of quarters before this time (retention).
    pub prune_expectations_before: Option<DateTime<Utc>>,
    /// Webhook deliveries announcing these incident changes, enqueued in the same
    /// transaction so a crash can neither lose an event nor announce one that was not stored;
    /// a delivery already stored (same event and endpoint) is left as it is.
    pub deliveries: &'a [NewDelivery],
}

/// A webhook delivery to enqueue: one incident event for one configured endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    pub event_id: Uuid,
    /// The configured endpoint's name (never its URL, which may hold a token).
    pub endpoint: String,
    /// `incident.opened` or `incident.resolved`.
    pub event_type: &'static str,
    pub incident_id: Uuid,
    /// The minute the detector changed the incident at.
    pub occurred_at: DateTime<Utc>,
    /// The JSON body every attempt sends.
    pub payload: String,
    /// When it was enqueued: its first attempt is due then, and its give-up age counts from then.
    pub created_at: DateTime<Utc>,
}

/// Where a webhook delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Not delivered yet; due again at `next_attempt_at`.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up on (too old, or its endpoint is no longer configured).
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A stored webhook delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub event_id: Uuid,
    pub endpoint: String,
    pub event_type: String,
    pub incident_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub payload: String,
    pub status: DeliveryStatus,
    /// Attempts recorded so far (an attempt cut short by a crash is not counted).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// When a pending delivery is next due (while claimed: when its lease ends).
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed (status code or connection error), if it did.
    pub last_error: Option<String>,
    /// When it was delivered or given up on.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; try again at `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    /// It failed and the delivery is too old to try again.
    Failed { error: String },
}

/// A subscription to the payloads every process publishes with [`CoordinationStore::notify`].
#[async_trait]
pub trait Listener: Send {
    /// The next payload. An error means the connection was lost: the next call reconnects,
    /// and what was published meanwhile is not heard.
    async fn recv(&mut self) -> Result<String, StoreError>;
}

/// The right to run the detector, held until dropped (Postgres: a session advisory lock on a
/// dedicated connection).
#[async_trait]
pub trait Leadership: Send {
    /// Whether the lock is still held (false once its connection is lost).
    async fn still_held(&mut self) -> bool;

    /// Gives the lock up now, so a standby can take over at once (dropping gives it up too,
    /// once the connection closes).
    async fn release(self: Box<Self>);
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A query failed for another reason.
    #[error("store query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back (e.g. a JSON column that does not parse).
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
    /// A write would overwrite what it must not (e.g. a recomputed expectation for a quarter
    /// that was not cleared first).
    #[error("store write refused: {0}")]
    Conflict(String),
    /// The database URL is not one this service understands.
    #[error("bad database url: {0}")]
    Url(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| is_unavailability(&code)) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            other => StoreError::Query(other),
        }
    }
}

/// SQLSTATEs that mean "the database cannot serve now" rather than "this query is wrong":
/// Postgres classes 08 (connection), 53 (resources), 57 (shutdown, cancel), 3D000 (database
/// gone), and SQLite's BUSY (5) and LOCKED (6).
fn is_unavailability(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "3D000"
        || code == "5"
        || code == "6"
}

/// Connection settings shared by both backends.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The pool for writes, the detector and coordination (SQLite: one writer whatever this).
    pub max_connections: u32,
    /// The read side's pool of its own (SQLite: its readers).
    pub read_connections: u32,
    pub acquire_timeout: Duration,
}

/// Where a store stands in replication, as [`crate::read::replica`] judges a replica by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replication {
    /// Not replicated (SQLite).
    Alone,
    /// A primary that has written its WAL up to `written` (a byte position).
    Primary { written: u64 },
    /// A standby that has replayed the primary's WAL up to `replayed`, its last transaction
    /// `since_last_replay` seconds ago by its own clock (`None`: none replayed yet).
    Standby {
        replayed: u64,
        since_last_replay: Option<f64>,
    },
}

/// Opens a read replica (Postgres; `database.read_url` is validated as such) for reads only;
/// it connects on first use, so a replica that is down at start only sends the reads to the
/// primary.
pub fn connect_replica(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(PostgresStore::connect_lazy(url, options)?))
}

/// Opens the store a URL names: `sqlite://…` or `postgres://…`.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else {
        Err(StoreError::Url("expected sqlite:// or postgres://".into()))
    }
}

/// What one application of retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Day partitions dropped (Postgres; SQLite has none).
    pub days_dropped: u32,
    /// Rows deleted a batch at a time: coarse counts and the dropped days' ids (Postgres),
    /// everything (SQLite).
    pub rows_deleted: u64,
}

/// A minute is settled this many minutes after its end: reports stamped in it have long
/// committed by then (a late one is still added where the minute went).
const SETTLE_AFTER_MINUTES: i64 = 2;

/// Minutes before this one are settled at `now` (see [`ReportStore::settle_rollups`]).
pub fn settled_before(now: DateTime<Utc>) -> DateTime<Utc> {
    minute_of(now) - chrono::TimeDelta::minutes(SETTLE_AFTER_MINUTES)
}

/// The countries a regions query covers: the one asked for, or every country code.
fn region_countries(country: Option<&str>) -> Vec<String> {
    match country {
        Some(country) => vec![country.to_owned()],
        None => CountryCode::all().map(|c| c.as_str().to_owned()).collect(),
    }
}

/// Anti-fabrication as both backends apply it: the network groups of the candidates that
/// counted, and then (given each group's stored total after adding it) the ids over quota.
mod quotas {
    use std::collections::HashSet;

    use uuid::Uuid;

    use crate::domain::counting::{network_groups, over_quota, NetworkGroup, NewReport};

    /// The network groups of the `candidates` that `counted`.
    pub(super) fn counted_groups<'a>(
        candidates: &[&'a NewReport],
        counted: &HashSet<Uuid>,
    ) -> Vec<NetworkGroup<'a>> {
        network_groups(
            candidates
                .iter()
                .copied()
                .filter(|r| counted.contains(&r.id)),
        )
    }

    /// The ids beyond their group's quota, given each group's total (unknown: all over).
    pub(super) fn over_quotas(
        groups: &[NetworkGroup<'_>],
        total: impl Fn(&NetworkGroup<'_>) -> Option<i64>,
    ) -> Vec<Uuid> {
        groups
            .iter()
            .flat_map(|group| {
                over_quota(group, total(group).unwrap_or(i64::MAX))
                    .iter()
                    .copied()
            })
            .collect()
    }
}
