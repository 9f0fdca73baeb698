//! Day partitions of `reports` and `rollups_minute` (migration 0012): made before a batch
//! needs them, ahead for live days by upkeep, and dropped past retention without stopping ingest.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::*;
use crate::domain::buckets::start_of_day;
use crate::domain::retention::Cutoffs;
use crate::store::Expired;

/// The partitioned tables, each with a partition per UTC day.
const PARTITIONED: [&str; 2] = ["reports", "rollups_minute"];

/// The advisory lock upkeep holds while it applies retention ("retentio"), so one replica at
/// a time does; the detector's lock is another one.
const RETENTION_LOCK: i64 = 0x7265_7465_6e74_696f;

/// Rows deleted per statement when retention deletes rather than drops (coarse counts, the
/// ids of dropped days), so no statement holds many row locks or runs long beside ingest.
const DELETE_BATCH: u64 = 10_000;

/// The days this process knows have both partitions: an insert into them needs no check.
#[derive(Debug, Default)]
pub(super) struct KnownDays(Mutex<BTreeSet<NaiveDate>>);

impl KnownDays {
    fn missing(&self, days: &BTreeSet<NaiveDate>) -> Vec<NaiveDate> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        days.difference(&known).copied().collect()
    }

    fn add(&self, days: &[NaiveDate]) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(days.iter().copied());
    }

    /// Forgets every day (another replica may have dropped some): the next batch checks again.
    pub(super) fn forget(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The UTC days a batch's rows fall on (its dedup windows and its minutes share them).
pub(super) fn days_of(reports: &[NewReport]) -> BTreeSet<NaiveDate> {
    reports
        .iter()
        .map(|r| r.dedup_window_start.date_naive())
        .collect()
}

/// Whether a failed statement met a day with no partition (dropped by another replica's
/// retention since this process last looked).
pub(super) fn is_missing_partition(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of relation"))
}

/// Makes the partitions of `days` this process does not know of; answers how many it created.
pub(super) async fn ensure(
    pool: &PgPool,
    known: &KnownDays,
    days: &BTreeSet<NaiveDate>,
) -> Result<u32, StoreError> {
    let missing = known.missing(days);
    if missing.is_empty() {
        return Ok(0);
    }
    let created: i64 = sqlx::query_scalar(
        "select count(*) filter (where ensure_day_partition(t, d))
         from unnest($1::date[]) d cross join unnest($2::text[]) t",
    )
    .bind(&missing)
    .bind(&PARTITIONED[..])
    .fetch_one(pool)
    .await?;
    known.add(&missing);
    Ok(u32::try_from(created).unwrap_or(0))
}

/// Drops the partitions of `table` before `first_kept`, each detached concurrently first so
/// ingest (which only ever writes today's) never waits on the drop's lock.
async fn drop_days_before(
    pool: &PgPool,
    table: &str,
    first_kept: NaiveDate,
) -> Result<u32, StoreError> {
    // Detached-but-pending ones first (a detach cut short), then the attached expired ones.
    let expired: Vec<(String, bool)> = sqlx::query_as(
        "select c.relname::text, i.inhdetachpending from pg_inherits i
         join pg_class c on c.oid = i.inhrelid
         where i.inhparent = $1::regclass and c.relname::text < $1 || '_' || to_char($2::date, 'YYYYMMDD')
         order by c.relname",
    )
    .bind(table)
    .bind(first_kept)
    .fetch_all(pool)
    .await?;
    let mut dropped = 0;
    for (name, pending) in expired {
        let finish = if pending {
            " finalize"
        } else {
            " concurrently"
        };
        sqlx::raw_sql(&format!(
            "alter table {table} detach partition \"{name}\"{finish}"
        ))
        .execute(pool)
        .await?;
        sqlx::raw_sql(&format!("drop table \"{name}\""))
            .execute(pool)
            .await?;
        dropped += 1;
    }
    Ok(dropped)
}

/// [`crate::store::ReportStore::apply_retention`] on Postgres, under [`RETENTION_LOCK`].
pub(super) async fn apply_retention(
    pool: &PgPool,
    known: &KnownDays,
    cutoffs: &Cutoffs,
) -> Result<Option<Expired>, StoreError> {
    // A session lock on a connection of its own: the drops cannot run in a transaction.
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(RETENTION_LOCK)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = expire(pool, cutoffs).await;
    let unlocked = sqlx::query("select pg_advisory_unlock($1)")
        .bind(RETENTION_LOCK)
        .execute(&mut *lock)
        .await;
    if unlocked.is_err() {
        // The session's lock would outlive the call: never hand this connection out again.
        lock.close().await.ok();
    }
    known.forget();
    result.map(Some)
}

/// Postgres' quarter tier for retention, as [`sql::QUARTER_ROWS`] is SQLite's: a row per series
/// per day (migration 0013), so a cutoff at the start of a day deletes whole days.
const QUARTER_DAY_ROWS: (&str, &str, &str) =
    ("rollups_quarter_day", "service, country, city, day", "day");

async fn expire(pool: &PgPool, cutoffs: &Cutoffs) -> Result<Expired, StoreError> {
    let mut expired = Expired::default();
    if let Some(first_kept) = cutoffs.reports_from {
        expired.days_dropped += drop_days_before(pool, "reports", first_kept).await?;
        // The ids of the dropped days: a retry of one is now a new report.
        let ids = ("report_ids", "id", "dedup_window");
        expired.rows_deleted +=
            steps::delete_before(pool, ids, start_of_day(first_kept), DELETE_BATCH).await?;
    }
    if let Some(first_kept) = cutoffs.minute_rollups_from {
        expired.days_dropped += drop_days_before(pool, "rollups_minute", first_kept).await?;
    }
    if let Some(first_kept) = cutoffs.coarse_rollups_from {
        for tier in [QUARTER_DAY_ROWS, sql::HOUR_ROWS] {
            expired.rows_deleted +=
                steps::delete_before(pool, tier, start_of_day(first_kept), DELETE_BATCH).await?;
        }
    }
    Ok(expired)
}
