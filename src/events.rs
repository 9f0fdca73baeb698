//! Live events for the read side: incident changes and per-service minute counts, published by the detector leader and delivered to every replica's subscribers.
//!
//! On Postgres the leader publishes with `NOTIFY` and every replica (the leader included)
//! relays what it hears on `LISTEN` to its local subscribers, so an SSE client gets the same
//! events whichever replica it is connected to. On SQLite (one process) events go straight to
//! the local subscribers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::incidents::Incident;
use crate::store::Store;

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

impl EventBus {
    /// A bus over the store; on Postgres it starts relaying other replicas' events.
    pub async fn start(store: Arc<dyn Store>) -> EventBus {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        let bus = EventBus { local, store };
        let relay = bus.local.clone();
        let started = bus
            .store
            .listen(Box::new(move |payload: &str| {
                match serde_json::from_str::<LiveEvent>(payload) {
                    // No subscriber is fine.
                    Ok(event) => {
                        let _ = relay.send(event);
                    }
                    Err(error) => tracing::warn!(%error, "ignoring an unreadable event"),
                }
            }))
            .await;
        if let Err(error) = started {
            tracing::warn!(%error, "cannot listen for other replicas' events; serving local ones only");
        }
        bus
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
