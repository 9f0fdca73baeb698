//! The SQLite store: the zero-setup embedded default; one writer connection, batches as chunked multi-row inserts.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{
    incident_json, region_countries, Attempt, AttemptColumns, Checkpoint, ConnectOptions,
    CountBucket, Delivery, DeliveryRow, DetectionWrite, Expectation, IncidentAction, IncidentQuery,
    IncidentRow, Leadership, Listener, MinuteCount, NewReport, Outcome, Rollup, ServiceRecord,
    Store, StoreError, StoredReport, DELIVERY_COLUMNS, INCIDENT_ADMIN_COLUMNS, INCIDENT_COLUMNS,
    INCIDENT_UPSERT,
};
use crate::domain::counting::{
    dedup_candidates, network_groups, outcomes, over_quota, rollup_increments,
};
use crate::incidents::{CityCount, Incident};

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
            .max_connections(options.max_connections.max(1))
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

/// A JSON array of strings, for `json_each` lists in queries.
fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn from_seconds(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// An incident as SQLite returns it (times in unix seconds).
#[derive(sqlx::FromRow)]
struct SqliteIncident {
    id: Uuid,
    service: String,
    scope: String,
    country: Option<String>,
    city: Option<String>,
    status: String,
    started_at: i64,
    detected_at: i64,
    peak_at: i64,
    peak_count: f64,
    expected_at_peak: f64,
    start_count: f64,
    excess_reports: f64,
    resolved_at: Option<i64>,
    top_cities: String,
    problems: String,
    parent_id: Option<Uuid>,
    summary: String,
    updated_at: i64,
    note: Option<String>,
    resolved_by: Option<String>,
}

impl SqliteIncident {
    fn into_incident(self) -> Result<Incident, StoreError> {
        IncidentRow {
            id: self.id,
            service: self.service,
            scope: self.scope,
            country: self.country,
            city: self.city,
            status: self.status,
            started_at: from_seconds(self.started_at),
            detected_at: from_seconds(self.detected_at),
            peak_at: from_seconds(self.peak_at),
            peak_count: self.peak_count,
            expected_at_peak: self.expected_at_peak,
            start_count: self.start_count,
            excess_reports: self.excess_reports,
            resolved_at: self.resolved_at.map(from_seconds),
            top_cities: self.top_cities,
            problems: self.problems,
            parent_id: self.parent_id,
            summary: self.summary,
            updated_at: from_seconds(self.updated_at),
            note: self.note,
            resolved_by: self.resolved_by,
        }
        .into_incident()
    }
}

/// A webhook delivery as SQLite returns it (times in unix seconds).
#[derive(sqlx::FromRow)]
struct SqliteDelivery {
    event_id: Uuid,
    endpoint: String,
    event_type: String,
    incident_id: Uuid,
    occurred_at: i64,
    payload: String,
    status: String,
    attempts: i64,
    created_at: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_error: Option<String>,
    finished_at: Option<i64>,
}

impl SqliteDelivery {
    fn into_delivery(self) -> Result<Delivery, StoreError> {
        DeliveryRow {
            event_id: self.event_id,
            endpoint: self.endpoint,
            event_type: self.event_type,
            incident_id: self.incident_id,
            occurred_at: from_seconds(self.occurred_at),
            payload: self.payload,
            status: self.status,
            attempts: i32::try_from(self.attempts).unwrap_or(i32::MAX),
            created_at: from_seconds(self.created_at),
            next_attempt_at: from_seconds(self.next_attempt_at),
            last_attempt_at: self.last_attempt_at.map(from_seconds),
            last_error: self.last_error,
            finished_at: self.finished_at.map(from_seconds),
        }
        .into_delivery()
    }
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
    let groups = network_groups(
        candidates
            .iter()
            .copied()
            .filter(|r| counted.contains(&r.id)),
    );
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
    let over: Vec<Uuid> = groups
        .iter()
        .flat_map(|group| {
            let key = (
                group.service.to_owned(),
                group.network.0.to_vec(),
                group.minute.timestamp(),
            );
            let total = totals.get(&key).copied().unwrap_or(i64::MAX);
            over_quota(group, total).iter().copied()
        })
        .collect();
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

/// Inserts expectations in chunks under the bind limit, each statement ending with
/// `on_conflict` (empty: a conflict is an error).
async fn insert_expectations(
    tx: &mut Transaction<'_, Sqlite>,
    expectations: &[Expectation],
    on_conflict: &str,
) -> Result<(), StoreError> {
    for chunk in expectations.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "insert into expectations_quarter (service, country, city, quarter, expected) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(&e.service)
                .push_bind(&e.country)
                .push_bind(&e.city)
                .push_bind(e.quarter.timestamp())
                .push_bind(e.expected);
        });
        insert.push(on_conflict);
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn reporter_secret(
        &self,
        day: NaiveDate,
        candidate: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "insert into reporter_secrets (day, secret) values (?, ?) on conflict (day) do nothing",
        )
        .bind(day.to_string())
        .bind(&candidate[..])
        .execute(&mut *tx)
        .await?;
        let secret: Vec<u8> =
            sqlx::query_scalar("select secret from reporter_secrets where day = ?")
                .bind(day.to_string())
                .fetch_one(&mut *tx)
                .await?;
        let oldest_kept = day.pred_opt().unwrap_or(day);
        sqlx::query("delete from reporter_secrets where day < ?")
            .bind(oldest_kept.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        secret.try_into().map_err(|_| {
            StoreError::Unavailable("stored reporter secret has the wrong length".into())
        })
    }

    async fn settle_rollups(&self, _before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn insert_reports(
        &self,
        reports: &[NewReport],
        _now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        // As on Postgres: reporters' first reports try to count (the partial unique key
        // decides), everything else goes in uncounted, and what still conflicts is a replay.
        let candidates = dedup_candidates(reports);
        let mut counted = insert_rows(&mut tx, &candidates, true).await?;
        let rest: Vec<&NewReport> = reports
            .iter()
            .filter(|r| !counted.contains(&r.id))
            .collect();
        let mut uncounted = insert_rows(&mut tx, &rest, false).await?;
        let replays: Vec<Uuid> = rest
            .iter()
            .map(|r| r.id)
            .filter(|id| !uncounted.contains(id))
            .collect();
        let previously_stored = stored_outcomes(&mut tx, &replays).await?;
        // Anti-fabrication: what a network counts beyond its per-minute quota is stored uncounted.
        let over = cap_networks(&mut tx, &candidates, &counted).await?;
        counted.retain(|id| !over.contains(id));
        uncounted.extend(over);

        let increments = rollup_increments(
            candidates
                .iter()
                .copied()
                .filter(|r| counted.contains(&r.id)),
        );
        for chunk in increments.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "insert into rollups_minute (service, country, city, minute, count) ",
            );
            query.push_values(chunk, |mut row, ((service, country, city, minute), n)| {
                row.push_bind(*service)
                    .push_bind(*country)
                    .push_bind(*city)
                    .push_bind(minute.timestamp())
                    .push_bind(*n);
            });
            query.push(
                " on conflict (service, country, city, minute) do update set count = rollups_minute.count + excluded.count",
            );
            query.build().execute(&mut *tx).await?;
        }

        tx.commit().await?;
        Ok(outcomes(reports, &counted, &uncounted, &previously_stored))
    }

    async fn report(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        let row: Option<(Uuid, i64, String, String, Option<String>, String, bool)> = sqlx::query_as(
            "select id, received_at, service, country, city, problem, counted from reports where id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(
            |(id, received_at, service, country, city, problem, counted)| StoredReport {
                id,
                received_at: from_millis(received_at),
                service,
                country,
                city,
                problem,
                counted,
            },
        ))
    }

    async fn stored_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        let mut tx = self.reader.begin().await?;
        let found = stored_outcomes(&mut tx, ids).await?;
        Ok(found.into_keys().collect())
    }

    async fn report_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("select count(*) from reports")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "select minute, country, city, count from rollups_minute
             where service = ? and minute >= ? and minute < ?
             order by minute, country, city",
        )
        .bind(service)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, country, city, count)| Rollup {
                minute: DateTime::from_timestamp(minute, 0).unwrap_or_default(),
                country,
                city,
                count,
            })
            .collect())
    }

    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let minute: Option<i64> = sqlx::query_scalar("select min(minute) from rollups_minute")
            .fetch_one(&self.reader)
            .await?;
        Ok(minute.map(from_seconds))
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        let rows: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
            "select minute, service, country, city, count from rollups_minute
             where minute >= ? and minute < ?
             order by minute, service, country, city",
        )
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, service, country, city, count)| MinuteCount {
                minute: from_seconds(minute),
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
        // An incident's range is short: the minute index beats any country's whole history.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select country, city, sum(count) as n
             from rollups_minute indexed by rollups_minute_by_minute
             where service = ?1 and (?2 is null or country = ?2) and city <> ''
               and minute >= ?3 and minute < ?4
             group by country, city
             order by n desc, country, city
             limit ?5",
        )
        .bind(service)
        .bind(country)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
             where received_at >= ?1 and received_at < ?2 and service = ?3 and counted
               and (?4 is null or country = ?4) and (?5 is null or city = ?5)
             group by problem
             order by problem",
        )
        .bind(millis(from))
        .bind(millis(to))
        .bind(service)
        .bind(country)
        .bind(city)
        .fetch_all(&self.reader)
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
        // One statement each, with literal city predicates so the partial country-series
        // index applies: a city's series is a primary-key range, a country's a range of the
        // country-series index, the world's that index walked country by country.
        let query = match (country, city) {
            (Some(country), Some(city)) => sqlx::query_as(
                "select (minute / ?6) * ?6 as bucket, sum(count)
                 from rollups_minute
                 where service = ?1 and country = ?2 and city = ?3 and minute >= ?4 and minute < ?5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count)
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and country = ?2 and city = '' and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (minute / ?5) * ?5 as bucket, sum(count)
                 from rollups_minute indexed by rollups_country_series
                 where service = ?1 and city = '' and country in (select value from json_each(?2))
                   and minute >= ?3 and minute < ?4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(json_list(&region_countries(None))),
        };
        let rows: Vec<(i64, i64)> = query
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(bucket_seconds)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(start, count)| CountBucket {
                start: from_seconds(start),
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
        // Literal city predicates, so the partial region indexes apply.
        let sql = if cities {
            "select country, city, sum(count) from rollups_minute
             where service = ?1 and city <> '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country, city"
        } else {
            "select country, '', sum(count) from rollups_minute
             where service = ?1 and city = '' and country in (select value from json_each(?4))
               and minute >= ?2 and minute < ?3
             group by country"
        };
        Ok(sqlx::query_as(sql)
            .bind(service)
            .bind(from.timestamp())
            .bind(to.timestamp())
            .bind(json_list(&region_countries(country)))
            .fetch_all(&self.reader)
            .await?)
    }

    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>, f64)>, StoreError> {
        let pairs = serde_json::Value::from(
            regions
                .iter()
                .map(|(country, city)| serde_json::json!([country, city]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
            "with r(country, city) as (
                 select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?2)
             )
             select e.country, e.city, e.quarter, e.expected
             from r join expectations_quarter e
               on e.service = ?1 and e.country = r.country and e.city = r.city
                  and e.quarter >= ?3 and e.quarter < ?4",
        )
        .bind(service)
        .bind(pairs)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(country, city, quarter, expected)| {
                (country, city, from_seconds(quarter), expected)
            })
            .collect())
    }

    async fn expectations(
        &self,
        service: &str,
        country: Option<&str>,
        city: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
        let rows: Vec<(i64, f64)> = sqlx::query_as(
            "select quarter, expected from expectations_quarter
             where service = ?1 and country = coalesce(?2, '') and city = coalesce(?3, '')
               and quarter >= ?4 and quarter < ?5
             order by quarter",
        )
        .bind(service)
        .bind(country)
        .bind(city)
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(quarter, expected)| (from_seconds(quarter), expected))
            .collect())
    }

    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("delete from expectations_quarter where quarter >= ? and quarter < ?")
                .bind(from.timestamp())
                .bind(to.timestamp())
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }

    async fn insert_recomputed_expectations(
        &self,
        expectations: &[Expectation],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        insert_expectations(&mut tx, expectations, "").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<(i64, Option<i64>, Option<String>)> =
            sqlx::query_as("select watermark, state_at, state from detector_state")
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|(watermark, state_at, state)| Checkpoint {
            watermark: from_seconds(watermark),
            state: state_at.map(from_seconds).zip(state),
        }))
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        if let Some((from, to)) = write.replace {
            // What an admin noted or resolved stays (a re-detection writes the same ids).
            sqlx::query(
                "delete from incidents where started_at >= ? and started_at < ?
                 and note is null and resolved_by is null",
            )
            .bind(from.timestamp())
            .bind(to.timestamp())
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
                    .push_bind(i.started_at.timestamp())
                    .push_bind(i.detected_at.timestamp())
                    .push_bind(i.peak_at.timestamp())
                    .push_bind(i.peak_count)
                    .push_bind(i.expected_at_peak)
                    .push_bind(i.start_count)
                    .push_bind(i.excess_reports)
                    .push_bind(i.resolved_at.map(|t| t.timestamp()))
                    .push_bind(&top_cities)
                    .push_bind(&problems)
                    .push_bind(i.parent_id)
                    .push_bind(&i.summary)
                    .push_bind(i.updated_at.timestamp());
            });
            insert.push(INCIDENT_UPSERT);
            insert.build().execute(&mut *tx).await?;
        }
        insert_expectations(
            &mut tx,
            write.expectations,
            " on conflict (service, country, city, quarter) do update set expected = excluded.expected",
        )
        .await?;
        if let Some(before) = write.prune_expectations_before {
            sqlx::query("delete from expectations_quarter where quarter < ?")
                .bind(before.timestamp())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(watermark) = write.watermark {
            sqlx::query(
                "insert into detector_state (singleton, watermark) values (1, ?)
                 on conflict (singleton) do update set watermark = excluded.watermark",
            )
            .bind(watermark.timestamp())
            .execute(&mut *tx)
            .await?;
        }
        if let Some((state_at, state)) = write.state {
            sqlx::query("update detector_state set state_at = ?, state = ?")
                .bind(state_at.timestamp())
                .bind(state)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in write.deliveries.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "insert into webhook_deliveries (event_id, endpoint, event_type, incident_id, \
                 occurred_at, payload, created_at, next_attempt_at) ",
            );
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(d.event_id)
                    .push_bind(&d.endpoint)
                    .push_bind(d.event_type)
                    .push_bind(d.incident_id)
                    .push_bind(d.occurred_at.timestamp())
                    .push_bind(&d.payload)
                    .push_bind(d.created_at.timestamp())
                    .push_bind(d.created_at.timestamp());
            });
            insert.push(" on conflict (event_id, endpoint) do nothing");
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        let mut select = QueryBuilder::new(format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where 1"
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
            select
                .push(" and started_at >= ")
                .push_bind(since.timestamp());
        }
        if let Some((started_at, id)) = query.after {
            select
                .push(" and (started_at, id) < (")
                .push_bind(started_at.timestamp())
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        select
            .push(" order by started_at desc, id desc limit ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<SqliteIncident> = select.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(SqliteIncident::into_incident)
            .collect()
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        let row: Option<SqliteIncident> = sqlx::query_as(&format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(SqliteIncident::into_incident).transpose()
    }

    async fn notify(&self, _payload: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError> {
        Ok(None)
    }

    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        Ok(Some(Box::new(SoleProcess)))
    }

    async fn claim_webhook_deliveries(
        &self,
        endpoints: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        // One process and one writer connection: the update itself is the claim.
        let mut claim =
            QueryBuilder::<Sqlite>::new("update webhook_deliveries set next_attempt_at = ");
        claim
            .push_bind(lease_until.timestamp())
            .push(
                " where (event_id, endpoint) in (select event_id, endpoint from webhook_deliveries \
                 where status = 'pending' and next_attempt_at <= ",
            )
            .push_bind(now.timestamp())
            .push(" and endpoint in (");
        let mut list = claim.separated(", ");
        for endpoint in endpoints {
            list.push_bind(endpoint);
        }
        claim
            .push(") order by next_attempt_at limit ")
            .push_bind(i64::from(limit))
            .push(format!(") returning {DELIVERY_COLUMNS}"));
        let rows: Vec<SqliteDelivery> = claim.build_query_as().fetch_all(&self.writer).await?;
        let mut claimed = rows
            .into_iter()
            .map(SqliteDelivery::into_delivery)
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
             set status = ?3, attempts = attempts + 1, last_attempt_at = ?4, last_error = ?5,
                 next_attempt_at = coalesce(?6, next_attempt_at), finished_at = ?7
             where event_id = ?1 and endpoint = ?2 and status = 'pending'",
        )
        .bind(event_id)
        .bind(endpoint)
        .bind(columns.status.as_str())
        .bind(at.timestamp())
        .bind(columns.error)
        .bind(columns.next_attempt_at.map(|t| t.timestamp()))
        .bind(columns.finished_at.map(|t| t.timestamp()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn expire_webhook_deliveries(
        &self,
        give_up_before: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let expired = sqlx::query(
            "update webhook_deliveries
             set status = 'failed', finished_at = ?2,
                 last_error = coalesce(last_error, 'never attempted')
             where status = 'pending' and created_at < ?1",
        )
        .bind(give_up_before.timestamp())
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("delete from webhook_deliveries where status <> 'pending' and finished_at < ?")
            .bind(forget_before.timestamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<SqliteDelivery> = sqlx::query_as(&format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries
             order by occurred_at, event_id, endpoint
             limit ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(SqliteDelivery::into_delivery)
            .collect()
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("select count(*) from webhook_deliveries where status = 'pending'")
                .fetch_one(&self.reader)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let next: i64 = sqlx::query_scalar("select coalesce(max(position), -1) + 1 from services")
            .fetch_one(&mut *tx)
            .await?;
        for (offset, (slug, name)) in services.iter().enumerate() {
            sqlx::query(
                "insert into services (slug, name, enabled, position, updated_at)
                 values (?, ?, 1, ?, ?) on conflict (slug) do nothing",
            )
            .bind(slug)
            .bind(name)
            .bind(next + offset as i64)
            .bind(at.timestamp())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let rows: Vec<(String, String, bool)> =
            sqlx::query_as("select slug, name, enabled from services order by position, slug")
                .fetch_all(&self.reader)
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
        let mut tx = self.writer.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("select 1 from services where slug = ?")
            .bind(&service.slug)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "insert into services (slug, name, enabled, position, updated_at)
             values (?1, ?2, ?3, (select coalesce(max(position), -1) + 1 from services), ?4)
             on conflict (slug) do update
             set name = excluded.name, enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(&service.slug)
        .bind(&service.name)
        .bind(service.enabled)
        .bind(at.timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored.is_none())
    }

    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let query = match action {
            IncidentAction::Annotate { note } => {
                sqlx::query("update incidents set note = ?2 where id = ?1")
                    .bind(id)
                    .bind(*note)
            }
            IncidentAction::Resolve { by } => sqlx::query(
                "update incidents
                 set status = 'resolved', resolved_at = coalesce(resolved_at, ?2),
                     resolved_by = ?3, updated_at = ?2
                 where id = ?1",
            )
            .bind(id)
            .bind(at.timestamp())
            .bind(*by),
        };
        if query.execute(&self.writer).await?.rows_affected() == 0 {
            return Ok(None);
        }
        let row: Option<SqliteIncident> = sqlx::query_as(&format!(
            "select {INCIDENT_COLUMNS}, {INCIDENT_ADMIN_COLUMNS} from incidents where id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        row.map(SqliteIncident::into_incident).transpose()
    }

    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("delete from network_minute_counts where minute < ?")
            .bind(before.timestamp())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
