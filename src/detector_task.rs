//! The live detector as a task `serve` can pause: an admin's redetect stops it (releasing the leader lock), runs [`detector::redetect`], and starts it again, so the two never write at once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::config::DetectorSettings;
use crate::detector::{self, DetectError, RedetectSummary};
use crate::events::EventBus;
use crate::report::LiveCatalog;
use crate::store::Store;
use crate::webhooks::Outbox;

/// What the live detector needs, and the task while it runs.
pub struct DetectorTask {
    store: Arc<dyn Store>,
    catalog: Arc<LiveCatalog>,
    settings: DetectorSettings,
    events: EventBus,
    outbox: Outbox,
    /// Whether `serve` runs the live detector at all (`detector.enabled`).
    live: bool,
    /// The running task and its stop signal; locked for the whole of a redetect, so there is
    /// one at a time.
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl DetectorTask {
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<LiveCatalog>,
        settings: DetectorSettings,
        events: EventBus,
        outbox: Outbox,
    ) -> DetectorTask {
        DetectorTask {
            live: settings.enabled,
            store,
            catalog,
            settings,
            events,
            outbox,
            running: Mutex::new(None),
        }
    }

    /// Starts the live detector, if it is enabled and not running.
    pub async fn start(&self) {
        let mut running = self.running.lock().await;
        self.start_locked(&mut running);
    }

    fn start_locked(&self, running: &mut Option<(watch::Sender<bool>, JoinHandle<()>)>) {
        if !self.live || running.is_some() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(detector::run(
            self.store.clone(),
            self.catalog.current(),
            self.settings.clone(),
            self.events.clone(),
            self.outbox.clone(),
            stopped,
        ));
        *running = Some((stop, task));
    }

    /// Stops the live detector and waits until it has (its lock released).
    pub async fn stop(&self) -> Result<(), tokio::task::JoinError> {
        let mut running = self.running.lock().await;
        Self::stop_locked(&mut running).await
    }

    async fn stop_locked(
        running: &mut Option<(watch::Sender<bool>, JoinHandle<()>)>,
    ) -> Result<(), tokio::task::JoinError> {
        match running.take() {
            Some((stop, task)) => {
                let _ = stop.send(true);
                task.await
            }
            None => Ok(()),
        }
    }

    /// Recomputes the incidents of `[from, to)` with the live detector paused, then resumes it
    /// (from the state the redetect stored). On Postgres this fails with `NotLeader` while
    /// another replica runs the detector.
    pub async fn redetect(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<RedetectSummary, DetectError> {
        let mut running = self.running.lock().await;
        if let Err(error) = Self::stop_locked(&mut running).await {
            tracing::error!(%error, "the live detector failed while stopping for a redetect");
        }
        let result = detector::redetect(
            self.store.clone(),
            self.catalog.current(),
            &self.settings,
            from,
            to,
            now,
        )
        .await;
        self.start_locked(&mut running);
        result
    }
}
