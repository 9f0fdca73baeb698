//! The Postgres store: production backend; each batch of reports is one `UNNEST` statement.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolCopyExt, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::{
    incident_json, minute_of, region_countries, settled_before, Attempt, AttemptColumns,
    Checkpoint, ConnectOptions, CountBucket, Delivery, DeliveryRow, DetectionWrite, Expectation,
    IncidentAction, IncidentQuery, IncidentRow, Leadership, Listener, MinuteCount, NewReport,
    Outcome, Rollup, ServiceRecord, Store, StoreError, StoredReport, DELIVERY_COLUMNS,
    INCIDENT_ADMIN_COLUMNS, INCIDENT_COLUMNS, INCIDENT_UPSERT,
};
use crate::domain::counting::{
    dedup_candidates, network_groups, outcomes, over_quota, rollup_increments,
};
use crate::incidents::{CityCount, Incident};

/// The NOTIFY channel live events travel on.
const EVENTS_CHANNEL: &str = "outagewatch_events";

/// The advisory lock key the detector leader holds ("outagewa" as an integer).
const DETECTOR_LOCK: i64 = 0x6f75_7461_6765_7761;

/// Reports, rollups and secrets in Postgres.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects a pool; fails fast when the server cannot be reached.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<PostgresStore, StoreError> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Url(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.application_name("outagewatch"))
            .await?;
        Ok(PostgresStore { pool })
    }
}

/// Rows of the `rollups` view in key order, each key's counts summed: a key has a row in each
/// of its tables when a report for a minute came after the minute was settled, and in key
/// order those rows are adjacent.
fn sum_adjacent<K: PartialEq>(
    rows: impl IntoIterator<Item = (K, i64)>,
) -> impl Iterator<Item = (K, i64)> {
    let mut summed: Vec<(K, i64)> = Vec::new();
    for (key, count) in rows {
        match summed.last_mut() {
            Some((last, total)) if *last == key => *total += count,
            _ => summed.push((key, count)),
        }
    }
    summed.into_iter()
}

/// Moves the counts of minutes before `before` from `rollups_live`, where ingest adds to
/// them, to `rollups_minute`, where the reads' covering indexes are; answers the rows moved.
/// Rows are locked in key order, as the writers lock them, so the two never deadlock; a row a
/// writer holds is moved once its batch has committed. A late count for a minute already
/// moved is added to its row there.
async fn settle_rollups(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let moved = sqlx::query(
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
         )
         insert into rollups_minute (service, country, city, minute, count)
         select service, country, city, minute, count from moved
         order by service, country, city, minute
         on conflict (service, country, city, minute)
         do update set count = rollups_minute.count + excluded.count",
    )
    .bind(before)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected())
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
        sqlx::query_as("select id, counted from reports where id = any($1)")
            .bind(ids)
            .fetch_all(executor)
            .await?;
    Ok(rows.into_iter().collect())
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

/// The reports of a batch, as one statement of data-modifying CTEs: the ones that may count
/// first (the unique key on (window, fingerprint, service) admits only a reporter's first,
/// and a conflict on it or on the id inserts nothing), then every other one uncounted (what
/// still conflicts is an id already stored). Answers (id, counted) for each row inserted.
const INSERT_BATCH: &str = "with input as (
         select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::uuid[], $8::timestamptz[], $9::timestamptz[], $10::bool[])
             as t(id, received_at, service, country, city, problem, fingerprint, dedup_window,
                  minute, candidate)
     ),
     counted as (
         insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         select id, received_at, service, country, nullif(city, ''), problem, fingerprint, dedup_window, true
         from input where candidate
         on conflict do nothing
         returning id
     ),
     uncounted as (
         insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         select id, received_at, service, country, nullif(city, ''), problem, fingerprint, dedup_window, false
         from input where id not in (select id from counted)
         on conflict do nothing
         returning id
     )";

/// [`INSERT_BATCH`] and, in the same statement, the counted reports added to their minute
/// rollups (city row and country total) in `table`, locked in key order so two writers never
/// deadlock.
fn insert_rollups_cte(table: &str) -> String {
    format!(
        ",
     places as (
         select i.service, i.country, i.city, i.minute from input i join counted c using (id) where i.city <> ''
         union all
         select i.service, i.country, '', i.minute from input i join counted c using (id)
     ),
     rolled as (
         insert into {table} (service, country, city, minute, count)
         select service, country, city, minute, count(*) from places
         group by service, country, city, minute
         order by service, country, city, minute
         on conflict (service, country, city, minute)
         do update set count = {table}.count + excluded.count
     )"
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
                with(&insert_rollups_cte(RollupTable::Live.name())),
                with(&insert_rollups_cte(RollupTable::Settled.name())),
            ]
        });
        &STATEMENTS[table.map_or(0, |t| 1 + t as usize)]
    }

    /// The upsert of [`add_to_rollups`] into this table.
    fn add_statement(self) -> &'static str {
        static STATEMENTS: LazyLock<[String; 2]> = LazyLock::new(|| {
            [RollupTable::Live, RollupTable::Settled].map(|table| {
                let table = table.name();
                format!(
                    "insert into {table} (service, country, city, minute, count)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[])
         on conflict (service, country, city, minute)
         do update set count = {table}.count + excluded.count"
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
    sqlx::query(table.add_statement())
        .bind(
            increments
                .iter()
                .map(|((s, _, _, _), _)| *s)
                .collect::<Vec<_>>(),
        )
        .bind(
            increments
                .iter()
                .map(|((_, c, _, _), _)| *c)
                .collect::<Vec<_>>(),
        )
        .bind(
            increments
                .iter()
                .map(|((_, _, city, _), _)| *city)
                .collect::<Vec<_>>(),
        )
        .bind(
            increments
                .iter()
                .map(|((_, _, _, m), _)| *m)
                .collect::<Vec<_>>(),
        )
        .bind(increments.iter().map(|(_, n)| *n).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Appends `field` to COPY text, escaping what the format gives a meaning to.
fn copy_text(text: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\t' => text.push_str("\\t"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            c => text.push(c),
        }
    }
}

/// Anti-fabrication, one step of `insert_reports`: adds the newly counted reports that carry a
/// network quota to their network's (service, minute) count, un-counts those beyond the quota,
/// and returns their ids. The count rows' locks make it hold across replicas.
async fn cap_networks(
    tx: &mut Transaction<'_, Postgres>,
    candidates: &[&NewReport],
    counted: &HashSet<Uuid>,
) -> Result<HashSet<Uuid>, StoreError> {
    let groups = network_groups(
        candidates
            .iter()
            .copied()
            .filter(|r| counted.contains(&r.id)),
    );
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
    let over: Vec<Uuid> = groups
        .iter()
        .flat_map(|group| {
            let key = (
                group.service.to_owned(),
                Uuid::from_bytes(group.network.0),
                group.minute,
            );
            let total = totals.get(&key).copied().unwrap_or(i64::MAX);
            over_quota(group, total).iter().copied()
        })
        .collect();
    if !over.is_empty() {
        sqlx::query("update reports set counted = false where id = any($1)")
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

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn reporter_secret(
        &self,
        day: NaiveDate,
        candidate: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("insert into reporter_secrets (day, secret) values ($1, $2) on conflict (day) do nothing")
            .bind(day)
            .bind(&candidate[..])
            .execute(&mut *tx)
            .await?;
        let secret: Vec<u8> =
            sqlx::query_scalar("select secret from reporter_secrets where day = $1")
                .bind(day)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("delete from reporter_secrets where day < $1::date - 1")
            .bind(day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        secret.try_into().map_err(|_| {
            StoreError::Unavailable("stored reporter secret has the wrong length".into())
        })
    }

    async fn settle_rollups(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        settle_rollups(&self.pool, before).await
    }

    async fn insert_reports(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let candidates = dedup_candidates(reports);
        let candidate_ids: HashSet<Uuid> = candidates.iter().map(|r| r.id).collect();
        // In dedup-key order: a writer inserting a key another writer's open transaction holds
        // waits for it, so two batches holding each other's keys in opposite orders would
        // deadlock (Postgres breaks that after a second by failing one of them).
        let mut ordered: Vec<&NewReport> = reports.iter().collect();
        ordered
            .sort_unstable_by_key(|r| (r.dedup_window_start, r.fingerprint.0, r.service.as_str()));
        let capped = reports.iter().any(|r| r.network.is_some());
        let table = RollupTable::for_batch(reports, now);
        let (counted, uncounted, previously_stored) = if capped {
            // A network quota is decided on what actually counted, so the un-counting of
            // what is over it follows the inserts in one transaction, and the rollups after.
            let mut tx = self.pool.begin().await?;
            let stored = insert_batch(&mut *tx, &ordered, &candidate_ids, None).await?;
            let (mut counted, mut uncounted) = split_stored(stored);
            let previously_stored =
                stored_outcomes(&mut *tx, &replays(reports, &counted, &uncounted)).await?;
            let over = cap_networks(&mut tx, &candidates, &counted).await?;
            counted.retain(|id| !over.contains(id));
            uncounted.extend(over);
            add_to_rollups(
                &mut tx,
                table,
                candidates
                    .iter()
                    .copied()
                    .filter(|r| counted.contains(&r.id)),
            )
            .await?;
            tx.commit().await?;
            (counted, uncounted, previously_stored)
        } else {
            // No quota: the whole batch, rollups included, is one statement, so one implicit
            // transaction and one round trip (six, as separate statements, left the writer
            // waiting on the service a quarter of the time).
            let stored = insert_batch(&self.pool, &ordered, &candidate_ids, Some(table)).await?;
            let (counted, uncounted) = split_stored(stored);
            // Committed by now: a conflicting insert waits for the other transaction to end.
            let previously_stored =
                stored_outcomes(&self.pool, &replays(reports, &counted, &uncounted)).await?;
            (counted, uncounted, previously_stored)
        };
        Ok(outcomes(reports, &counted, &uncounted, &previously_stored))
    }

    async fn report(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        let row: Option<(Uuid, DateTime<Utc>, String, String, Option<String>, String, bool)> = sqlx::query_as(
            "select id, received_at, service, country, city, problem, counted from reports where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(id, received_at, service, country, city, problem, counted)| StoredReport {
                id,
                received_at,
                service,
                country,
                city,
                problem,
                counted,
            },
        ))
    }

    async fn stored_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        let mut found = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(50_000) {
            let rows: Vec<Uuid> = sqlx::query_scalar("select id from reports where id = any($1)")
                .bind(chunk)
                .fetch_all(&self.pool)
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn report_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("select count(*) from reports")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let rows: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(
            "select minute, country, city, count from rollups
             where service = $1 and minute >= $2 and minute < $3
             order by minute, country, city",
        )
        .bind(service)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let keyed = rows
            .into_iter()
            .map(|(minute, country, city, count)| ((minute, country, city), count));
        Ok(sum_adjacent(keyed)
            .map(|((minute, country, city), count)| Rollup {
                minute,
                country,
                city,
                count,
            })
            .collect())
    }

    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // Each table's own minimum, so each is one index probe (an aggregate over the view
        // would read both whole).
        Ok(sqlx::query_scalar(
            "select least((select min(minute) from rollups_minute), (select min(minute) from rollups_live))",
        )
            .fetch_one(&self.pool)
            .await?)
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        let rows: Vec<(DateTime<Utc>, String, String, String, i64)> = sqlx::query_as(
            "select minute, service, country, city, count from rollups
             where minute >= $1 and minute < $2
             order by minute, service, country, city",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let keyed = rows
            .into_iter()
            .map(|(minute, service, country, city, count)| {
                ((minute, service, country, city), count)
            });
        Ok(sum_adjacent(keyed)
            .map(|((minute, service, country, city), count)| MinuteCount {
                minute,
                service,
                country,
                city,
                count,
            })
            .collect())
    }

    async fn top_cities(
        &self,
        service: &str,
        country: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<CityCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select country, city, sum(count)::int8 as n from rollups
             where service = $1 and ($2::text is null or country = $2) and city <> ''
               and minute >= $3 and minute < $4
             group by country, city
             order by n desc, country, city
             limit $5",
        )
        .bind(service)
        .bind(country)
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(country, city, count)| CityCount {
                country,
                city,
                count,
            })
            .collect())
    }

    async fn problem_counts(
        &self,
        service: &str,
        country: Option<&str>,
        city: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "select problem, count(*) from reports
             where received_at >= $1 and received_at < $2 and service = $3 and counted
               and ($4::text is null or country = $4) and ($5::text is null or city = $5)
             group by problem
             order by problem",
        )
        .bind(from)
        .bind(to)
        .bind(service)
        .bind(country)
        .bind(city)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn counts(
        &self,
        service: &str,
        country: Option<&str>,
        city: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<CountBucket>, StoreError> {
        // The global series is the sum of the country totals; a country's is its total row.
        // One statement each, with literal city predicates, so every plan of each prepared
        // statement can use its index: `($2 is null or country = $2)` or `city = $3` cannot
        // be index conditions of a generic plan (the partial country-series index needs
        // `city = ''` in the text). A city's series is a primary-key range; a country's an
        // index-only range of the country-series index; the world's that index walked
        // country by country.
        let query = match (country, city) {
            (Some(country), Some(city)) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $6) * $6 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and country = $2 and city = $3 and minute >= $4 and minute < $5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and country = $2 and city = '' and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups
                 where service = $1 and city = '' and country = any($2) and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(region_countries(None)),
        };
        let rows: Vec<(i64, i64)> = query
            .bind(from)
            .bind(to)
            .bind(bucket_seconds)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(start, count)| CountBucket {
                start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
                count,
            })
            .collect())
    }

    async fn region_counts(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        // Literal city predicates, so the partial region indexes match any plan of the
        // prepared statement; the country list keeps the city index a range scan per country.
        let sql = if cities {
            "select country, city, sum(count)::int8 from rollups
             where service = $1 and city <> '' and country = any($4) and minute >= $2 and minute < $3
             group by country, city"
        } else {
            // '' rather than the column, so the country-series index answers alone.
            "select country, ''::text, sum(count)::int8 from rollups
             where service = $1 and city = '' and country = any($4) and minute >= $2 and minute < $3
             group by country"
        };
        Ok(sqlx::query_as(sql)
            .bind(service)
            .bind(from)
            .bind(to)
            .bind(region_countries(country))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>, f64)>, StoreError> {
        let (countries, cities): (Vec<&str>, Vec<&str>) = regions
            .iter()
            .map(|(country, city)| (country.as_str(), city.as_str()))
            .unzip();
        Ok(sqlx::query_as(
            "select e.country, e.city, e.quarter, e.expected
             from unnest($2::text[], $3::text[]) as r(country, city)
             join expectations_quarter e
               on e.service = $1 and e.country = r.country and e.city = r.city
                  and e.quarter >= $4 and e.quarter < $5",
        )
        .bind(service)
        .bind(countries)
        .bind(cities)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn expectations(
        &self,
        service: &str,
        country: Option<&str>,
        city: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
        Ok(sqlx::query_as(
            "select quarter, expected from expectations_quarter
             where service = $1 and country = coalesce($2::text, '') and city = coalesce($3::text, '')
               and quarter >= $4 and quarter < $5
             order by quarter",
        )
        .bind(service)
        .bind(country)
        .bind(city)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("delete from expectations_quarter where quarter >= $1 and quarter < $2")
                .bind(from)
                .bind(to)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn insert_recomputed_expectations(
        &self,
        expectations: &[Expectation],
    ) -> Result<(), StoreError> {
        if expectations.is_empty() {
            return Ok(());
        }
        // COPY's text format: tab-separated, with backslash, tab and line breaks escaped.
        let mut text = String::with_capacity(expectations.len() * 48);
        for e in expectations {
            for field in [&e.service, &e.country, &e.city] {
                copy_text(&mut text, field);
                text.push('\t');
            }
            // With an explicit UTC offset, so the server's time zone cannot shift the quarter.
            let _ = writeln!(
                text,
                "{}\t{}",
                e.quarter.format("%Y-%m-%d %H:%M:%S+00"),
                e.expected
            );
        }
        let mut copy = self
            .pool
            .copy_in_raw(
                "copy expectations_quarter (service, country, city, quarter, expected) from stdin",
            )
            .await?;
        copy.send(text.into_bytes()).await?;
        copy.finish().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<(DateTime<Utc>, Option<DateTime<Utc>>, Option<String>)> =
            sqlx::query_as("select watermark, state_at, state from detector_state")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(watermark, state_at, state)| Checkpoint {
            watermark,
            state: state_at.zip(state),
        }))
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some((from, to)) = write.replace {
            // What an admin noted or resolved stays (a re-detection writes the same ids).
            sqlx::query(
                "delete from incidents where started_at >= $1 and started_at < $2
                 and note is null and resolved_by is null",
            )
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        }
        for incident in write.incidents {
            let (top_cities, problems) = incident_json(incident);
            let mut insert =
                QueryBuilder::new(format!("insert into incidents ({INCIDENT_COLUMNS}) "));
            insert.push_values([incident], |mut row, i| {
                row.push_bind(i.id)
                    .push_bind(&i.service)
                    .push_bind(i.scope.as_str())
                    .push_bind(&i.country)
                    .push_bind(&i.city)
                    .push_bind(i.status.as_str())
                    .push_bind(i.started_at)
                    .push_bind(i.detected_at)
                    .push_bind(i.peak_at)
                    .push_bind(i.peak_count)
                    .push_bind(i.expected_at_peak)
                    .push_bind(i.start_count)
                    .push_bind(i.excess_reports)
                    .push_bind(i.resolved_at)
                    .push_bind(&top_cities)
                    .push_bind(&problems)
                    .push_bind(i.parent_id)
                    .push_bind(&i.summary)
                    .push_bind(i.updated_at);
            });
            insert.push(INCIDENT_UPSERT);
            insert.build().execute(&mut *tx).await?;
        }
        if !write.expectations.is_empty() {
            let e = write.expectations;
            sqlx::query(
                "insert into expectations_quarter (service, country, city, quarter, expected)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[])
                 on conflict (service, country, city, quarter) do update set expected = excluded.expected",
            )
            .bind(e.iter().map(|x| x.service.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.country.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.city.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.quarter).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.expected).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(before) = write.prune_expectations_before {
            sqlx::query("delete from expectations_quarter where quarter < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(watermark) = write.watermark {
            sqlx::query(
                "insert into detector_state (singleton, watermark) values (true, $1)
                 on conflict (singleton) do update set watermark = excluded.watermark",
            )
            .bind(watermark)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((state_at, state)) = write.state {
            sqlx::query("update detector_state set state_at = $1, state = $2")
                .bind(state_at)
                .bind(state)
                .execute(&mut *tx)
                .await?;
        }
        if !write.deliveries.is_empty() {
            let d = write.deliveries;
            sqlx::query(
                "insert into webhook_deliveries
                     (event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at, next_attempt_at)
                 select event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at, created_at
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[], $6::text[],
                             $7::timestamptz[])
                      as t(event_id, endpoint, event_type, incident_id, occurred_at, payload, created_at)
                 on conflict (event_id, endpoint) do nothing",
            )
            .bind(d.iter().map(|x| x.event_id).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.endpoint.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.event_type).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.incident_id).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.occurred_at).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.payload.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|x| x.created_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let mut select = QueryBuilder::new(format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where true"
        ));
        if let Some(service) = &query.service {
            select.push(" and service = ").push_bind(service);
        }
        if let Some(country) = &query.country {
            select.push(" and country = ").push_bind(country);
        }
        if let Some(status) = query.status {
            select.push(" and status = ").push_bind(status.as_str());
        }
        if let Some(since) = query.since {
            select.push(" and started_at >= ").push_bind(since);
        }
        if let Some((started_at, id)) = query.after {
            select
                .push(" and (started_at, id) < (")
                .push_bind(started_at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        select
            .push(" order by started_at desc, id desc limit ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<IncidentRow> = select.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter().map(IncidentRow::into_incident).collect()
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<IncidentRow> = sqlx::query_as(&format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(IncidentRow::into_incident).transpose()
    }

    async fn notify(&self, payload: &str) -> Result<bool, StoreError> {
        sqlx::query("select pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Some(Box::new(Notifications(listener))))
    }

    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        // A connection of its own: the lock lives as long as this session, and a pool would
        // hand the session to other work.
        let mut connection = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(DETECTOR_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if !locked {
            let _ = connection.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLeadership {
            connection: Some(connection),
        })))
    }

    async fn claim_webhook_deliveries(
        &self,
        endpoints: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        // skip locked: replicas claiming at once each take different rows instead of waiting.
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "update webhook_deliveries d set next_attempt_at = $3
             from (select event_id, endpoint from webhook_deliveries
                   where status = 'pending' and next_attempt_at <= $2 and endpoint = any($1)
                   order by next_attempt_at
                   limit $4
                   for update skip locked) due
             where d.event_id = due.event_id and d.endpoint = due.endpoint
             returning {}",
            qualified_delivery_columns()
        ))
        .bind(endpoints)
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .into_iter()
            .map(DeliveryRow::into_delivery)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|d| (d.occurred_at, d.event_id));
        Ok(claimed)
    }

    async fn record_webhook_attempt(
        &self,
        event_id: Uuid,
        endpoint: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let columns = AttemptColumns::of(attempt, at);
        sqlx::query(
            "update webhook_deliveries
             set status = $3, attempts = attempts + 1, last_attempt_at = $4, last_error = $5,
                 next_attempt_at = coalesce($6, next_attempt_at), finished_at = $7
             where event_id = $1 and endpoint = $2 and status = 'pending'",
        )
        .bind(event_id)
        .bind(endpoint)
        .bind(columns.status.as_str())
        .bind(at)
        .bind(columns.error)
        .bind(columns.next_attempt_at)
        .bind(columns.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn expire_webhook_deliveries(
        &self,
        give_up_before: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let expired = sqlx::query(
            "update webhook_deliveries
             set status = 'failed', finished_at = $2,
                 last_error = coalesce(last_error, 'never attempted')
             where status = 'pending' and created_at < $1",
        )
        .bind(give_up_before)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "delete from webhook_deliveries where status <> 'pending' and finished_at < $1",
        )
        .bind(forget_before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries
             order by occurred_at, event_id, endpoint
             limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(DeliveryRow::into_delivery).collect()
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("select count(*) from webhook_deliveries where status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Replicas starting at once seed one after the other, so positions stay in order.
        sqlx::query("lock table services in share row exclusive mode")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into services (slug, name, enabled, position, updated_at)
             select t.slug, t.name, true, (select coalesce(max(position), -1) from services) + t.ord, $3
             from unnest($1::text[], $2::text[]) with ordinality as t(slug, name, ord)
             on conflict (slug) do nothing",
        )
        .bind(services.iter().map(|(slug, _)| slug.as_str()).collect::<Vec<_>>())
        .bind(services.iter().map(|(_, name)| name.as_str()).collect::<Vec<_>>())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let rows: Vec<(String, String, bool)> =
            sqlx::query_as("select slug, name, enabled from services order by position, slug")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(slug, name, enabled)| ServiceRecord {
                slug,
                name,
                enabled,
            })
            .collect())
    }

    async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // xmax is 0 only on a row this statement inserted.
        let inserted: bool = sqlx::query_scalar(
            "insert into services (slug, name, enabled, position, updated_at)
             values ($1, $2, $3, (select coalesce(max(position), -1) + 1 from services), $4)
             on conflict (slug) do update
             set name = excluded.name, enabled = excluded.enabled, updated_at = excluded.updated_at
             returning xmax = 0",
        )
        .bind(&service.slug)
        .bind(&service.name)
        .bind(service.enabled)
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let query = match action {
            IncidentAction::Annotate { note } => {
                sqlx::query("update incidents set note = $2 where id = $1")
                    .bind(id)
                    .bind(*note)
            }
            IncidentAction::Resolve { by } => sqlx::query(
                "update incidents
                 set status = 'resolved', resolved_at = coalesce(resolved_at, $2),
                     resolved_by = $3, updated_at = $2
                 where id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(*by),
        };
        if query.execute(&self.pool).await?.rows_affected() == 0 {
            return Ok(None);
        }
        self.incident(id).await
    }

    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("delete from network_minute_counts where minute < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
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
