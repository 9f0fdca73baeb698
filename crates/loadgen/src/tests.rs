//! Unit tests of the plan and the statistics, and whole runs against small in-process servers that answer, refuse, fail and stall on purpose.

use super::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::connection::REQUEST_TIMEOUT;
use crate::stats::{ConnStats, Latencies};

/// Reads the report ids out of a single or batch body, as the server would.
fn ids_in(body: &[u8]) -> Vec<Uuid> {
    let value: serde_json::Value = serde_json::from_slice(body).expect("body is JSON");
    let reports = match value.get("reports") {
        Some(list) => list.as_array().expect("reports is an array").clone(),
        None => vec![value],
    };
    reports
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .expect("id is a string")
                .parse()
                .expect("id is a UUID")
        })
        .collect()
}

fn created() -> Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"counted":true}"#,
    )
        .into_response()
}

/// Serves `router` on an ephemeral loopback port; the task ends with the test runtime.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn options(url: String) -> LoadgenOptions {
    LoadgenOptions {
        url,
        connections: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        distinct_reporters: 7,
        ..LoadgenOptions::default()
    }
}

fn set(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

#[test]
fn percentiles_of_a_known_distribution() {
    let mut low = Latencies::new();
    let mut high = Latencies::new();
    for ms in 1..=500 {
        low.record(Duration::from_millis(ms));
    }
    for ms in 501..=1000 {
        high.record(Duration::from_millis(ms));
    }
    low.merge(&high);
    let close = |got: Duration, want_ms: u64| {
        let want = Duration::from_millis(want_ms).as_secs_f64();
        let error = (got.as_secs_f64() - want).abs() / want;
        assert!(error < 0.002, "got {got:?}, want about {want_ms} ms");
    };
    close(low.quantile(0.50), 500);
    close(low.quantile(0.90), 900);
    close(low.quantile(0.99), 990);
    close(low.max(), 1000);
    assert_eq!(low.0.len(), 1000);

    let empty = Latencies::new();
    assert_eq!(empty.quantile(0.99), Duration::ZERO);
    assert_eq!(empty.max(), Duration::ZERO);

    // Sub-microsecond and overlong latencies are clamped, not dropped.
    let mut edges = Latencies::new();
    edges.record(Duration::from_nanos(10));
    edges.record(Duration::from_secs(3600));
    assert_eq!(edges.0.len(), 2);
    assert!(edges.max() >= Duration::from_secs(59));
}

#[test]
fn summary_rate_and_window() {
    let start = Instant::now();
    let mut a = ConnStats::new();
    a.sent = 10;
    a.measured_acknowledged = 300;
    a.by_status.insert(201, 10);
    a.last_measured_answer = Some(start + Duration::from_millis(1500));
    let mut b = ConnStats::new();
    b.sent = 5;
    b.measured_acknowledged = 100;
    b.by_status.insert(201, 3);
    b.by_status.insert(503, 2);
    b.last_measured_answer = Some(start + Duration::from_millis(2000));
    a.merge(b);
    let summary = a.into_summary(start, Duration::from_secs(1));
    assert_eq!(summary.sent, 15);
    assert_eq!(summary.by_status, BTreeMap::from([(201, 13), (503, 2)]));
    assert_eq!(summary.elapsed, Duration::from_secs(2));
    assert!((summary.acknowledged_per_second - 200.0).abs() < 1e-9);
    assert!(summary.table().contains("status 503"));
}

#[tokio::test]
async fn bodies_are_valid_json_with_fresh_ids() {
    let mut opts = options("http://127.0.0.1:9".into());
    opts.places = vec![
        ("PK".into(), Some("La\"ho\\re\n".into())),
        ("US".into(), None),
    ];
    opts.batch = 3;
    let plan = Plan::new(&opts).await.expect("plan");
    let mut rng = SmallRng::from_entropy();
    let mut buf = BytesMut::new();
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..50 {
        plan.write_body(&mut rng, &mut buf, &mut ids);
        let body = buf.split().freeze();
        assert_eq!(ids_in(&body), ids);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        for report in value["reports"].as_array().expect("batch") {
            assert!(opts.services.iter().any(|s| report["service"] == **s));
            assert!(PROBLEMS.iter().any(|p| report["problem"] == **p));
            if report["country"] == "PK" {
                assert_eq!(report["city"], "La\"ho\\re\n");
            } else {
                assert!(report.get("city").is_none());
            }
        }
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert!(seen.insert(*id), "duplicate id {id}");
        }
    }
    assert_eq!(plan.path, "/api/v1/reports");
}

#[tokio::test]
async fn even_requests_acknowledged_odd_rejected() {
    #[derive(Default)]
    struct Seen {
        count: AtomicU64,
        created: Mutex<Vec<Uuid>>,
        rejected: Mutex<Vec<Uuid>>,
        agents: Mutex<HashSet<String>>,
    }
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    let router = axum::Router::new().route(
        "/api/v1/reports",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let agent = headers[header::USER_AGENT].to_str().expect("ASCII");
                state.agents.lock().expect("lock").insert(agent.to_owned());
                let ids = ids_in(&body);
                if state.count.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    state.created.lock().expect("lock").extend(ids);
                    created()
                } else {
                    state.rejected.lock().expect("lock").extend(ids);
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        [(header::CONTENT_TYPE, "application/problem+json")],
                        r#"{"title":"unknown service"}"#,
                    )
                        .into_response()
                }
            }
        }),
    );
    let summary = run(options(serve(router).await)).await.expect("run");

    let requests = seen.count.load(Ordering::SeqCst);
    assert!(requests > 10, "only {requests} requests");
    assert_eq!(summary.sent, requests);
    assert_eq!(summary.transport_errors, 0);
    assert_eq!(
        summary.by_status,
        BTreeMap::from([(201, requests.div_ceil(2)), (422, requests / 2)])
    );
    assert_eq!(summary.acknowledged_ids.len() as u64, requests.div_ceil(2));
    assert_eq!(summary.rejected_ids.len() as u64, requests / 2);
    assert_eq!(
        set(&summary.acknowledged_ids),
        set(&seen.created.lock().expect("lock"))
    );
    assert_eq!(
        set(&summary.rejected_ids),
        set(&seen.rejected.lock().expect("lock"))
    );
    assert!(summary.unresolved_ids.is_empty());
    assert!(summary.acknowledged_per_second > 0.0);
    assert!(summary.latency_p50 <= summary.latency_p99);
    assert!(summary.latency_p99 <= summary.latency_max);
    assert!(summary.elapsed >= Duration::from_millis(300));
    assert!(seen.agents.lock().expect("lock").len() <= 7);
}

#[tokio::test]
async fn unavailable_answers_are_retried_with_the_same_ids() {
    // Every third new id is stored but answered 503, so only the retry (a 200 replay)
    // tells the loadgen it was stored; every fifth request is a 429 that stores nothing.
    #[derive(Default)]
    struct Store {
        count: AtomicU64,
        stored: Mutex<HashSet<Uuid>>,
    }
    let store = Arc::new(Store::default());
    let state = Arc::clone(&store);
    let router = axum::Router::new().route(
        "/api/v1/reports",
        axum::routing::post(move |body: Bytes| {
            let state = Arc::clone(&state);
            async move {
                let n = state.count.fetch_add(1, Ordering::SeqCst);
                if n % 5 == 4 {
                    return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")])
                        .into_response();
                }
                let id = ids_in(&body)[0];
                let fresh = state.stored.lock().expect("lock").insert(id);
                if !fresh {
                    (StatusCode::OK, r#"{"counted":false}"#).into_response()
                } else if n % 3 == 0 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "0")],
                    )
                        .into_response()
                } else {
                    created()
                }
            }
        }),
    );
    let summary = run(options(serve(router).await)).await.expect("run");

    let stored = store.stored.lock().expect("lock").clone();
    let acknowledged = set(&summary.acknowledged_ids);
    assert_eq!(acknowledged.len(), summary.acknowledged_ids.len());
    assert!(acknowledged.is_subset(&stored));
    // Whatever was stored but not acknowledged is still awaiting its retry.
    let unresolved = set(&summary.unresolved_ids);
    assert!(stored
        .difference(&acknowledged)
        .all(|id| unresolved.contains(id)));
    assert!(
        unresolved.len() <= 4,
        "one pending request per connection at most"
    );
    assert!(summary.rejected_ids.is_empty());
    for status in [200, 201, 429, 503] {
        assert!(summary.by_status.get(&status).copied().unwrap_or(0) > 0);
    }
    assert_eq!(summary.sent, store.count.load(Ordering::SeqCst));
}

#[tokio::test]
async fn batches_count_reports_not_requests() {
    let count = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&count);
    let router = axum::Router::new().route(
        "/api/v1/reports",
        axum::routing::post(move |body: Bytes| {
            let counter = Arc::clone(&counter);
            async move {
                assert_eq!(ids_in(&body).len(), 5);
                counter.fetch_add(1, Ordering::SeqCst);
                created()
            }
        }),
    );
    let mut opts = options(serve(router).await);
    opts.batch = 5;
    opts.warmup = Duration::ZERO;
    let summary = run(opts).await.expect("run");
    let requests = count.load(Ordering::SeqCst);
    assert_eq!(summary.sent, requests);
    assert_eq!(summary.acknowledged_ids.len() as u64, requests * 5);
    assert_eq!(set(&summary.acknowledged_ids).len() as u64, requests * 5);
    // With no warm-up every acknowledged report is in the rate.
    let rate = requests as f64 * 5.0 / summary.elapsed.as_secs_f64();
    assert!((summary.acknowledged_per_second - rate).abs() < 1e-6 * rate);
}

#[tokio::test]
async fn broken_connections_are_counted_and_leave_ids_unresolved() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // Accepts and hangs up at once: every request dies without an answer.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let mut opts = options(format!("http://{addr}"));
    opts.connections = 2;
    opts.warmup = Duration::ZERO;
    opts.duration = Duration::from_millis(100);
    let summary = run(opts).await.expect("run");
    assert!(summary.transport_errors > 0);
    assert!(summary.by_status.is_empty());
    assert!(summary.acknowledged_ids.is_empty());
    // Each connection ends with its one request still awaiting a retry.
    assert!((1..=2).contains(&summary.unresolved_ids.len()));
    assert_eq!(summary.acknowledged_per_second, 0.0);
}

#[tokio::test]
async fn a_silent_server_cannot_stall_the_run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // Accepts and holds connections open without ever answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut opts = options(format!("http://{addr}"));
    opts.connections = 2;
    opts.warmup = Duration::ZERO;
    opts.duration = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let summary = run(opts).await.expect("run");
    assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2));
    assert_eq!(summary.sent, 2);
    assert_eq!(summary.transport_errors, 2);
    assert_eq!(summary.unresolved_ids.len(), 2);
    assert_eq!(summary.latency_max, Duration::ZERO);
}

#[tokio::test]
async fn bad_options_and_unreachable_servers_are_errors() {
    for url in [
        "ftp://127.0.0.1:21",
        "127.0.0.1:8080",
        "http://",
        "not a url",
    ] {
        let err = run(options(url.into())).await.expect_err(url);
        assert!(
            matches!(err, LoadgenError::InvalidUrl { .. }),
            "{url}: {err}"
        );
    }
    let mut opts = options("http://127.0.0.1:8080".into());
    opts.connections = 0;
    assert!(matches!(
        run(opts).await,
        Err(LoadgenError::InvalidOptions(_))
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let err = run(options(format!("http://{addr}")))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, LoadgenError::Connect { .. }), "{err}");
}
