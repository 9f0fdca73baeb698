//! [`CoordinationStore`] on SQLite: migrations, the ping, live events across processes and the detector leader's lock.

use super::*;
use crate::store::CoordinationStore;

#[async_trait]
impl CoordinationStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn notify(&self, _payload: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError> {
        Ok(None)
    }

    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        Ok(Some(Box::new(SoleProcess)))
    }
}
