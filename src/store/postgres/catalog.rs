//! [`CatalogStore`] on Postgres: the service catalog and admin actions on incidents.

use super::*;
use crate::store::CatalogStore;
use crate::store::ReadStore;

#[async_trait]
impl CatalogStore for PostgresStore {
    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Replicas starting at once seed one after the other, so positions stay in order.
        sqlx::query("lock table services in share row exclusive mode")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into services (slug, name, enabled, position, updated_at)
             select t.slug, t.name, true, (select coalesce(max(position), -1) from services) + t.ord, $3
             from unnest($1::text[], $2::text[]) with ordinality as t(slug, name, ord)
             on conflict (slug) do nothing",
        )
        .bind(services.iter().map(|(slug, _)| slug.as_str()).collect::<Vec<_>>())
        .bind(services.iter().map(|(_, name)| name.as_str()).collect::<Vec<_>>())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        Ok(sqlx::query_as(sql::SERVICES).fetch_all(&self.pool).await?)
    }

    async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // xmax is 0 only on a row this statement inserted.
        let inserted: bool = sqlx::query_scalar(
            "insert into services (slug, name, enabled, position, updated_at)
             values ($1, $2, $3, (select coalesce(max(position), -1) + 1 from services), $4)
             on conflict (slug) do update
             set name = excluded.name, enabled = excluded.enabled, updated_at = excluded.updated_at
             returning xmax = 0",
        )
        .bind(&service.slug)
        .bind(&service.name)
        .bind(service.enabled)
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        Ok(inserted)
    }

    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let query = sql::act_on_incident::<Postgres>(id, action, at);
        if query.execute(&self.pool).await?.rows_affected() == 0 {
            return Ok(None);
        }
        self.incident(id).await
    }
}
