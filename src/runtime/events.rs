//! Live events for the read side: incident changes and per-service minute counts, published by the detector leader and delivered to every replica's subscribers.
//!
//! On Postgres the leader publishes with `NOTIFY` and every replica (the leader included)
//! relays what it hears on `LISTEN` to its local subscribers, so an SSE client gets the same
//! events whichever replica it is connected to. On SQLite (one process) events go straight to
//! the local subscribers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::domain::incidents::Incident;
use crate::store::{Listener, Store};

/// One live event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// An incident opened, grew (updated), resolved or reopened.
    Incident {
        /// `opened`, `updated`, `resolved` or `reopened`.
        kind: String,
        incident: Box<Incident>,
    },
    /// Counted reports of a service (worldwide) in one minute, once the detector processed it.
    Counts {
        service: String,
        minute: DateTime<Utc>,
        count: i64,
    },
}

impl LiveEvent {
    /// The service the event is about.
    pub fn service(&self) -> &str {
        match self {
            Self::Incident { incident, .. } => &incident.service,
            Self::Counts { service, .. } => service,
        }
    }

    /// The SSE event name: `incident` or `counts`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Incident { .. } => "incident",
            Self::Counts { .. } => "counts",
        }
    }
}

/// Where events are published and subscribed to.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<LiveEvent>,
    store: Arc<dyn Store>,
}

/// Local subscribers that fall this far behind lose the oldest events (and are told so).
const LOCAL_CAPACITY: usize = 4096;

/// The task that relays other replicas' events to this one's subscribers (Postgres), owned by
/// whoever started the bus and stopped in its shutdown order.
pub struct Relay {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Stops relaying and waits until the task has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            if let Err(error) = task.await {
                tracing::error!(%error, "the event relay failed");
            }
        }
    }
}

impl EventBus {
    /// A bus over the store; on Postgres the returned [`Relay`] relays other replicas' events.
    pub async fn start(store: Arc<dyn Store>) -> (EventBus, Relay) {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let task = match store.listen().await {
            Ok(Some(listener)) => Some(tokio::spawn(relay(listener, local.clone(), stopped))),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for other replicas' events; serving local ones only");
                None
            }
        };
        (EventBus { local, store }, Relay { stop, task })
    }

    /// Publishes to every replica (Postgres) or to this process's subscribers (SQLite).
    pub async fn publish(&self, event: LiveEvent) {
        let payload = match serde_json::to_string(&event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot encode an event");
                return;
            }
        };
        match self.store.notify(&payload).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = self.local.send(event);
            }
            Err(error) => {
                // The store is down: at least this replica's subscribers hear of it.
                tracing::warn!(%error, "cannot publish an event to other replicas");
                let _ = self.local.send(event);
            }
        }
    }

    /// A new subscription to this replica's events.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.local.subscribe()
    }
}

/// Hands every payload `listener` hears to `local`'s subscribers until `stop` turns true; a
/// lost connection is retried a second later (events published meanwhile are lost).
async fn relay(
    mut listener: Box<dyn Listener>,
    local: broadcast::Sender<LiveEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let heard = tokio::select! {
            heard = listener.recv() => heard,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match heard.map(|payload| serde_json::from_str::<LiveEvent>(&payload)) {
            // No subscriber is fine.
            Ok(Ok(event)) => {
                let _ = local.send(event);
            }
            Ok(Err(error)) => tracing::warn!(%error, "ignoring an unreadable event"),
            Err(error) => {
                tracing::warn!(%error, "event listener lost its connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}
