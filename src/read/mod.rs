//! The read side, typed: each query a type, each answer a plain struct, and one [`ReadError`].
//!
//! The API turns HTTP into these queries and the answers back into JSON; the pages and the CLI
//! read through the same functions. Request work reads through a [`Reads`] handle, which gives
//! every call the same deadline (`database.query_timeout_ms`): the one place a request's store
//! work is timed. The functions of [`counts`], [`regions`], [`services`] and [`incidents`] take
//! the store's read role directly, for the CLI and tests.

pub mod counts;
pub mod edits;
pub mod incidents;
pub mod regions;
pub mod replica;
pub mod services;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::buckets::TimeRange;
use crate::domain::incidents::{Incident, IncidentQuery};
use crate::domain::report::{Catalog, FieldError};
use crate::domain::retention::Retention;
use crate::domain::series::SeriesKey;
use crate::store::{Checkpoint, Store, StoreError};

/// What the read side reads through: the store's read role, and one of its answers.
pub use crate::store::{ProblemCount, ReadStore};

/// Why a read has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query asks for something that cannot be answered; each field at fault, named.
    #[error("invalid query: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The store could not be reached or did not answer within the deadline: retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store failed otherwise (a bug or corrupt data, not the client's doing).
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> ReadError {
        match error {
            StoreError::Unavailable(detail) => ReadError::Unavailable(detail),
            other => ReadError::Failed(other.to_string()),
        }
    }
}

/// The read side for request work: the store, and the deadline each call must meet.
///
/// A stalled database (stopped, or alive but silent) becomes a fast [`ReadError::Unavailable`]
/// instead of a hung request: the pool's acquire timeout covers only waiting for a connection,
/// and a server-side `statement_timeout` cannot fire in a server that is not running. Dropping
/// a call's future is safe: sqlx tests a connection that comes back mid-query before reusing it.
#[derive(Clone)]
pub struct Reads {
    store: Arc<dyn Store>,
    /// A read replica, read from while it is fresh (`database.read_url`).
    replica: Option<Arc<replica::Replica>>,
    deadline: Duration,
    /// What retention keeps: a counts read finer than the coarse tiers before the minutes
    /// kept is refused rather than answered with zeros.
    retention: Retention,
}

impl Reads {
    /// The read side of `store`, every read within `deadline`, as if retention kept everything.
    pub fn new(store: Arc<dyn Store>, deadline: Duration) -> Reads {
        Reads {
            store,
            replica: None,
            deadline,
            retention: Retention::FOREVER,
        }
    }

    /// The same reads, from `replica` while it is fresh (queries, not checkpoint or ping).
    pub fn with_replica(self, replica: replica::Replica) -> Reads {
        Reads {
            replica: Some(Arc::new(replica)),
            ..self
        }
    }

    /// `read` against the replica while it is fresh (noting its data's age for the answer),
    /// else against the primary; a replica that fails is left for the primary at once.
    async fn routed<T, F>(&self, read: impl Fn(Arc<dyn Store>) -> F) -> Result<T, ReadError>
    where
        F: Future<Output = Result<T, ReadError>>,
    {
        if let Some(replica) = &self.replica {
            if let Some(age) = replica.fresh_age(self.store.as_ref()).await {
                match self.within(read(replica.store().clone())).await {
                    Err(ReadError::Unavailable(detail)) => {
                        tracing::warn!(%detail, "the read replica failed; reading from the primary");
                        replica.forget();
                    }
                    answer => {
                        if answer.is_ok() {
                            replica::note_data_age(age);
                        }
                        return answer;
                    }
                }
            }
        }
        self.within(read(self.store.clone())).await
    }

    /// The same reads, knowing what `retention` keeps.
    pub fn keeping(self, retention: Retention) -> Reads {
        Reads { retention, ..self }
    }

    /// `call`'s answer, or `Unavailable` once the deadline has passed without one.
    async fn within<T, E: Into<ReadError>>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ReadError> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(answer) => answer.map_err(Into::into),
            Err(_) => Err(ReadError::Unavailable(format!(
                "the database did not answer within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }

    /// [`counts::counts`] within the deadline.
    pub async fn counts(
        &self,
        query: &counts::CountsQuery,
        now: DateTime<Utc>,
    ) -> Result<counts::CountsRead, ReadError> {
        let minutes_from = self.retention.cutoffs(now).minute_rollups_from;
        self.routed(|store| async move {
            counts::counts(store.as_ref(), query, now, minutes_from).await
        })
        .await
    }

    /// [`regions::regions`] within the deadline.
    pub async fn regions(
        &self,
        query: &regions::RegionsQuery,
        now: DateTime<Utc>,
    ) -> Result<regions::RegionsRead, ReadError> {
        self.routed(|store| async move { regions::regions(store.as_ref(), query, now).await })
            .await
    }

    /// [`services::services`] within the deadline.
    pub async fn services(
        &self,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<Vec<services::ServiceRead>, ReadError> {
        self.routed(|store| async move { services::services(store.as_ref(), catalog, now).await })
            .await
    }

    /// [`incidents::list`] within the deadline.
    pub async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, ReadError> {
        self.routed(|store| async move { incidents::list(store.as_ref(), query).await })
            .await
    }

    /// [`incidents::page`] within the deadline.
    pub async fn incident_page(
        &self,
        query: &IncidentQuery,
    ) -> Result<incidents::IncidentPageRead, ReadError> {
        self.routed(|store| async move { incidents::page(store.as_ref(), query).await })
            .await
    }

    /// [`incidents::incident`] within the deadline.
    pub async fn incident(&self, id: Uuid) -> Result<Option<Incident>, ReadError> {
        self.routed(|store| async move { incidents::incident(store.as_ref(), id).await })
            .await
    }

    /// Counted reports of `series` over `range`.
    pub async fn total(&self, series: &SeriesKey, range: TimeRange) -> Result<i64, ReadError> {
        // One bucket longer than the range: its count in at most two buckets.
        let bucket_seconds = (range.to - range.from).num_seconds().max(1) * 2;
        let buckets = self
            .routed(|store| async move { Ok(store.counts(series, range, bucket_seconds).await?) })
            .await?;
        Ok(buckets.iter().map(|b| b.count).sum())
    }

    /// Counted reports of `series` over `range` per problem kind, by kind.
    pub async fn problems(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, ReadError> {
        self.routed(|store| async move { Ok(store.problem_counts(series, range).await?) })
            .await
    }

    /// The live detector's checkpoint, if it has one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, ReadError> {
        self.within(self.store.checkpoint()).await
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), ReadError> {
        self.within(self.store.ping()).await
    }
}
