//! [`CatalogStore`] on SQLite: the service catalog and admin actions on incidents.

use super::*;
use crate::store::CatalogStore;

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let next: i64 = sqlx::query_scalar("select coalesce(max(position), -1) + 1 from services")
            .fetch_one(&mut *tx)
            .await?;
        for (offset, (slug, name)) in services.iter().enumerate() {
            sqlx::query(
                "insert into services (slug, name, enabled, position, updated_at)
                 values (?, ?, 1, ?, ?) on conflict (slug) do nothing",
            )
            .bind(slug)
            .bind(name)
            .bind(next + offset as i64)
            .bind(at.timestamp())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        Ok(sqlx::query_as(sql::SERVICES)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("select 1 from services where slug = ?")
            .bind(&service.slug)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "insert into services (slug, name, enabled, position, updated_at)
             values (?1, ?2, ?3, (select coalesce(max(position), -1) + 1 from services), ?4)
             on conflict (slug) do update
             set name = excluded.name, enabled = excluded.enabled, updated_at = excluded.updated_at",
        )
        .bind(&service.slug)
        .bind(&service.name)
        .bind(service.enabled)
        .bind(at.timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored.is_none())
    }

    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let query = sql::act_on_incident::<Sqlite>(id, action, at);
        if query.execute(&self.writer).await?.rows_affected() == 0 {
            return Ok(None);
        }
        let row: Option<IncidentRow> = sqlx::query_as(sql::incident_by_id())
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.map(Incident::try_from).transpose()
    }
}
