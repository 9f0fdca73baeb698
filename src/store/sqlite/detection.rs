//! [`DetectionStore`] on SQLite: the detector's log: rollups to step, checkpoint and snapshot, incidents and expectations written.

use super::*;
use crate::store::expectations;
use crate::store::DetectionStore;
use sqlx::Row;

#[async_trait]
impl DetectionStore for SqliteStore {
    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar("select min(minute) from rollups_minute")
            .fetch_one(&self.reader)
            .await?)
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<MinuteRollups, StoreError> {
        let rows = sqlx::query(
            "select minute, service, country, city, count from rollups_minute
             where minute >= ? and minute < ?",
        )
        .bind(from.timestamp())
        .bind(to.timestamp())
        .fetch_all(&self.reader)
        .await?;
        let mut counts = rows::MinuteRollupsBuilder::default();
        // Unchecked: the columns' types are the schema's (as on Postgres).
        for row in &rows {
            counts.push(
                row.try_get_unchecked(0)?,
                row.try_get_unchecked(1)?,
                row.try_get_unchecked(2)?,
                row.try_get_unchecked(3)?,
                row.try_get_unchecked(4)?,
            );
        }
        Ok(counts.finish())
    }

    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let cleared = expectations::clear::<Sqlite>(&mut tx, from, to).await?;
        tx.commit().await?;
        Ok(cleared)
    }

    async fn insert_recomputed_expectations(
        &self,
        recomputed: &[Expectation],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        expectations::merge::<Sqlite>(&mut tx, recomputed, expectations::Stored::Refuse).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        steps::checkpoint(&self.reader).await
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        steps::replace_incidents::<Sqlite>(&mut tx, write).await?;
        expectations::merge::<Sqlite>(&mut tx, write.expectations, expectations::Stored::Overwrite)
            .await?;
        steps::advance_detector::<Sqlite>(&mut tx, write).await?;
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
}
