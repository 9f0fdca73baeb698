//! Wiring: builds the store, the ingest writer, the webhook deliverer and the router from settings, and shuts them down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, ClientPolicy, ReadCache};
use crate::config::{LogFormat, LogSettings, Settings};
use crate::detector;
use crate::events::EventBus;
use crate::ingest::{Fingerprinter, Ingest, IngestOptions};
use crate::report::Catalog;
use crate::store::{self, ConnectOptions, Store};
use crate::webhooks::deliverer::{self, Deliverer};
use crate::webhooks::Outbox;

/// A built service, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    stopping: watch::Sender<bool>,
    writer: JoinHandle<()>,
    detector: Option<crate::config::DetectorSettings>,
    outbox: Outbox,
    /// None when no webhook is configured.
    deliverer: Option<Deliverer>,
}

/// Opens the store named in the settings and applies its migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let options = ConnectOptions {
        max_connections: settings.database.max_connections,
        acquire_timeout: settings.database.acquire_timeout(),
    };
    let store = store::connect(settings.database.url.expose_secret(), &options)
        .await
        .context("cannot open the database (database.url / DATABASE_URL)")?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
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
        tokio::task::spawn_blocking(|| crate::geo::gazetteer().len()).await?;
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
        let events = EventBus::start(store.clone()).await;
        let (stopping, stopping_rx) = watch::channel(false);
        let state = AppState {
            fingerprinter: Arc::new(Fingerprinter::new(store.clone())),
            store,
            ingest,
            catalog: Arc::new(catalog(settings)),
            clients: Arc::new(ClientPolicy::new(
                settings.http.trusted_proxies.clone(),
                settings.rate_limit.per_ip_per_minute,
                settings.rate_limit.burst,
            )),
            max_body_bytes: settings.http.max_body_bytes,
            events,
            stopping: stopping_rx,
            read_cache: Arc::new(ReadCache::new(
                Duration::from_secs(settings.http.read_cache_seconds),
                settings.http.read_cache_mebibytes << 20,
            )),
        };
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.listen))?;
        Ok(App {
            listener,
            state,
            stopping,
            writer,
            detector: settings.detector.enabled.then(|| settings.detector.clone()),
            outbox: Outbox::new(&settings.webhooks, &settings.webhook_delivery),
            deliverer,
        })
    }

    /// The address the service listens on (useful when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The store the service writes to.
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
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
            stopping,
            writer,
            detector,
            outbox,
            deliverer,
        } = self;
        let (stop_detector, detector_stopped) = watch::channel(false);
        let detector = detector.map(|settings| {
            tokio::spawn(detector::run(
                state.store.clone(),
                state.catalog.clone(),
                settings,
                state.events.clone(),
                outbox,
                detector_stopped,
            ))
        });
        let (stop_deliverer, deliverer_stopped) = watch::channel(false);
        let deliverer =
            deliverer.map(|deliverer| tokio::spawn(deliverer::run(deliverer, deliverer_stopped)));
        let clients = state.clients.clone();
        let limiter_sweeper = tokio::spawn(async move {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                clients.forget_idle();
            }
        });
        let router = api::router(state);
        tracing::info!(address = %listener.local_addr()?, "serving");
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Long-lived streams (SSE) end, so in-flight requests can finish.
            let _ = stopping.send(true);
        })
        .await
        .context("the HTTP server failed")?;
        limiter_sweeper.abort();
        let _ = stop_detector.send(true);
        if let Some(detector) = detector {
            detector.await.context("the detector failed")?;
        }
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

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests and committing the queue");
}

/// Sets up logging: pretty or JSON lines, filtered by `RUST_LOG` or the configured level.
pub fn init_tracing(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // Already initialised (e.g. twice in one test process) is fine.
    drop(result);
}
