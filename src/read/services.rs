//! `services`: the catalog, each service with its state now and its reports of the last day.

use chrono::{DateTime, TimeDelta, Utc};

use super::ReadError;
use crate::domain::buckets::TimeRange;
use crate::domain::incidents::Status;
use crate::domain::report::Catalog;
use crate::domain::series::SeriesKey;
use crate::store::{IncidentQuery, ReadStore};

/// A service's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// No incident of the service is open.
    Normal,
    /// At least one incident of the service (anywhere) is open.
    Incident,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Normal => "normal",
            ServiceState::Incident => "incident",
        }
    }
}

/// One catalog entry as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRead {
    pub slug: String,
    pub name: String,
    pub state: ServiceState,
    pub open_incidents: usize,
    /// Counted reports worldwide in the 24 hours before now.
    pub reports_24h: i64,
}

/// Every service of `catalog`, in catalog order, at `now`.
pub async fn services(
    store: &dyn ReadStore,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<Vec<ServiceRead>, ReadError> {
    let open = store
        .incidents(&IncidentQuery {
            status: Some(Status::Open),
            limit: 10_000,
            ..IncidentQuery::default()
        })
        .await?;
    let mut services = Vec::new();
    for service in catalog.services() {
        let slug = service.slug.as_str();
        // One bucket longer than the day: the day's count in at most two buckets.
        let day = store
            .counts(
                &SeriesKey::global(slug),
                TimeRange::new(now - TimeDelta::days(1), now),
                86_400 * 2,
            )
            .await?;
        let open_incidents = open.iter().filter(|i| i.service == slug).count();
        services.push(ServiceRead {
            slug: slug.to_owned(),
            name: service.name.clone(),
            state: if open_incidents > 0 {
                ServiceState::Incident
            } else {
                ServiceState::Normal
            },
            open_incidents,
            reports_24h: day.iter().map(|b| b.count).sum(),
        });
    }
    Ok(services)
}
