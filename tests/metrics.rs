//! `/metrics`: exact counts in a process of its own (the registry is process-wide).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reports_rejections_and_routes_with_bounded_labels() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[detector]\nenabled = false\n").await;
    let id = "0195a2b4-0000-7000-8000-000000000001";
    let report = json!({"service":"x","country":"PK","city":"Lahore","problem":"app","id":id});
    assert_eq!(app.post_reports(&report).await.status(), 201);
    // Same id again: a replay; same reporter, new id: stored but not counted.
    assert_eq!(app.post_reports(&report).await.status(), 200);
    let again = json!({"service":"x","country":"PK","problem":"login"});
    assert_eq!(app.post_reports(&again).await.status(), 201);
    let invalid = json!({"service":"x","country":"XX","problem":"app"});
    assert_eq!(app.post_reports(&invalid).await.status(), 422);
    let missing = app.url("/api/v1/incidents/00000000-0000-0000-0000-000000000000");
    assert_eq!(app.client.get(missing).send().await.unwrap().status(), 404);
    assert_eq!(
        app.client
            .get(app.url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    for line in [
        "outagewatch_reports_total{outcome=\"counted\"} 1",
        "outagewatch_reports_total{outcome=\"replay\"} 1",
        "outagewatch_reports_total{outcome=\"duplicate\"} 1",
        "outagewatch_reports_rejected_total{reason=\"validation\"} 1",
        "outagewatch_batch_reports_count 3",
        "outagewatch_http_request_duration_seconds_count{route=\"/api/v1/reports\",method=\"POST\",status=\"201\"} 2",
        "outagewatch_http_request_duration_seconds_count{route=\"/api/v1/reports\",method=\"POST\",status=\"422\"} 1",
        "outagewatch_http_request_duration_seconds_count{route=\"/api/v1/incidents/{id}\",method=\"GET\",status=\"404\"} 1",
        "outagewatch_http_request_duration_seconds_count{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "outagewatch_ingest_queue_depth 0",
        "outagewatch_open_incidents 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert!(text.len() < 100 * 1024, "{} bytes", text.len());
    app.stop().await;
}
