//! [`OutboxStore`] on SQLite: webhook deliveries: claimed, attempted, expired, listed.

use super::*;
use crate::store::OutboxStore;

#[async_trait]
impl OutboxStore for SqliteStore {
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
        let rows: Vec<DeliveryRow> = claim.build_query_as().fetch_all(&self.writer).await?;
        rows::claimed(rows)
    }

    async fn record_webhook_attempt(
        &self,
        event_id: Uuid,
        endpoint: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        sql::record_attempt::<Sqlite>(event_id, endpoint, at, attempt)
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
        let expired = sqlx::query(sql::EXPIRE_DELIVERIES)
            .bind(give_up_before.timestamp())
            .bind(now.timestamp())
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::FORGET_DELIVERIES)
            .bind(forget_before.timestamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(expired.rows_affected())
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sql::deliveries())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows::deliveries(rows)
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::PENDING_DELIVERIES)
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
