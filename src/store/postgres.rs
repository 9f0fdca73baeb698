//! The Postgres store: production backend; each batch of reports is one `UNNEST` statement.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolCopyExt, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, QueryBuilder};
use uuid::Uuid;

use super::{
    dedup_candidates, incident_json, minute_of, outcomes, region_countries, Attempt,
    AttemptColumns, Checkpoint, ConnectOptions, CountBucket, Deliver, Delivery, DeliveryRow,
    DetectionWrite, Expectation, IncidentQuery, IncidentRow, Leadership, MinuteCount, NewReport,
    Outcome, Rollup, Store, StoreError, StoredReport, DELIVERY_COLUMNS, INCIDENT_COLUMNS,
    INCIDENT_UPSERT,
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

/// Reads the stored `counted` of each id that exists.
async fn stored_outcomes(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, bool>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("select id, counted from reports where id = any($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
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

    async fn insert_reports(&self, reports: &[NewReport]) -> Result<Vec<Outcome>, StoreError> {
        // The whole batch is one statement, and so one implicit transaction and one round
        // trip: the reports that may count are inserted first (the unique key on (window,
        // fingerprint, service) admits only a reporter's first, and a conflict on it or on
        // the id inserts nothing), then every other report uncounted (what still conflicts
        // is an id already stored), then the counted ones are added to their minute rollups.
        // Two writers touch the same rollup rows, so a writer holds their locks only from
        // this statement's last step to its commit; rows are locked in key order, so the two
        // never deadlock.
        let candidates: HashSet<Uuid> = dedup_candidates(reports).iter().map(|r| r.id).collect();
        // In dedup-key order: a writer inserting a key another writer's open transaction holds
        // waits for it, so two batches holding each other's keys in opposite orders would
        // deadlock (Postgres breaks that after a second by failing one of them).
        let mut ordered: Vec<&NewReport> = reports.iter().collect();
        ordered
            .sort_unstable_by_key(|r| (r.dedup_window_start, r.fingerprint.0, r.service.as_str()));
        let reports_in_order = ordered;
        let stored: Vec<(Uuid, bool)> = sqlx::query_as(
            "with input as (
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
             ),
             places as (
                 select i.service, i.country, i.city, i.minute from input i join counted c using (id) where i.city <> ''
                 union all
                 select i.service, i.country, '', i.minute from input i join counted c using (id)
             ),
             rolled as (
                 insert into rollups_minute (service, country, city, minute, count)
                 select service, country, city, minute, count(*) from places
                 group by service, country, city, minute
                 order by service, country, city, minute
                 on conflict (service, country, city, minute)
                 do update set count = rollups_minute.count + excluded.count
             )
             select id, true from counted
             union all
             select id, false from uncounted",
        )
        .bind(reports_in_order.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.received_at).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.service.as_str()).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.country.as_str()).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.city.unwrap_or("")).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.problem.as_str()).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| Uuid::from_bytes(r.fingerprint.0)).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| r.dedup_window_start).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| minute_of(r.received_at)).collect::<Vec<_>>())
        .bind(reports_in_order.iter().map(|r| candidates.contains(&r.id)).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        let mut counted = HashSet::with_capacity(stored.len());
        let mut uncounted = HashSet::new();
        for (id, was_counted) in stored {
            if was_counted {
                counted.insert(id);
            } else {
                uncounted.insert(id);
            }
        }
        // Whatever neither insert took was already stored: a retry, answered with its
        // original outcome (committed by now: a conflicting insert waits for the other
        // transaction to end).
        let replays: Vec<Uuid> = reports
            .iter()
            .map(|r| r.id)
            .filter(|id| !counted.contains(id) && !uncounted.contains(id))
            .collect();
        let previously_stored = stored_outcomes(&self.pool, &replays).await?;
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
            "select minute, country, city, count from rollups_minute
             where service = $1 and minute >= $2 and minute < $3
             order by minute, country, city",
        )
        .bind(service)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, country, city, count)| Rollup {
                minute,
                country,
                city,
                count,
            })
            .collect())
    }

    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar("select min(minute) from rollups_minute")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        let rows: Vec<(DateTime<Utc>, String, String, String, i64)> = sqlx::query_as(
            "select minute, service, country, city, count from rollups_minute
             where minute >= $1 and minute < $2
             order by minute, service, country, city",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, service, country, city, count)| MinuteCount {
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
            "select country, city, sum(count)::int8 as n from rollups_minute
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
                 from rollups_minute
                 where service = $1 and country = $2 and city = $3 and minute >= $4 and minute < $5
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country)
            .bind(city),
            (Some(country), None) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups_minute
                 where service = $1 and country = $2 and city = '' and minute >= $3 and minute < $4
                 group by bucket
                 order by bucket",
            )
            .bind(service)
            .bind(country),
            (None, _) => sqlx::query_as(
                "select (extract(epoch from minute)::int8 / $5) * $5 as bucket, sum(count)::int8
                 from rollups_minute
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
            "select country, city, sum(count)::int8 from rollups_minute
             where service = $1 and city <> '' and country = any($4) and minute >= $2 and minute < $3
             group by country, city"
        } else {
            // '' rather than the column, so the country-series index answers alone.
            "select country, ''::text, sum(count)::int8 from rollups_minute
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
            sqlx::query("delete from incidents where started_at >= $1 and started_at < $2")
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
            "select {INCIDENT_COLUMNS} from incidents where true"
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
            "select {INCIDENT_COLUMNS} from incidents where id = $1"
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

    async fn listen(&self, deliver: Deliver) -> Result<bool, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => deliver(notification.payload()),
                    Err(error) => {
                        // recv reconnects on the next call; events sent meanwhile are lost.
                        tracing::warn!(%error, "event listener lost its connection");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(true)
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
}

/// [`DELIVERY_COLUMNS`] of the updated row `d` (the claim's subquery names the same columns).
fn qualified_delivery_columns() -> String {
    DELIVERY_COLUMNS
        .split(", ")
        .map(|column| format!("d.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}
