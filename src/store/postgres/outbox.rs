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
