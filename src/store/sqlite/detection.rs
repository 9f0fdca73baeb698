//! [`DetectionStore`] on SQLite: the detector's log: rollups to step, checkpoint and snapshot, incidents and expectations written.

use super::*;
use crate::store::DetectionStore;

#[async_trait]
impl DetectionStore for SqliteStore {
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
}
