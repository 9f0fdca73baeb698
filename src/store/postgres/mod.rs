//! The Postgres store: production backend; each batch of reports is one `UNNEST` statement.

mod catalog;
mod connect;
mod coordination;
mod detection;
mod import;
mod outbox;
mod partitions;
mod reads;
mod reports;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::rows::{self, DeliveryRow, IncidentRow};
use super::sql::{self, DELIVERY_COLUMNS};
use super::steps;
use super::{
    minute_of, quotas, settled_before, Attempt, Checkpoint, ConnectOptions, CountBucket, Delivery,
    DetectionWrite, Expectation, ImportHints, IncidentAction, IncidentQuery, Leadership, Listener,
    MinuteRollups, NewReport, Outcome, ProblemCount, QuarterExpectation, RegionCount,
    RegionExpectation, RegionsRows, Replication, Rollup, SeriesKey, ServiceRecord, StoreError,
    StoredReport, TimeRange,
};
use crate::domain::counting::{dedup_candidates, outcomes, rollup_increments};
use crate::domain::incidents::{CityCount, Incident, Scope};

/// The NOTIFY channel live events travel on.
const EVENTS_CHANNEL: &str = "outagewatch_events";

/// The advisory lock key the detector leader holds ("outagewa" as an integer).
const DETECTOR_LOCK: i64 = 0x6f75_7461_6765_7761;

/// Reports, rollups and secrets in Postgres.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    /// Writes, the detector and coordination.
    pool: PgPool,
    /// The read side ([`crate::store::ReadStore`]), connected on first use.
    reads: PgPool,
    /// Days whose partitions this process has seen made.
    days: std::sync::Arc<partitions::KnownDays>,
}

/// Microseconds from the Unix epoch to Postgres's, 2000-01-01T00:00:00Z: a binary COPY's
/// times count from it (import writes them, the detector's reads parse them).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The first bytes of a binary COPY's data.
const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Moves the counts of minutes before `before` from `rollups_live`, where ingest adds to
/// them, to `rollups_minute`, where the reads' covering indexes are; answers the rows moved.
/// Rows are locked in key order, as the writers lock them, so the two never deadlock; a row a
/// writer holds is moved once its batch has committed. A late count for a minute already
/// moved is added to its row there.
async fn settle_rollups(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with due as (
             select service, country, city, minute from rollups_live where minute < $1
             order by service, country, city, minute
             for update
         ),
         moved as (
             delete from rollups_live l using due d
             where l.service = d.service and l.country = d.country and l.city = d.city
               and l.minute = d.minute
             returning l.service, l.country, l.city, l.minute, l.count
         ),
         settled as (
             insert into rollups_minute (service, country, city, minute, count)
             select service, country, city, minute, count from moved
             order by service, country, city, minute
             on conflict (service, country, city, minute)
             do update set count = rollups_minute.count + excluded.count
         ){}
         select count(*) from moved",
            add_to_tiers("moved")
        )
    });
    let moved: i64 = sqlx::query_scalar(&STATEMENT)
        .bind(before)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(moved).unwrap_or(0))
}

/// Data-modifying CTEs (each after a comma) that add the minute counts of `source` (service,
/// country, city, minute, count) to the quarter and hour tiers, in key order as every writer
/// locks rows. Whatever adds to `rollups_minute` runs these in the same statement, so each
/// tier always holds the sum of the settled minutes it covers. The quarters are added to
/// their day's row (migration 0013): each series' day gets one row of 96 counts to add, since
/// a statement may not update a row twice.
fn add_to_tiers(source: &str) -> String {
    format!(
        ",
         rollups_quarter_day_added as (
             insert into rollups_quarter_day (service, country, city, day, counts)
             select service, country, city, date_bin('1 day', minute, timestamptz 'epoch'),
                    quarters_of(array_agg((date_part('epoch', minute)::int8 % 86400 / 900)::int4),
                                array_agg(count::int8))
             from {source}
             group by 1, 2, 3, 4
             order by 1, 2, 3, 4
             on conflict (service, country, city, day)
             do update set counts = quarters_added(rollups_quarter_day.counts, excluded.counts)
         ),
         rollups_hour_added as (
             insert into rollups_hour (service, country, city, hour, count)
             select service, country, city, date_bin('1 hour', minute, timestamptz 'epoch'), sum(count)
             from {source}
             group by 1, 2, 3, 4
             order by 1, 2, 3, 4
             on conflict (service, country, city, hour)
             do update set count = rollups_hour.count + excluded.count
         )"
    )
}

/// Reads the stored `counted` of each id that exists.
async fn stored_outcomes<'e>(
    executor: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("select id, counted from report_ids where id = any($1)")
            .bind(ids)
            .fetch_all(executor)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Whether a batch failed because another transaction, uncommitted when the batch looked,
/// stored one of its ids meanwhile (a client's retry racing its original): the batch stored
/// nothing, and run again it finds the id and answers it as a replay.
pub(super) fn is_id_claimed_meanwhile(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("report_ids_pkey"))
}

/// The ids of a batch that neither insert took: retries of stored reports.
fn replays(reports: &[NewReport], counted: &HashSet<Uuid>, uncounted: &HashSet<Uuid>) -> Vec<Uuid> {
    reports
        .iter()
        .map(|r| r.id)
        .filter(|id| !counted.contains(id) && !uncounted.contains(id))
        .collect()
}

/// Splits what [`insert_batch`] returned into the counted and the uncounted ids.
fn split_stored(stored: Vec<(Uuid, bool)>) -> (HashSet<Uuid>, HashSet<Uuid>) {
    let mut counted = HashSet::with_capacity(stored.len());
    let mut uncounted = HashSet::new();
    for (id, was_counted) in stored {
        if was_counted {
            counted.insert(id);
        } else {
            uncounted.insert(id);
        }
    }
    (counted, uncounted)
}

/// The reports of a batch, as one statement of data-modifying CTEs. Ids already in
/// `report_ids` are replays and insert nothing; of the rest, first the ones that may count
/// (the unique key on (window, fingerprint, service) admits only a reporter's first, and a
/// conflict on it inserts nothing), then every other one uncounted, in input order (the
/// dedup-key order the caller sorted them in); then each id goes into `report_ids` with its
/// outcome. An id another transaction stored after this one looked fails the statement
/// there ([`is_id_claimed_meanwhile`]), so nothing is stored twice. Answers (id, counted)
/// for each row inserted.
const INSERT_BATCH: &str = "with input as (
         select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::uuid[], $8::timestamptz[], $9::timestamptz[], $10::bool[])
             with ordinality
             as t(id, received_at, service, country, city, problem, fingerprint, dedup_window,
                  minute, candidate, position)
     ),
     fresh as (
         select * from input i where not exists (select 1 from report_ids r where r.id = i.id)
     ),
     counted as (
         insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         select id, received_at, service, country, nullif(city, ''), problem, fingerprint, dedup_window, true
         from fresh where candidate
         order by position
         on conflict do nothing
         returning id
     ),
     uncounted as (
         insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         select id, received_at, service, country, nullif(city, ''), problem, fingerprint, dedup_window, false
         from fresh where id not in (select id from counted)
         order by position
         returning id
     ),
     claimed as (
         insert into report_ids (id, dedup_window, counted)
         select id, dedup_window, id in (select id from counted) from fresh
         order by id
     )";

/// [`INSERT_BATCH`] and, in the same statement, the counted reports added to their minute
/// rollups (city row and country total) in `table`, locked in key order so two writers never
/// deadlock; counts of settled minutes go to the coarser tiers too.
fn insert_rollups_cte(table: RollupTable) -> String {
    let name = table.name();
    let tiers = match table {
        RollupTable::Live => String::new(),
        RollupTable::Settled => add_to_tiers("per_minute"),
    };
    format!(
        ",
     places as (
         select i.service, i.country, i.city, i.minute from input i join counted c using (id) where i.city <> ''
         union all
         select i.service, i.country, '', i.minute from input i join counted c using (id)
     ),
     per_minute as (
         select service, country, city, minute, count(*) as count from places
         group by service, country, city, minute
     ),
     rolled as (
         insert into {name} (service, country, city, minute, count)
         select service, country, city, minute, count from per_minute
         order by service, country, city, minute
         on conflict (service, country, city, minute)
         do update set count = {name}.count + excluded.count
     ){tiers}"
    )
}

/// The table a batch's minute counts are added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollupTable {
    /// `rollups_live`: every report of the batch is in a minute not yet settled.
    Live,
    /// `rollups_minute`: the batch holds a minute already settled (an import of history, a
    /// late report), so its counts go where that minute went. A whole batch goes to one
    /// table, so a writer locks rows of one table only and the settler, which locks live
    /// rows and then settled ones, can never wait on it in a cycle.
    Settled,
}

impl RollupTable {
    /// Where the counts of `reports` go at `now`.
    fn for_batch(reports: &[NewReport], now: DateTime<Utc>) -> Self {
        let live_from = settled_before(now);
        if reports.iter().all(|r| r.received_at >= live_from) {
            RollupTable::Live
        } else {
            RollupTable::Settled
        }
    }

    fn name(self) -> &'static str {
        match self {
            RollupTable::Live => "rollups_live",
            RollupTable::Settled => "rollups_minute",
        }
    }

    /// The batch statement ([`insert_batch`]) with this table's rollups, or with none.
    fn batch_statement(table: Option<Self>) -> &'static str {
        /// Built once: without rollups, with `rollups_live`, with `rollups_minute`.
        static STATEMENTS: LazyLock<[String; 3]> = LazyLock::new(|| {
            let with = |rollups: &str| {
                format!(
                    "{INSERT_BATCH}{rollups}
         select id, true from counted
         union all
         select id, false from uncounted"
                )
            };
            [
                with(""),
                with(&insert_rollups_cte(RollupTable::Live)),
                with(&insert_rollups_cte(RollupTable::Settled)),
            ]
        });
        &STATEMENTS[table.map_or(0, |t| 1 + t as usize)]
    }

    /// The upsert of [`add_to_rollups`] into this table (and, for settled minutes, the tiers).
    fn add_statement(self) -> &'static str {
        static STATEMENTS: LazyLock<[String; 2]> = LazyLock::new(|| {
            [RollupTable::Live, RollupTable::Settled].map(|table| {
                let tiers = match table {
                    RollupTable::Live => String::new(),
                    RollupTable::Settled => add_to_tiers("input"),
                };
                let table = table.name();
                format!(
                    "with input as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[])
                 as t(service, country, city, minute, count)
         ),
         rolled as (
             insert into {table} (service, country, city, minute, count)
             select * from input
             on conflict (service, country, city, minute)
             do update set count = {table}.count + excluded.count
         ){tiers}
         select 1"
                )
            })
        });
        &STATEMENTS[self as usize]
    }
}

/// Inserts a batch (in `ordered`, dedup-key order) with [`INSERT_BATCH`], and with its
/// rollups in the given table too; answers (id, counted) for each row inserted.
async fn insert_batch<'e>(
    executor: impl PgExecutor<'e>,
    ordered: &[&NewReport],
    candidates: &HashSet<Uuid>,
    rollups: Option<RollupTable>,
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    Ok(sqlx::query_as(RollupTable::batch_statement(rollups))
        .bind(ordered.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(ordered.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .bind(
            ordered
                .iter()
                .map(|r| r.service.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| r.country.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| r.city.unwrap_or(""))
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| r.problem.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| Uuid::from_bytes(r.fingerprint.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| r.dedup_window_start)
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| minute_of(r.received_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            ordered
                .iter()
                .map(|r| candidates.contains(&r.id))
                .collect::<Vec<_>>(),
        )
        .fetch_all(executor)
        .await?)
}

/// Adds counted reports to their minute rollups: the city row and the country total.
async fn add_to_rollups<'a>(
    tx: &mut Transaction<'_, Postgres>,
    table: RollupTable,
    counted: impl Iterator<Item = &'a NewReport>,
) -> Result<(), StoreError> {
    let increments = rollup_increments(counted);
    if increments.is_empty() {
        return Ok(());
    }
    // One array per column, for UNNEST.
    let (keys, counts): (Vec<_>, Vec<i64>) = increments.into_iter().unzip();
    let ((services, countries), (cities, minutes)): ((Vec<_>, Vec<_>), (Vec<_>, Vec<_>)) = keys
        .into_iter()
        .map(|(service, country, city, minute)| ((service, country), (city, minute)))
        .unzip();
    sqlx::query(table.add_statement())
        .bind(services)
        .bind(countries)
        .bind(cities)
        .bind(minutes)
        .bind(counts)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The dedup keys (window, fingerprint, service) of `reports` as three arrays, for UNNEST.
fn dedup_key_arrays<'a>(
    reports: impl Iterator<Item = &'a NewReport>,
) -> (Vec<DateTime<Utc>>, Vec<Uuid>, Vec<&'a str>) {
    let mut arrays = (Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        arrays.0.push(r.dedup_window_start);
        arrays.1.push(Uuid::from_bytes(r.fingerprint.0));
        arrays.2.push(r.service.as_str());
    }
    arrays
}

/// Anti-fabrication, one step of `insert_reports`: adds the newly counted reports that carry a
/// network quota to their network's (service, minute) count, un-counts those beyond the quota,
/// and returns their ids. The count rows' locks make it hold across replicas.
async fn cap_networks(
    tx: &mut Transaction<'_, Postgres>,
    candidates: &[&NewReport],
    counted: &HashSet<Uuid>,
) -> Result<HashSet<Uuid>, StoreError> {
    let groups = quotas::counted_groups(candidates, counted);
    if groups.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(String, Uuid, DateTime<Utc>, i64)> = sqlx::query_as(
        "insert into network_minute_counts (service, network, minute, count)
         select * from unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::int8[])
         on conflict (service, network, minute)
         do update set count = network_minute_counts.count + excluded.count
         returning service, network, minute, count",
    )
    .bind(groups.iter().map(|g| g.service).collect::<Vec<_>>())
    .bind(
        groups
            .iter()
            .map(|g| Uuid::from_bytes(g.network.0))
            .collect::<Vec<_>>(),
    )
    .bind(groups.iter().map(|g| g.minute).collect::<Vec<_>>())
    .bind(
        groups
            .iter()
            .map(|g| g.ids.len() as i64)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?;
    let totals: HashMap<(String, Uuid, DateTime<Utc>), i64> = rows
        .into_iter()
        .map(|(service, network, minute, count)| ((service, network, minute), count))
        .collect();
    let over = quotas::over_quotas(&groups, |group| {
        let key = (
            group.service.to_owned(),
            Uuid::from_bytes(group.network.0),
            group.minute,
        );
        totals.get(&key).copied()
    });
    if !over.is_empty() {
        // By the dedup key (the partitions index no id): over-quota rows are counted ones.
        let (windows, fingerprints, services) =
            dedup_key_arrays(candidates.iter().copied().filter(|r| over.contains(&r.id)));
        sqlx::query(
            "update reports r set counted = false
             from unnest($1::timestamptz[], $2::uuid[], $3::text[]) as o(dedup_window, fingerprint, service)
             where r.dedup_window = o.dedup_window and r.fingerprint = o.fingerprint
               and r.service = o.service and r.counted",
        )
        .bind(windows)
        .bind(fingerprints)
        .bind(services)
        .execute(&mut **tx)
        .await?;
        sqlx::query("update report_ids set counted = false where id = any($1)")
            .bind(&over)
            .execute(&mut **tx)
            .await?;
    }
    Ok(over.into_iter().collect())
}

/// The detector lock, held by a connection of its own for as long as this value lives.
struct PgLeadership {
    connection: Option<PgConnection>,
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn still_held(&mut self) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        let alive = tokio::time::timeout(std::time::Duration::from_secs(5), connection.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if !alive {
            // The session (and with it the lock) is gone or unusable: never trust it again.
            self.connection = None;
        }
        alive
    }

    async fn release(self: Box<Self>) {
        if let Some(mut connection) = self.connection {
            // Unlock first and wait for the answer: the server ends a closed session's locks
            // only once it has noticed the close, so a standby asking right after could still
            // find the lock taken. Closing then ends the session (and any lock left with it).
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                sqlx::query("select pg_advisory_unlock($1)")
                    .bind(DETECTOR_LOCK)
                    .execute(&mut connection),
            )
            .await;
            let _ = connection.close().await;
        }
    }
}

/// [`DELIVERY_COLUMNS`] of the updated row `d` (the claim's subquery names the same columns).
fn qualified_delivery_columns() -> String {
    DELIVERY_COLUMNS
        .split(", ")
        .map(|column| format!("d.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events channel as [`Store::listen`] answers it.
struct Notifications(PgListener);

#[async_trait]
impl Listener for Notifications {
    async fn recv(&mut self) -> Result<String, StoreError> {
        // PgListener::recv reconnects on the call after a lost connection.
        Ok(self.0.recv().await?.payload().to_owned())
    }
}
