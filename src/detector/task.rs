//! The live detector as a task: [`run`] becomes the leader (retrying while another replica is)
//! and drives a [`LiveDetector`] with a thin `select!` loop, the only code of the runner that
//! reads the clock; [`DetectorTask`] is that task as `serve` holds it, which an admin's
//! redetect stops (releasing the leader lock), runs [`fn@redetect`], and starts again, so the two
//! never write at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use super::{redetect, DetectError, LiveContext, LiveDetector, RedetectSummary, Tick};
use crate::config::DetectorSettings;
use crate::domain::report::LiveCatalog;
use crate::domain::retention::Retention;
use crate::runtime::events::EventBus;
use crate::runtime::webhooks::Outbox;
use crate::store::{Leadership, Store};

/// What the live detector needs, and the task while it runs.
pub struct DetectorTask {
    store: Arc<dyn Store>,
    catalog: Arc<LiveCatalog>,
    settings: DetectorSettings,
    events: EventBus,
    outbox: Outbox,
    /// Whether `serve` runs the live detector at all (`detector.enabled`).
    live: bool,
    /// What retention keeps: a redetect whose replay starts before the minutes kept is refused.
    retention: Retention,
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
            retention: Retention::FOREVER,
            running: Mutex::new(None),
        }
    }

    /// The same task, knowing what `retention` keeps.
    pub fn keeping(self, retention: Retention) -> DetectorTask {
        DetectorTask { retention, ..self }
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
        let context = LiveContext {
            store: self.store.clone(),
            catalog: self.catalog.current(),
            settings: self.settings.clone(),
            events: self.events.clone(),
            outbox: self.outbox.clone(),
        };
        let task = tokio::spawn(run(context, stopped));
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
        if let Some(reason) = from.and_then(|from| {
            self.retention
                .redetect_refusal(from, self.settings.history_days, now)
        }) {
            return Err(DetectError::BeforeKeptMinutes(reason));
        }
        let mut running = self.running.lock().await;
        if let Err(error) = Self::stop_locked(&mut running).await {
            tracing::error!(%error, "the live detector failed while stopping for a redetect");
        }
        let result = redetect(
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

/// Runs the live detector until `shutdown` turns true: become the leader (retrying while
/// another replica is), resume from the stored state, then each minute process every complete
/// minute after the watermark, announce the changes on `events` and queue them for `outbox`'s
/// webhooks.
pub async fn run(context: LiveContext, mut shutdown: watch::Receiver<bool>) {
    let retry = Duration::from_secs(context.settings.leader_retry_seconds);
    while !*shutdown.borrow() {
        match lead(&context, &mut shutdown).await {
            Ok(()) => {}
            Err(DetectError::NotLeader) => {
                tracing::debug!("another replica runs the detector; retrying");
            }
            Err(error) => {
                tracing::warn!(%error, "detector stopped; restarting from the stored state")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

/// One term as leader: returns when leadership is lost, on a store error, or at shutdown.
async fn lead(
    context: &LiveContext,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DetectError> {
    let Some(mut leadership) = context.store.try_lead_detector().await? else {
        return Err(DetectError::NotLeader);
    };
    tracing::info!("this process now runs the detector");
    let term = serve_term(context, shutdown, leadership.as_mut()).await;
    // Let a standby take over at once rather than when the connection times out.
    leadership.release().await;
    term
}

/// The leader's work until shutdown, a lost lock or a store error: resume, then tick until
/// caught up and sleep until the next minute has settled.
async fn serve_term(
    context: &LiveContext,
    shutdown: &mut watch::Receiver<bool>,
    leadership: &mut dyn Leadership,
) -> Result<(), DetectError> {
    // A rebuild can replay weeks of rollups: shutdown does not wait for it. Stopping it midway
    // loses nothing (a rebuild stores everything in one transaction at its end, a replay each
    // chunk idempotently), and the next start does it again.
    let resume = LiveDetector::resume(context.clone(), crate::runtime::clock::now());
    let mut live = tokio::select! {
        resumed = resume => resumed?,
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if !leadership.still_held().await {
            tracing::warn!("lost the detector lock");
            return Ok(());
        }
        let Tick::CaughtUp { next_due } = live.tick(crate::runtime::clock::now()).await? else {
            continue;
        };
        let wait = (next_due - crate::runtime::clock::now())
            .to_std()
            .unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}
