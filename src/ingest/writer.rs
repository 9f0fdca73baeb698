//! The batch writer: takes whatever is queued, commits it in one transaction, answers each submitter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;

use super::Job;
use crate::runtime::metrics::METRICS;
use crate::store::{NewReport, Outcome, Store, StoreError};

/// A consumer of the ingest queue; `ingest.writers` of them share it.
pub(super) struct BatchWriter {
    pub store: Arc<dyn Store>,
    /// Shared by the writers: whoever is free takes everything queued.
    pub jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pub max_batch_reports: usize,
    pub batch_timeout: Duration,
}

impl BatchWriter {
    /// Commits batches until the queue is closed and drained.
    pub async fn run(self) {
        while let Some((jobs, size)) = self.take_batch().await {
            self.commit(jobs, size).await;
        }
        tracing::debug!("batch writer drained its queue and stopped");
    }

    /// Waits for a job, then takes whatever else is queued, up to the batch limit; `None`
    /// once the queue is closed and empty.
    async fn take_batch(&self) -> Option<(Vec<Job>, usize)> {
        let mut queue = self.jobs.lock().await;
        let first = queue.recv().await?;
        let mut size = first.reports.len();
        let mut jobs = vec![first];
        while size < self.max_batch_reports {
            match queue.try_recv() {
                Ok(job) => {
                    size += job.reports.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        Some((jobs, size))
    }

    async fn commit(&self, jobs: Vec<Job>, size: usize) {
        let mut batch: Vec<NewReport> = Vec::with_capacity(size);
        // A retry can land in the same batch as its original: store each id once and give
        // every later copy the first one's outcome as a replay.
        let mut first_index: HashMap<Uuid, usize> = HashMap::with_capacity(size);
        let mut slots: Vec<(usize, bool)> = Vec::with_capacity(size);
        for job in &jobs {
            for report in &job.reports {
                match first_index.get(&report.id) {
                    Some(&i) => slots.push((i, true)),
                    None => {
                        first_index.insert(report.id, batch.len());
                        slots.push((batch.len(), false));
                        batch.push(report.clone());
                    }
                }
            }
        }

        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(
            self.batch_timeout,
            self.store
                .insert_reports(&batch, crate::runtime::clock::now()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the batch did not commit within {} ms",
                self.batch_timeout.as_millis()
            ))),
        };
        match result {
            Ok(outcomes) => {
                METRICS.batch_reports.observe(batch.len() as f64);
                METRICS
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::trace!(
                    reports = batch.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                let mut slot = slots.into_iter();
                for job in jobs {
                    let answers: Vec<Outcome> = slot
                        .by_ref()
                        .take(job.reports.len())
                        .map(|(i, repeated)| Outcome {
                            replay: outcomes[i].replay || repeated,
                            ..outcomes[i]
                        })
                        .collect();
                    for answer in &answers {
                        METRICS.report(match (answer.replay, answer.counted) {
                            (true, _) => "replay",
                            (false, true) => "counted",
                            (false, false) => "duplicate",
                        });
                    }
                    // A submitter that gave up waiting has dropped its receiver; its reports are stored anyway.
                    let _ = job.reply.send(Ok(answers));
                }
            }
            Err(error) => {
                tracing::warn!(reports = batch.len(), %error, "batch failed; nothing of it was committed");
                let error = Arc::new(error);
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
