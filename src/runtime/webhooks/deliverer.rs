//! The webhook deliverer: a background task in every process that claims due deliveries from the store, POSTs them, and records each attempt.
//!
//! Claims are leases: a claimed row is due again once its lease ends, so a process that dies
//! mid-attempt delays a delivery but cannot lose it (the receiver may then see an event
//! twice, and deduplicates by its id). On Postgres several replicas share the queue
//! (`for update skip locked`); on SQLite the one process works it alone.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{
    backoff, jitter_unit, signature, Endpoint, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::config::{WebhookDeliverySettings, WebhookSettings};
use crate::runtime::metrics::METRICS;
use crate::store::{Attempt, Delivery, Store, StoreError};

/// A claim lasts the request timeout plus this margin; then its row is due again.
const LEASE_MARGIN_SECONDS: i64 = 30;

/// How often old deliveries are given up on and finished ones forgotten.
const EXPIRE_EVERY_SECONDS: i64 = 60;

/// What one [`Deliverer::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepSummary {
    pub claimed: usize,
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
}

/// Sends queued webhook deliveries to the configured endpoints.
pub struct Deliverer {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    endpoints: Arc<HashMap<String, Endpoint>>,
    names: Vec<String>,
    settings: WebhookDeliverySettings,
    expired_at: Option<DateTime<Utc>>,
}

/// Why the deliverer could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Deliverer {
    /// A deliverer for the configured endpoints.
    pub fn new(
        store: Arc<dyn Store>,
        webhooks: &[WebhookSettings],
        settings: &WebhookDeliverySettings,
    ) -> Result<Deliverer, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .user_agent(concat!("outagewatch-webhooks/", env!("CARGO_PKG_VERSION")))
            // A redirect would resend a signed body somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let endpoints: HashMap<String, Endpoint> = webhooks
            .iter()
            .map(|w| (w.name.clone(), Endpoint::new(w)))
            .collect();
        Ok(Deliverer {
            store,
            client,
            names: endpoints.keys().cloned().collect(),
            endpoints: Arc::new(endpoints),
            settings: settings.clone(),
            expired_at: None,
        })
    }

    /// Gives up on deliveries past the give-up age (once a minute), then claims one batch of
    /// due deliveries, sends them all at once and records every attempt, as of `now`.
    pub async fn step(&mut self, now: DateTime<Utc>) -> Result<StepSummary, StoreError> {
        let mut summary = StepSummary::default();
        if self
            .expired_at
            .is_none_or(|at| now - at >= TimeDelta::seconds(EXPIRE_EVERY_SECONDS))
        {
            let expired = self
                .store
                .expire_webhook_deliveries(
                    now - self.give_up_age(),
                    now - self.keep_finished(),
                    now,
                )
                .await?;
            if expired > 0 {
                tracing::warn!(
                    deliveries = expired,
                    "gave up on webhook deliveries older than webhook_delivery.give_up_after_hours"
                );
                METRICS.webhook_delivery("failed", expired);
                summary.failed += usize::try_from(expired).unwrap_or(usize::MAX);
            }
            self.expired_at = Some(now);
        }
        let lease = TimeDelta::milliseconds(
            i64::try_from(self.settings.request_timeout_ms).unwrap_or(i64::MAX / 2),
        ) + TimeDelta::seconds(LEASE_MARGIN_SECONDS);
        let claimed = self
            .store
            .claim_webhook_deliveries(&self.names, now, now + lease, self.settings.batch_size)
            .await?;
        summary.claimed = claimed.len();
        let mut sends = JoinSet::new();
        for delivery in claimed {
            let client = self.client.clone();
            let endpoints = self.endpoints.clone();
            sends.spawn(async move {
                let result = match endpoints.get(&delivery.endpoint) {
                    Some(endpoint) => send(&client, endpoint, &delivery, now).await,
                    None => Err("the endpoint is no longer configured".to_owned()),
                };
                (delivery, result)
            });
        }
        while let Some(joined) = sends.join_next().await {
            let Ok((delivery, result)) = joined else {
                // A send task cannot panic; if one did, its row is due again when the lease ends.
                continue;
            };
            let attempt = self.attempt(&delivery, result, now);
            match &attempt {
                Attempt::Delivered => summary.delivered += 1,
                Attempt::Retry { .. } => summary.retried += 1,
                Attempt::Failed { .. } => summary.failed += 1,
            }
            self.store
                .record_webhook_attempt(delivery.event_id, &delivery.endpoint, now, &attempt)
                .await?;
        }
        METRICS
            .webhook_pending
            .set(i64::try_from(self.store.pending_webhook_deliveries().await?).unwrap_or(i64::MAX));
        Ok(summary)
    }

    /// What an attempt's result means for its delivery, logged and counted.
    fn attempt(
        &self,
        delivery: &Delivery,
        result: Result<(), String>,
        now: DateTime<Utc>,
    ) -> Attempt {
        let host = self
            .endpoints
            .get(&delivery.endpoint)
            .map(Endpoint::host)
            .unwrap_or_default();
        match result {
            Ok(()) => {
                METRICS.webhook_delivery("delivered", 1);
                tracing::debug!(endpoint = %delivery.endpoint, %host, event_id = %delivery.event_id, "webhook delivered");
                Attempt::Delivered
            }
            Err(error) if now - delivery.created_at >= self.give_up_age() => {
                METRICS.webhook_delivery("failed", 1);
                tracing::warn!(
                    endpoint = %delivery.endpoint, %host, event_id = %delivery.event_id,
                    attempts = delivery.attempts + 1, %error,
                    "giving up on a webhook delivery"
                );
                Attempt::Failed { error }
            }
            Err(error) => {
                METRICS.webhook_delivery("retried", 1);
                let failures = delivery.attempts + 1;
                let wait = backoff(
                    &self.settings,
                    failures,
                    jitter_unit(delivery.event_id, &delivery.endpoint, failures),
                );
                tracing::info!(
                    endpoint = %delivery.endpoint, %host, event_id = %delivery.event_id,
                    attempts = failures, %error, retry_in_ms = wait.num_milliseconds(),
                    "webhook delivery failed; will retry"
                );
                Attempt::Retry {
                    next_attempt_at: now + wait,
                    error,
                }
            }
        }
    }

    fn give_up_age(&self) -> TimeDelta {
        TimeDelta::hours(
            i64::try_from(self.settings.give_up_after_hours).unwrap_or(i64::MAX / 3_600_000),
        )
    }

    fn keep_finished(&self) -> TimeDelta {
        TimeDelta::days(
            i64::try_from(self.settings.keep_finished_days).unwrap_or(i64::MAX / 86_400_000),
        )
    }
}

/// POSTs one delivery's body; Ok on a 2xx answer, else why not (never the URL).
async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let timestamp = now.timestamp();
    let mut request = client
        .post(endpoint.url())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, delivery.event_id.to_string())
        .header(TIMESTAMP_HEADER, timestamp.to_string());
    if let Some(secret) = &endpoint.secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(
                secret.expose_secret().as_bytes(),
                timestamp,
                delivery.payload.as_bytes(),
            ),
        );
    }
    match request.body(delivery.payload.clone()).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
        Err(error) => Err(describe(&error.without_url())),
    }
}

/// An error with its causes, "a: b: c" (reqwest's own message alone says only "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs the deliverer until `shutdown` turns true; an attempt in flight then finishes (within
/// the request timeout) and is recorded, and everything still queued stays in the store.
pub async fn run(mut deliverer: Deliverer, mut shutdown: watch::Receiver<bool>) {
    let poll = Duration::from_millis(deliverer.settings.poll_interval_ms);
    let batch = usize::try_from(deliverer.settings.batch_size).unwrap_or(usize::MAX);
    while !*shutdown.borrow() {
        let claimed = match deliverer.step(crate::runtime::clock::now()).await {
            Ok(summary) => summary.claimed,
            Err(error) => {
                tracing::warn!(%error, "webhook deliverer cannot reach the store; retrying");
                0
            }
        };
        // A full batch means more may be due: go on at once.
        if claimed < batch {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        }
    }
}
