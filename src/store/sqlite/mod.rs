//! The SQLite store: the zero-setup embedded default; one writer connection, batches as chunked multi-row inserts.

mod catalog;
mod coordination;
mod detection;
mod outbox;
mod reads;
mod reports;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::rows::{self, DeliveryRow, IncidentRow};
use super::sql::{self, DELIVERY_COLUMNS};
use super::steps;
use super::{
    quotas, Attempt, Checkpoint, ConnectOptions, CountBucket, Delivery, DetectionWrite,
    Expectation, IncidentAction, IncidentQuery, Leadership, Listener, MinuteRollups, NewReport,
    Outcome, ProblemCount, QuarterExpectation, RegionCount, RegionExpectation, Rollup, SeriesKey,
    ServiceRecord, StoreError, StoredReport, TimeRange,
};
use crate::domain::counting::{dedup_candidates, outcomes, rollup_increments};
use crate::domain::incidents::{CityCount, Incident};

/// Rows per multi-row statement: 9 columns × 1,000 rows stays far under SQLite's 32,766 bind limit.
const ROWS_PER_STATEMENT: usize = 1000;

/// Reports, rollups and secrets in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// SQLite has one writer at a time; one connection serialises our writes instead of
    /// letting them fail with SQLITE_BUSY.
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file a `sqlite://PATH` URL names.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<SqliteStore, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we acknowledge it, as with Postgres.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = Path::new(connect.get_filename()).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Url(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// SQLite serves one process, so that process always leads the detector.
struct SoleProcess;

#[async_trait]
impl Leadership for SoleProcess {
    async fn still_held(&mut self) -> bool {
        true
    }

    async fn release(self: Box<Self>) {}
}

/// Reads the stored `counted` of each id that exists.
async fn stored_outcomes(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, StoreError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::<Sqlite>::new("select id, counted from reports where id in (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        let rows: Vec<(Uuid, bool)> = query.build_query_as().fetch_all(&mut **tx).await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Inserts reports with `counted` set as given, skipping any that conflict; returns the ids inserted.
async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[&NewReport],
    counted: bool,
) -> Result<HashSet<Uuid>, StoreError> {
    let mut inserted = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted) ",
        );
        query.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(millis(r.received_at))
                .push_bind(r.service.as_str())
                .push_bind(r.country.as_str())
                .push_bind(r.city)
                .push_bind(r.problem.as_str())
                .push_bind(&r.fingerprint.0[..])
                .push_bind(r.dedup_window_start.timestamp())
                .push_bind(counted);
        });
        query.push(" on conflict do nothing returning id");
        let ids: Vec<Uuid> = query.build_query_scalar().fetch_all(&mut **tx).await?;
        inserted.extend(ids);
    }
    Ok(inserted)
}

/// Anti-fabrication, one step of `insert_reports`: adds the newly counted reports that carry a
/// network quota to their network's (service, minute) count, un-counts those beyond the quota,
/// and returns their ids.
async fn cap_networks(
    tx: &mut Transaction<'_, Sqlite>,
    candidates: &[&NewReport],
    counted: &HashSet<Uuid>,
) -> Result<HashSet<Uuid>, StoreError> {
    let groups = quotas::counted_groups(candidates, counted);
    let mut totals: HashMap<(String, Vec<u8>, i64), i64> = HashMap::with_capacity(groups.len());
    for chunk in groups.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "insert into network_minute_counts (service, network, minute, count) ",
        );
        query.push_values(chunk, |mut row, group| {
            row.push_bind(group.service)
                .push_bind(&group.network.0[..])
                .push_bind(group.minute.timestamp())
                .push_bind(group.ids.len() as i64);
        });
        query.push(
            " on conflict (service, network, minute) do update \
             set count = network_minute_counts.count + excluded.count \
             returning service, network, minute, count",
        );
        let rows: Vec<(String, Vec<u8>, i64, i64)> =
            query.build_query_as().fetch_all(&mut **tx).await?;
        totals.extend(
            rows.into_iter()
                .map(|(service, network, minute, count)| ((service, network, minute), count)),
        );
    }
    let over = quotas::over_quotas(&groups, |group| {
        let key = (
            group.service.to_owned(),
            group.network.0.to_vec(),
            group.minute.timestamp(),
        );
        totals.get(&key).copied()
    });
    for chunk in over.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new("update reports set counted = 0 where id in (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        query.build().execute(&mut **tx).await?;
    }
    Ok(over.into_iter().collect())
}
