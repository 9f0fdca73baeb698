//! [`ReportStore`] on SQLite: reports in: the batch insert, the reporter secret, reports by id and the upkeep of counts.

use super::*;
use crate::domain::buckets::{start_of_day, Tier};
use crate::domain::counting::{tier_increments, RollupKey};
use crate::domain::retention::Cutoffs;
use crate::store::{Expired, ReportStore};

/// Rows one retention delete takes, so the single writer is never held for long.
const DELETE_BATCH: u64 = 5_000;

#[async_trait]
impl ReportStore for SqliteStore {
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

    async fn prepare_days(&self, _days: &[NaiveDate]) -> Result<u32, StoreError> {
        // One table per kind: any day can be stored.
        Ok(0)
    }

    async fn apply_retention(&self, cutoffs: &Cutoffs) -> Result<Option<Expired>, StoreError> {
        let pool = &self.writer;
        let mut rows = 0;
        if let Some(day) = cutoffs.reports_from {
            let before = start_of_day(day).timestamp_millis();
            let reports = ("reports", "id", "received_at");
            rows += steps::delete_before(pool, reports, before, DELETE_BATCH).await?;
        }
        if let Some(day) = cutoffs.minute_rollups_from {
            let minutes = ("rollups_minute", "service, country, city, minute", "minute");
            let before = start_of_day(day).timestamp();
            rows += steps::delete_before(pool, minutes, before, DELETE_BATCH).await?;
        }
        if let Some(day) = cutoffs.coarse_rollups_from {
            let before = start_of_day(day).timestamp();
            for tier in [sql::QUARTER_ROWS, sql::HOUR_ROWS] {
                rows += steps::delete_before(pool, tier, before, DELETE_BATCH).await?;
            }
        }
        // Ids stay with their reports (the primary key): nothing to forget apart.
        Ok(Some(Expired {
            days_dropped: 0,
            rows_deleted: rows,
        }))
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
        add_counts(&mut tx, "rollups_minute", "minute", &increments).await?;
        for (table, column, tier) in [
            ("rollups_quarter", "quarter", Tier::Quarter),
            ("rollups_hour", "hour", Tier::Hour),
        ] {
            add_counts(&mut tx, table, column, &tier_increments(&increments, tier)).await?;
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
        let n: i64 = sqlx::query_scalar(sql::REPORT_COUNT)
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(sql::FORGET_NETWORK_COUNTS)
            .bind(before.timestamp())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

/// Adds `increments` to the rows of one rollup tier (`table`, its time in `column`).
async fn add_counts(
    tx: &mut Transaction<'_, Sqlite>,
    table: &str,
    column: &str,
    increments: &[(RollupKey<'_>, i64)],
) -> Result<(), StoreError> {
    for chunk in increments.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "insert into {table} (service, country, city, {column}, count) "
        ));
        query.push_values(chunk, |mut row, ((service, country, city, at), n)| {
            row.push_bind(*service)
                .push_bind(*country)
                .push_bind(*city)
                .push_bind(at.timestamp())
                .push_bind(*n);
        });
        query.push(format!(
            " on conflict (service, country, city, {column}) do update set count = {table}.count + excluded.count"
        ));
        query.build().execute(&mut **tx).await?;
    }
    Ok(())
}
