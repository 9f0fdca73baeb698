//! Wiring: builds the store, the ingest writer, the detector, the webhook deliverer and the router from settings, serves them, and shuts them down in order.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AdminTokens, AppState, ReadCache, SharedState};
use crate::config::{LogFormat, LogSettings, Settings};
use crate::detector::DetectorTask;
use crate::domain::report::{Catalog, LiveCatalog};
use crate::http::pow::ProofOfWork;
use crate::http::{ClientPolicy, Submitter};
use crate::ingest::{Fingerprinter, Ingest, IngestOptions};
use crate::read::edits::catalog_of;
use crate::read::replica::Replica;
use crate::read::Reads;
use crate::runtime::events::{EventBus, Relay};
use crate::runtime::server::{self, ServerLimits};
use crate::runtime::webhooks::deliverer::{self, Deliverer};
use crate::runtime::webhooks::Outbox;
use crate::store::{self, ConnectOptions, Store};
use crate::web::{self, WebState};

/// How often background upkeep runs: settling past minutes' counts, forgetting idle rate-limit
/// buckets and past minutes' network counts, and reloading the catalog another replica's admin
/// call may have changed.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// Upkeep rounds between two applications of retention (and preparations of the coming
/// days): an hour. The first round applies it too.
const RETENTION_EVERY_ROUNDS: u64 = 360;

/// A built service, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    /// What the pages share (the same read side, catalog, ingest path and rate limit).
    pages: WebState,
    /// The store without request timeouts, for the writer, the detector and tests.
    store: Arc<dyn Store>,
    stopping: watch::Sender<bool>,
    writer: JoinHandle<()>,
    limits: ServerLimits,
    /// None when no webhook is configured.
    deliverer: Option<Deliverer>,
    relay: Relay,
    retention: crate::domain::retention::Retention,
}

/// The pool settings of `database.*`.
fn connect_options(settings: &Settings) -> ConnectOptions {
    ConnectOptions {
        max_connections: settings.database.max_connections,
        read_connections: settings.database.read_connections,
        acquire_timeout: settings.database.acquire_timeout(),
    }
}

/// Opens the store named in the settings and applies its migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let options = connect_options(settings);
    let store = store::connect(settings.database.url.expose_secret(), &options)
        .await
        .context("cannot open the database (database.url / DATABASE_URL)")?;
    store.migrate().await.context("cannot apply migrations")?;
    // Today's and the next days' partitions exist before the first report, whatever runs.
    let days = crate::domain::retention::live_days(crate::runtime::clock::now());
    store
        .prepare_days(&days)
        .await
        .context("cannot prepare the storage of the coming days")?;
    Ok(store)
}

/// The catalog as stored, after adding the settings' services it lacks (the stored catalog is
/// what admins change at run time; the settings only seed it).
pub async fn stored_catalog(
    store: &Arc<dyn Store>,
    settings: &Settings,
) -> anyhow::Result<Catalog> {
    let seed: Vec<(String, String)> = settings
        .services
        .iter()
        .map(|s| (s.slug.trim().to_ascii_lowercase(), s.name.clone()))
        .collect();
    store
        .seed_services(&seed, crate::runtime::clock::now())
        .await
        .context("cannot store the service catalog")?;
    let records = store
        .services()
        .await
        .context("cannot read the service catalog")?;
    Ok(catalog_of(&records))
}

/// The catalog the settings list.
pub fn catalog(settings: &Settings) -> Catalog {
    Catalog::new(
        settings
            .services
            .iter()
            .map(|s| (s.slug.as_str(), s.name.as_str())),
    )
}

/// Starts the batch writer over a store with the settings' limits.
pub fn start_ingest(store: Arc<dyn Store>, settings: &Settings) -> (Ingest, JoinHandle<()>) {
    let ingest = &settings.ingest;
    Ingest::start(
        store,
        &IngestOptions {
            queue_capacity: ingest.queue_capacity,
            writers: ingest.writers,
            max_batch_reports: ingest.max_batch_reports,
            commit_timeout: Duration::from_millis(ingest.commit_timeout_ms),
            batch_timeout: Duration::from_millis(ingest.batch_timeout_ms),
            dedup_window_minutes: ingest.dedup_window_minutes,
        },
    )
}

impl App {
    /// Opens the store, migrates, starts the writer and binds the listener.
    pub async fn build(settings: &Settings) -> anyhow::Result<App> {
        let store = open_store(settings).await?;
        // The gazetteer is parsed on first use; do it now rather than in the first request.
        tokio::task::spawn_blocking(|| crate::domain::geo::gazetteer().len()).await?;
        let (ingest, writer) = start_ingest(store.clone(), settings);
        let deliverer = if settings.webhooks.is_empty() {
            None
        } else {
            Some(Deliverer::new(
                store.clone(),
                &settings.webhooks,
                &settings.webhook_delivery,
            )?)
        };
        let (events, relay) = EventBus::start(store.clone()).await;
        let catalog = Arc::new(LiveCatalog::new(stored_catalog(&store, settings).await?));
        let (stopping, stopping_rx) = watch::channel(false);
        let detector = DetectorTask::new(
            store.clone(),
            catalog.clone(),
            settings.detector.clone(),
            events.clone(),
            Outbox::new(&settings.webhooks, &settings.webhook_delivery),
        )
        .keeping(settings.retention.retention());
        // Request work gives up on a stalled database after `database.query_timeout_ms`: reads
        // (and the admin API's edits) through the read layer's deadline, the reporter secret
        // through the fingerprinter's. The writer, detector and deliverer have timeouts of
        // their own.
        let query_timeout = settings.database.query_timeout();
        let mut reads =
            Reads::new(store.clone(), query_timeout).keeping(settings.retention.retention());
        if let Some(read_url) = &settings.database.read_url {
            let replica =
                store::connect_replica(read_url.expose_secret(), &connect_options(settings))
                    .context("cannot open the read replica (database.read_url)")?;
            reads = reads.with_replica(Replica::new(
                replica,
                Duration::from_secs(u64::from(settings.database.max_replica_lag_seconds)),
            ));
        }
        let submitter = Arc::new(Submitter {
            ingest,
            fingerprinter: Arc::new(Fingerprinter::new(store.clone(), query_timeout)),
            proof_of_work: Arc::new(ProofOfWork::new(&settings.proof_of_work)),
            max_counted_per_network_per_minute: settings.abuse.max_counted_per_network_per_minute,
        });
        let clients = Arc::new(ClientPolicy::new(
            settings.http.trusted_proxies.clone(),
            settings.rate_limit.per_ip_per_minute,
            settings.rate_limit.burst,
            settings.rate_limit.max_clients,
        ));
        let pages = WebState {
            reads: reads.clone(),
            catalog: catalog.clone(),
            submitter: submitter.clone(),
            clients: clients.clone(),
        };
        let http = &settings.http;
        let state = AppState::new(SharedState {
            reads,
            submitter,
            catalog,
            clients,
            max_body_bytes: http.max_body_bytes,
            body_read_timeout: Duration::from_millis(http.body_read_timeout_ms),
            request_timeout: Duration::from_millis(http.request_timeout_ms),
            admin: Arc::new(AdminTokens::new(&settings.admin)),
            detector: Arc::new(detector),
            events,
            stopping: stopping_rx,
            read_cache: Arc::new(ReadCache::new(
                Duration::from_secs(settings.http.read_cache_seconds),
                settings.http.read_cache_mebibytes << 20,
            )),
        });
        let listener = server::bind(settings.http.listen)
            .with_context(|| format!("cannot listen on {}", settings.http.listen))?;
        Ok(App {
            listener,
            state,
            pages,
            store,
            stopping,
            writer,
            limits: ServerLimits {
                max_connections: http.max_connections,
                header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
                shutdown_grace: Duration::from_millis(http.shutdown_grace_ms),
            },
            deliverer,
            relay,
            retention: settings.retention.retention(),
        })
    }

    /// The address the service listens on (useful when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store the service writes to.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` resolves, then: stop accepting, finish in-flight requests,
    /// commit everything queued, and return.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            pages,
            store,
            stopping,
            writer,
            limits,
            deliverer,
            relay,
            retention,
        } = self;
        let detector = state.detector.clone();
        detector.start().await;
        let (stop_deliverer, deliverer_stopped) = watch::channel(false);
        let deliverer =
            deliverer.map(|deliverer| tokio::spawn(deliverer::run(deliverer, deliverer_stopped)));
        let (stop_upkeep, upkeep_stopped) = watch::channel(false);
        let upkeep = tokio::spawn(upkeep(state.clone(), store, retention, upkeep_stopped));
        // The JSON API and the pages side by side, each knowing nothing of the other, in the
        // layers every answer gets.
        let request_timeout = state.request_timeout;
        let router =
            crate::http::serve_layers(api::router(state).merge(web::pages(pages)), request_timeout);
        tracing::info!(address = %listener.local_addr()?, "serving");
        server::serve(listener, router, &limits, async move {
            shutdown.await;
            // Long-lived streams (SSE) end, so in-flight requests can finish.
            let _ = stopping.send(true);
        })
        .await;
        // Upkeep ends between its rounds: a settle of minute counts is not cut off midway.
        let _ = stop_upkeep.send(true);
        upkeep.await.context("the upkeep task failed")?;
        detector.stop().await.context("the detector failed")?;
        // No one is left to hear other replicas' events.
        relay.stop().await;
        // After the detector, which may still queue deliveries; what is queued stays in the
        // store for the next start (or another replica) to send.
        let _ = stop_deliverer.send(true);
        if let Some(deliverer) = deliverer {
            deliverer.await.context("the webhook deliverer failed")?;
        }
        // The router (and with it every queue sender) is gone: the writer drains and stops.
        writer.await.context("the batch writer failed")?;
        tracing::info!("stopped; every acknowledged report is committed");
        Ok(())
    }
}

/// Every [`UPKEEP_EVERY`] until `stop` turns true: settles the minute counts of past minutes
/// (Postgres moves them to the table reads are indexed for), forgets idle clients and past
/// network counts, and reloads the catalog an admin may have changed on another replica.
/// Hourly it also prepares the coming days and applies retention ([`expire`]).
async fn upkeep(
    state: AppState,
    store: Arc<dyn Store>,
    retention: crate::domain::retention::Retention,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    for round in 0u64.. {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let now = crate::runtime::clock::now();
        if round % RETENTION_EVERY_ROUNDS == 0 {
            expire(store.as_ref(), retention, now).await;
        }
        match store.settle_rollups(store::settled_before(now)).await {
            Ok(moved) => tracing::debug!(moved, "settled minute counts"),
            // Nothing is lost: the counts stay where ingest put them and the next round moves them.
            Err(error) => tracing::warn!(%error, "could not settle minute counts"),
        }
        state.clients.forget_idle();
        let before = now - chrono::TimeDelta::minutes(2);
        if let Err(error) = store.forget_network_counts(before).await {
            tracing::debug!(%error, "cannot delete past network counts now");
        }
        if let Err(error) = state.reads.reload_catalog(&state.catalog).await {
            tracing::debug!(%error, "cannot reload the catalog now");
        }
    }
}

/// Prepares the coming days and deletes what `retention` no longer keeps at `now`; failures
/// are logged and left for the next hour (nothing is lost by deleting late).
async fn expire(
    store: &dyn Store,
    retention: crate::domain::retention::Retention,
    now: chrono::DateTime<chrono::Utc>,
) {
    let days = crate::domain::retention::live_days(now);
    match store.prepare_days(&days).await {
        Ok(0) => {}
        Ok(created) => tracing::info!(created, "prepared the coming days' partitions"),
        Err(error) => tracing::warn!(%error, "could not prepare the coming days' partitions"),
    }
    let started = std::time::Instant::now();
    match store.apply_retention(&retention.cutoffs(now)).await {
        Ok(Some(expired)) if expired != store::Expired::default() => tracing::info!(
            days_dropped = expired.days_dropped,
            rows_deleted = expired.rows_deleted,
            seconds = started.elapsed().as_secs_f64(),
            "applied retention"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not apply retention"),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Registered now, not when the future is first polled: a SIGTERM that arrives between
    // "serving" and the server's first poll would otherwise end the process uncleanly.
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |registered: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match registered {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let (interrupt, terminate) = signals;
            tokio::select! {
                () = wait(interrupt, "SIGINT") => {}
                () = wait(terminate, "SIGTERM") => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests and committing the queue");
    }
}

/// Sets up logging on stderr: pretty or JSON lines, filtered by `RUST_LOG` or the configured
/// level, coloured only when stderr is a terminal.
pub fn init_tracing(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour is for a person at a terminal; in a file or a pipe (journald, a log shipper)
        // the escape codes are noise in every line.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // Already initialised (e.g. twice in one test process) is fine.
    drop(result);
}
