//! [`DetectionStore`] on Postgres: the detector's log: rollups to step, checkpoint and snapshot, incidents and expectations written.

use super::*;
use crate::store::expectations;
use crate::store::DetectionStore;

#[async_trait]
impl DetectionStore for PostgresStore {
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
        let rows: Vec<MinuteCount> = sqlx::query_as(
            "select minute, service, country, city, count from rollups
             where minute >= $1 and minute < $2
             order by minute, service, country, city",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(sum_adjacent(
            rows,
            |a, b| {
                (a.minute, &a.service, &a.country, &a.city)
                    == (b.minute, &b.service, &b.country, &b.city)
            },
            |r| &mut r.count,
        ))
    }

    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cleared = expectations::clear::<Postgres>(&mut tx, from, to).await?;
        tx.commit().await?;
        Ok(cleared)
    }

    async fn insert_recomputed_expectations(
        &self,
        recomputed: &[Expectation],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        expectations::merge::<Postgres>(&mut tx, recomputed, expectations::Stored::Refuse).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        steps::checkpoint(&self.pool).await
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        steps::replace_incidents::<Postgres>(&mut tx, write).await?;
        expectations::merge::<Postgres>(
            &mut tx,
            write.expectations,
            expectations::Stored::Overwrite,
        )
        .await?;
        steps::advance_detector::<Postgres>(&mut tx, write).await?;
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
}
