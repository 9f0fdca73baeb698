//! [`OutboxStore`] on Postgres: webhook deliveries: claimed, attempted, expired, listed.

use super::*;
use crate::store::OutboxStore;

#[async_trait]
impl OutboxStore for PostgresStore {
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
        rows::claimed(rows)
    }

    async fn record_webhook_attempt(
        &self,
        event_id: Uuid,
        endpoint: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        sql::record_attempt::<Postgres>(event_id, endpoint, at, attempt)
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
        steps::expire_deliveries(&self.pool, give_up_before, forget_before, now).await
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sql::deliveries())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows::deliveries(rows)
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::PENDING_DELIVERIES)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
