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
        let rows: Vec<SqliteDelivery> = claim.build_query_as().fetch_all(&self.writer).await?;
        let mut claimed = rows
            .into_iter()
            .map(SqliteDelivery::into_delivery)
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
             set status = ?3, attempts = attempts + 1, last_attempt_at = ?4, last_error = ?5,
                 next_attempt_at = coalesce(?6, next_attempt_at), finished_at = ?7
             where event_id = ?1 and endpoint = ?2 and status = 'pending'",
        )
        .bind(event_id)
        .bind(endpoint)
        .bind(columns.status.as_str())
        .bind(at.timestamp())
        .bind(columns.error)
        .bind(columns.next_attempt_at.map(|t| t.timestamp()))
        .bind(columns.finished_at.map(|t| t.timestamp()))
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
        let expired = sqlx::query(
            "update webhook_deliveries
             set status = 'failed', finished_at = ?2,
                 last_error = coalesce(last_error, 'never attempted')
             where status = 'pending' and created_at < ?1",
        )
        .bind(give_up_before.timestamp())
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("delete from webhook_deliveries where status <> 'pending' and finished_at < ?")
            .bind(forget_before.timestamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<SqliteDelivery> = sqlx::query_as(&format!(
            "select {DELIVERY_COLUMNS} from webhook_deliveries
             order by occurred_at, event_id, endpoint
             limit ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(SqliteDelivery::into_delivery)
            .collect()
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("select count(*) from webhook_deliveries where status = 'pending'")
                .fetch_one(&self.reader)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
