//! The few writes the admin API makes (the catalog, an incident's note or resolution), under
//! the same deadline as the reads, so the API reaches the store only through this layer.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ReadError, Reads};
use crate::domain::incidents::Incident;
use crate::domain::report::{Catalog, LiveCatalog};

pub use crate::store::{IncidentAction, ServiceRecord};

/// The public catalog: the enabled services, in catalog order.
pub fn catalog_of(records: &[ServiceRecord]) -> Catalog {
    Catalog::new(
        records
            .iter()
            .filter(|r| r.enabled)
            .map(|r| (r.slug.as_str(), r.name.as_str())),
    )
}

impl Reads {
    /// The stored catalog, in catalog order (enabled and disabled).
    pub async fn stored_services(&self) -> Result<Vec<ServiceRecord>, ReadError> {
        self.within(self.store.services()).await
    }

    /// Replaces the in-memory catalog with the stored one (after a change, and periodically on
    /// every replica, since another replica's admin may have changed it).
    pub async fn reload_catalog(&self, catalog: &LiveCatalog) -> Result<(), ReadError> {
        let records = self.stored_services().await?;
        catalog.replace(catalog_of(&records));
        Ok(())
    }

    /// Stores a service's name and state at `at`; true when it was not stored before.
    pub async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, ReadError> {
        self.within(self.store.put_service(service, at)).await
    }

    /// Annotates or resolves an incident at `at`; the incident as it now stands, or None.
    pub async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, ReadError> {
        self.within(self.store.act_on_incident(id, action, at))
            .await
    }
}
