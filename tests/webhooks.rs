//! Webhooks end to end: the live detector queues incident events, and a receiver that is down
//! for the first attempts (and then fails once more) still gets every event exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use common::TestApp;
use hmac::{Hmac, Mac};
use outagewatch::app;
use outagewatch::domain::incidents::{Incident, Status};
use outagewatch::runtime::webhooks;
use outagewatch::runtime::webhooks::deliverer::{Deliverer, StepSummary};
use outagewatch::store::{
    Delivery, DeliveryStatus, DetectionWrite, IncidentQuery, NewDelivery, Store,
};
use sha2::Sha256;
use uuid::Uuid;

/// Polls `condition` every 100 ms until it holds; panics naming `what` after `seconds`.
async fn wait_until<F, Fut>(what: &str, seconds: u64, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliveries(store: &Arc<dyn Store>) -> Vec<Delivery> {
    store.webhook_deliveries(10_000).await.unwrap()
}

const SECRET: &str = "test-secret-0123456789";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    event_id: String,
    body: serde_json::Value,
    signature_valid: bool,
    answered: StatusCode,
}

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<Received>>>,
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, "<timestamp>.<body>").
fn signature_valid(headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(timestamp), Some(signature)) = (
        headers.get("x-outagewatch-timestamp"),
        headers.get("x-outagewatch-signature"),
    ) else {
        return false;
    };
    let Some(hex) = signature.to_str().unwrap().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// Records every request; answers the very first one 500 (a receiver still starting), then 200.
async fn receive(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut requests = receiver.requests.lock().unwrap();
    let answered = if requests.is_empty() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    assert_eq!(headers["content-type"], "application/json");
    requests.push(Received {
        path,
        event_id: headers["x-outagewatch-event-id"]
            .to_str()
            .unwrap()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap(),
        signature_valid: signature_valid(&headers, &body),
        answered,
    });
    answered
}

on_both_backends!(
    a_receiver_that_is_down_at_first_still_gets_every_event_exactly_once,
    |backend| async move {
        let scenario =
            common::pakistan_surge_scenario(outagewatch::runtime::clock::now(), 11, 200, 150);
        let last = scenario.end() - TimeDelta::minutes(1);
        let quiet = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
        common::import_scenario(&quiet, &scenario).await;
        let db = quiet.stop_keeping_db().await;

        // A loopback port nobody listens on yet: every attempt fails until the receiver starts.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            r#"
[detector]
settle_seconds = 0
leader_retry_seconds = 1
snapshot_every_minutes = 720

[[webhooks]]
name = "pk-x"
url = "http://127.0.0.1:{port}/pk-x?token=hidden"
services = ["x"]
countries = ["pk"]
secret = "{SECRET}"

[[webhooks]]
name = "youtube"
url = "http://127.0.0.1:{port}/youtube"
services = ["youtube"]

[webhook_delivery]
poll_interval_ms = 100
initial_backoff_seconds = 1
max_backoff_seconds = 2
backoff_jitter_percent = 0
request_timeout_ms = 5000
# The surge is hours old: let the catch-up announce it.
max_event_age_minutes = 600
"#
        );
        let live = TestApp::spawn_on(db, &config).await;
        let store = live.store.clone();

        wait_until("a delivery failed twice", 120, || {
            let store = store.clone();
            async move {
                deliveries(&store)
                    .await
                    .iter()
                    .any(|d| d.attempts >= 2 && d.status == DeliveryStatus::Pending)
            }
        })
        .await;
        let failed = deliveries(&store).await;
        assert!(
            failed
                .iter()
                .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0
                    || d.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("onnect"))),
            "{failed:?}"
        );

        // The receiver comes up on that port.
        let receiver = Receiver::default();
        let router = Router::new()
            .route("/{path}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });

        // Every event is queued once the detector is through the scenario; then wait for the
        // queue to empty.
        wait_until("the detector caught up", 120, || {
            let store = store.clone();
            async move {
                store
                    .checkpoint()
                    .await
                    .unwrap()
                    .is_some_and(|c| c.watermark >= last)
            }
        })
        .await;
        wait_until("no delivery pending", 60, || {
            let store = store.clone();
            async move { store.pending_webhook_deliveries().await.unwrap() == 0 }
        })
        .await;

        let incidents: Vec<Incident> = store
            .incidents(&IncidentQuery {
                limit: 1000,
                ..IncidentQuery::default()
            })
            .await
            .unwrap();
        // The events the pk-x filter selects: every x incident in Pakistan (country and city
        // scope, not the global one) opened, and the resolved ones resolved.
        let mut expected = BTreeSet::new();
        for incident in &incidents {
            if incident.service == "x" && incident.country.as_deref() == Some("PK") {
                expected.insert((incident.id, webhooks::OPENED));
                if incident.status == Status::Resolved {
                    expected.insert((incident.id, webhooks::RESOLVED));
                }
            }
        }
        assert!(expected.contains(&(
            incidents
                .iter()
                .find(|i| i.city.is_none() && i.country.is_some())
                .expect("a Pakistan incident")
                .id,
            webhooks::RESOLVED
        )));

        let requests = receiver.requests.lock().unwrap().clone();
        assert!(
            requests.iter().all(|r| r.path == "pk-x"),
            "the youtube endpoint matches nothing"
        );
        assert!(requests.iter().all(|r| r.signature_valid), "{requests:?}");
        assert_eq!(requests[0].answered, StatusCode::INTERNAL_SERVER_ERROR);
        let accepted: Vec<&Received> = requests
            .iter()
            .filter(|r| r.answered == StatusCode::OK)
            .collect();
        let accepted_ids: BTreeSet<&str> = accepted.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(accepted_ids.len(), accepted.len(), "an event arrived twice");
        assert!(accepted_ids.contains(requests[0].event_id.as_str()));
        let mut got = BTreeSet::new();
        let mut first_opening: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for request in &accepted {
            let body = &request.body;
            let incident_id: Uuid = body["incident"]["id"].as_str().unwrap().parse().unwrap();
            let kind = match body["type"].as_str().unwrap() {
                "incident.opened" => webhooks::OPENED,
                "incident.resolved" => webhooks::RESOLVED,
                other => panic!("unexpected type {other}"),
            };
            let occurred_at: DateTime<Utc> = body["occurred_at"].as_str().unwrap().parse().unwrap();
            assert_eq!(body["event_id"], request.event_id);
            assert_eq!(
                request.event_id,
                webhooks::event_id(incident_id, kind, occurred_at).to_string()
            );
            assert_eq!(body["content"], body["text"]);
            // Every event carries the minute the incident was detected, and the first opening
            // happened at that minute (a reopening keeps it).
            let stored = incidents.iter().find(|i| i.id == incident_id).unwrap();
            let detected_at: DateTime<Utc> = body["incident"]["detected_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(detected_at, stored.detected_at);
            if kind == webhooks::OPENED {
                let first = first_opening.entry(incident_id).or_insert(occurred_at);
                *first = (*first).min(occurred_at);
            }
            got.insert((incident_id, kind));
        }
        assert_eq!(got, expected);
        assert!(!first_opening.is_empty());
        for (id, opened_at) in &first_opening {
            let stored = incidents.iter().find(|i| i.id == *id).unwrap();
            assert_eq!(*opened_at, stored.detected_at, "{stored:?}");
        }

        // The store agrees: one delivered row per received event, none for the youtube endpoint.
        let rows = deliveries(&store).await;
        let mut rows_by_endpoint: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for row in &rows {
            assert_eq!(row.status, DeliveryStatus::Delivered, "{row:?}");
            rows_by_endpoint
                .entry(row.endpoint.as_str())
                .or_default()
                .insert(row.event_id.to_string());
        }
        assert_eq!(rows_by_endpoint.len(), 1, "{rows:?}");
        let pk_rows: BTreeSet<&str> = rows_by_endpoint["pk-x"]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(pk_rows, accepted_ids);
        assert_eq!(rows.len(), accepted.len());

        live.stop().await;
        server.abort();
    }
);

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

on_both_backends!(
    a_delivery_failing_past_the_give_up_age_is_marked_failed_and_a_younger_one_retried,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let settings = db.settings(&format!(
            "[[webhooks]]\nname = \"down\"\nurl = \"http://127.0.0.1:{}/\"\n\
             [webhook_delivery]\nbackoff_jitter_percent = 0\ngive_up_after_hours = 48\n",
            closed_port()
        ));
        let store = app::open_store(&settings).await.unwrap();
        let t0: DateTime<Utc> = "2026-01-05T12:00:00Z".parse().unwrap();
        let queued = |event: u128, age: TimeDelta| NewDelivery {
            event_id: Uuid::from_u128(event),
            endpoint: "down".into(),
            event_type: webhooks::OPENED,
            incident_id: Uuid::from_u128(100 + event),
            occurred_at: t0 - age,
            payload: "{}".into(),
            created_at: t0 - age,
        };
        let deliveries_in = [
            queued(1, TimeDelta::hours(47)),
            queued(2, TimeDelta::hours(48)),
            queued(3, TimeDelta::hours(49)),
        ];
        store
            .write_detection(&DetectionWrite {
                deliveries: &deliveries_in,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        let mut deliverer = Deliverer::new(
            store.clone(),
            &settings.webhooks,
            &settings.webhook_delivery,
        )
        .unwrap();
        let summary = deliverer.step(t0).await.unwrap();
        // 3 is past the give-up age before any attempt; 2 reaches it with its failed attempt.
        assert_eq!(
            summary,
            StepSummary {
                claimed: 2,
                delivered: 0,
                retried: 1,
                failed: 2
            }
        );
        let rows: Vec<_> = deliveries(&store)
            .await
            .into_iter()
            .map(|d| {
                (
                    d.event_id.as_u128(),
                    d.status,
                    d.attempts,
                    d.next_attempt_at,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (3, DeliveryStatus::Failed, 0, t0 - TimeDelta::hours(49)),
                (2, DeliveryStatus::Failed, 1, t0 + TimeDelta::seconds(40)),
                (1, DeliveryStatus::Pending, 1, t0 + TimeDelta::seconds(10)),
            ]
        );
        assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 1);
        // Not due before its backoff ends; a failed row is never claimed again.
        assert_eq!(
            deliverer
                .step(t0 + TimeDelta::seconds(9))
                .await
                .unwrap()
                .claimed,
            0
        );
        let later = deliverer.step(t0 + TimeDelta::seconds(10)).await.unwrap();
        assert_eq!((later.claimed, later.retried), (1, 1));
    }
);

on_both_backends!(
    deliverers_claiming_at_once_never_get_the_same_delivery,
    |backend| async move {
        let db = common::TestDb::new(backend).await;
        let store = app::open_store(&db.settings("")).await.unwrap();
        let t0: DateTime<Utc> = "2026-01-05T12:00:00Z".parse().unwrap();
        let queued: Vec<NewDelivery> = (0..100u128)
            .map(|event| NewDelivery {
                event_id: Uuid::from_u128(event),
                endpoint: "shared".into(),
                event_type: webhooks::RESOLVED,
                incident_id: Uuid::from_u128(event),
                occurred_at: t0,
                payload: "{}".into(),
                created_at: t0,
            })
            .collect();
        store
            .write_detection(&DetectionWrite {
                deliveries: &queued,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        let endpoints = ["shared".to_owned()];
        let claims = (0..4).map(|_| {
            let store = store.clone();
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                store
                    .claim_webhook_deliveries(&endpoints, t0, t0 + TimeDelta::minutes(1), 30)
                    .await
                    .unwrap()
            })
        });
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for claim in claims.collect::<Vec<_>>() {
            for delivery in claim.await.unwrap() {
                total += 1;
                seen.insert(delivery.event_id);
            }
        }
        assert_eq!(total, 100);
        assert_eq!(seen.len(), 100);
    }
);
