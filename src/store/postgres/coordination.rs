//! [`CoordinationStore`] on Postgres: migrations, the ping, live events across processes and the detector leader's lock.

use sqlx::migrate::Migrator;

use super::*;
use crate::store::CoordinationStore;

/// The Postgres migrations, built into the binary.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

#[async_trait]
impl CoordinationStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        steps::migrate(&MIGRATOR, &self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        steps::ping(&self.pool).await
    }

    async fn notify(&self, payload: &str) -> Result<bool, StoreError> {
        sqlx::query("select pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Some(Box::new(Notifications(listener))))
    }

    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        // A connection of its own: the lock lives as long as this session, and a pool would
        // hand the session to other work.
        let mut connection = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(DETECTOR_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if !locked {
            let _ = connection.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLeadership {
            connection: Some(connection),
        })))
    }
}
