//! Ingest: a bounded queue of validated reports and the one batch writer that group-commits them.
//!
//! Handlers `submit` and await their batch's commit; a writer takes whatever is queued (up
//! to `max_batch_reports`) as soon as it is free, commits it in one transaction, and answers
//! every waiting submitter. `writers` of them share the queue, so one batch can be inserted
//! while another waits for its commit. It never waits for a batch to fill: under load batches grow by
//! themselves, and when idle a lone report commits at once.

mod fingerprint;
pub mod import;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Outcome, Store, StoreError};

pub use crate::store::{ImportHints, NetworkQuota, NewReport};
pub use fingerprint::{
    fingerprint_of_reporter, fingerprint_with, network_fingerprint_with, Fingerprinter,
};

/// Why a submission was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The queue is full; the reports were not taken.
    #[error("the ingest queue is full")]
    QueueFull,
    /// The batch did not commit within the commit timeout; it may still commit.
    #[error("the store did not commit in time")]
    CommitTimeout,
    /// The store failed the batch; nothing of it was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer has stopped (the service is shutting down).
    #[error("the service is shutting down")]
    Closed,
}

/// Queue and writer limits.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub queue_capacity: usize,
    /// Batch writers sharing the queue: one transaction in flight per writer.
    pub writers: usize,
    pub max_batch_reports: usize,
    pub commit_timeout: Duration,
    pub batch_timeout: Duration,
    pub dedup_window_minutes: u32,
}

/// A submission waiting in the queue: its reports and where to send their outcomes.
struct Job {
    reports: Vec<NewReport>,
    reply: oneshot::Sender<Result<Vec<Outcome>, Arc<StoreError>>>,
}

/// The submitting side of the ingest queue; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
    /// For imports, which write their large batches past the queue.
    store: Arc<dyn Store>,
    commit_timeout: Duration,
    dedup_window_seconds: i64,
}

impl Ingest {
    /// Starts the batch writer over `store`; it runs until every `Ingest` clone is dropped,
    /// then commits what is still queued and ends.
    pub fn start(store: Arc<dyn Store>, options: &IngestOptions) -> (Ingest, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(options.queue_capacity);
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        let writers: Vec<JoinHandle<()>> = (0..options.writers.max(1))
            .map(|_| {
                let writer = writer::BatchWriter {
                    store: store.clone(),
                    jobs: jobs.clone(),
                    max_batch_reports: options.max_batch_reports,
                    batch_timeout: options.batch_timeout,
                };
                tokio::spawn(writer.run())
            })
            .collect();
        let handle = tokio::spawn(async move {
            for writer in writers {
                if let Err(error) = writer.await {
                    tracing::error!(%error, "a batch writer failed");
                }
            }
        });
        let ingest = Ingest {
            queue,
            store,
            commit_timeout: options.commit_timeout,
            dedup_window_seconds: i64::from(options.dedup_window_minutes) * 60,
        };
        (ingest, handle)
    }

    /// Submissions waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Queues reports (refusing at once when the queue is full) and waits, at most the commit
    /// timeout, until the transaction that stores them has committed.
    pub async fn submit(&self, reports: Vec<NewReport>) -> Result<Vec<Outcome>, IngestError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Job { reports, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IngestError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => IngestError::Closed,
            })?;
        let outcome = tokio::time::timeout(self.commit_timeout, outcome)
            .await
            .map_err(|_| IngestError::CommitTimeout)?;
        settle(outcome)
    }

    /// Queues reports, waiting for room if the queue is full, and waits without a time limit
    /// for their commit: for bulk import, which keeps several submissions in flight.
    pub async fn submit_waiting_for_room(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<Vec<Outcome>, IngestError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Job { reports, reply })
            .await
            .map_err(|_| IngestError::Closed)?;
        settle(outcome.await)
    }

    /// Stores a batch of history past the queue, the store's fastest way, with the same
    /// outcomes and counts as a submission ([`crate::store::ReportStore::import_reports`]).
    /// `hints`: what the import learnt from its earlier batches of the same lane.
    pub async fn import(
        &self,
        reports: &[NewReport],
        hints: &ImportHints,
    ) -> Result<Vec<Outcome>, IngestError> {
        Ok(self
            .store
            .import_reports(reports, hints, crate::runtime::clock::now())
            .await?)
    }

    /// Which dedup window `at` falls in, counted from the epoch.
    pub fn dedup_window_index(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.dedup_window_seconds)
    }

    /// Start of the dedup window `at` falls in.
    pub fn dedup_window_start(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        crate::domain::buckets::floor_to(at, self.dedup_window_seconds)
    }
}

/// What a submitter gets from its batch's answer; a dropped reply means the writers stopped.
fn settle(
    answer: Result<Result<Vec<Outcome>, Arc<StoreError>>, oneshot::error::RecvError>,
) -> Result<Vec<Outcome>, IngestError> {
    match answer {
        Err(_) => Err(IngestError::Closed),
        Ok(Err(store)) => Err(IngestError::Store(shared_store_error(&store))),
        Ok(Ok(outcomes)) => Ok(outcomes),
    }
}

/// One batch's error reaches every submitter in it; each gets its own copy.
fn shared_store_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(detail) => StoreError::Unavailable(detail.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
