//! [`DetectionStore`] on Postgres: the detector's log: rollups to step, checkpoint and snapshot, incidents and expectations written.

use super::*;
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
}
