//! The Postgres store: production backend; each batch is a handful of `UNNEST` statements in one transaction.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    dedup_candidates, outcomes, rollup_increments, ConnectOptions, NewReport, Outcome, Rollup,
    Store, StoreError, StoredReport,
};

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
async fn stored_outcomes(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("select id, counted from reports where id = any($1)")
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts reports with `counted` set as given, skipping any that conflict; returns the ids inserted.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[&NewReport],
    counted: bool,
) -> Result<HashSet<Uuid>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into reports (id, received_at, service, country, city, problem, fingerprint, dedup_window, counted)
         select id, received_at, service, country, nullif(city, ''), problem, fingerprint, dedup_window, $9
         from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::uuid[], $8::timestamptz[])
              as t(id, received_at, service, country, city, problem, fingerprint, dedup_window)
         on conflict do nothing
         returning id",
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.received_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.service.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.country.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.city.unwrap_or("")).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.problem.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| Uuid::from_bytes(r.fingerprint.0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.dedup_window_start).collect::<Vec<_>>())
    .bind(counted)
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted.into_iter().collect())
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
        let mut tx = self.pool.begin().await?;
        // First the reports that may count: the unique key on (service, fingerprint, window)
        // admits only a reporter's first; a conflict on it (or on the id) inserts nothing.
        let candidates = dedup_candidates(reports);
        let counted = insert_rows(&mut tx, &candidates, true).await?;
        // Then everything else, uncounted; what still conflicts is an id already stored.
        let rest: Vec<&NewReport> = reports
            .iter()
            .filter(|r| !counted.contains(&r.id))
            .collect();
        let uncounted = insert_rows(&mut tx, &rest, false).await?;
        let replays: Vec<Uuid> = rest
            .iter()
            .map(|r| r.id)
            .filter(|id| !uncounted.contains(id))
            .collect();
        let previously_stored = stored_outcomes(&mut tx, &replays).await?;

        let increments = rollup_increments(
            candidates
                .iter()
                .copied()
                .filter(|r| counted.contains(&r.id)),
        );
        if !increments.is_empty() {
            sqlx::query(
                "insert into rollups_minute (service, country, city, minute, count)
                 select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[])
                 on conflict (service, country, city, minute)
                 do update set count = rollups_minute.count + excluded.count",
            )
            .bind(increments.iter().map(|((s, _, _, _), _)| *s).collect::<Vec<_>>())
            .bind(increments.iter().map(|((_, c, _, _), _)| *c).collect::<Vec<_>>())
            .bind(increments.iter().map(|((_, _, city, _), _)| *city).collect::<Vec<_>>())
            .bind(increments.iter().map(|((_, _, _, m), _)| *m).collect::<Vec<_>>())
            .bind(increments.iter().map(|(_, n)| *n).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        tx.commit().await?;
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
}
