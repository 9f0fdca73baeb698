//! `incidents`: incidents newest first, a page at a time, and one by id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ReadError;
use crate::domain::incidents::{Incident, IncidentQuery};
use crate::store::ReadStore;

/// A page of incidents and, when another follows, the (started_at, id) it continues after.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentPageRead {
    pub incidents: Vec<Incident>,
    pub next: Option<(DateTime<Utc>, Uuid)>,
}

/// The incidents `query` asks for, newest first, at most `query.limit`.
pub async fn list(
    store: &dyn ReadStore,
    query: &IncidentQuery,
) -> Result<Vec<Incident>, ReadError> {
    Ok(store.incidents(query).await?)
}

/// A page of `query.limit` incidents, and where the next page starts if there is one.
pub async fn page(
    store: &dyn ReadStore,
    query: &IncidentQuery,
) -> Result<IncidentPageRead, ReadError> {
    let limit = query.limit;
    // One more than asked tells whether another page follows.
    let one_more = IncidentQuery {
        limit: limit + 1,
        ..query.clone()
    };
    let mut incidents = store.incidents(&one_more).await?;
    let next = if incidents.len() > limit as usize {
        incidents.truncate(limit as usize);
        incidents.last().map(|i| (i.started_at, i.id))
    } else {
        None
    };
    Ok(IncidentPageRead { incidents, next })
}

/// One incident by id.
pub async fn incident(store: &dyn ReadStore, id: Uuid) -> Result<Option<Incident>, ReadError> {
    Ok(store.incident(id).await?)
}
