//! Black-box tests of issue 5's HTTP surface: the admin API and the catalog it changes, the per-network cap, the proof-of-work challenge, and the server's limits (body-read timeout, connection cap, header-read timeout).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use outagewatch::config::Settings;
use outagewatch::http::pow::{self, Challenge, PowError, ProofOfWork};
use outagewatch::store::DetectionWrite;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "admin token for the api tests";

fn admin_config() -> String {
    format!("[[admin.tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\n[detector]\nenabled = false\n")
}

async fn admin_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, &admin_config()).await
}

/// An admin call: status and JSON body (Null when there is none).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app.client.request(method.parse().unwrap(), app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_routes_answer_401_without_a_token_403_with_a_wrong_one_and_200_with_the_right_one() {
    let app = admin_app(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/api/v1/admin/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"outagewatch admin\""
    );
    let (status, problem) = call(&app, "GET", "/api/v1/admin/services", None, Some("nope")).await;
    assert_eq!(
        (status, &problem["type"]),
        (403, &json!("/problems/forbidden"))
    );
    let (status, listed) = call(&app, "GET", "/api/v1/admin/services", None, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["services"][0],
        json!({"slug": "x", "name": "X (Twitter)", "enabled": true})
    );
    assert_eq!(listed["services"].as_array().unwrap().len(), 10);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_body_that_is_not_a_json_object_is_refused_naming_the_body() {
    let app = admin_app(Backend::Sqlite).await;
    // serde would read a struct's fields from an array; schemathesis found `[null, null]`
    // taken as a redetect of everything.
    for (method, path, body) in [
        ("POST", "/api/v1/admin/redetect", json!([null, null])),
        (
            "PUT",
            "/api/v1/admin/services/bluesky",
            json!(["Bluesky", true]),
        ),
    ] {
        let (status, problem) = call(&app, method, path, Some(body), Some(TOKEN)).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert_eq!(
            problem["errors"],
            json!([{"field": "body", "message": "the body must be a JSON object"}]),
            "{path}"
        );
    }
    assert_eq!(services_listed(&app).await.len(), 10);
    app.stop().await;
}

#[tokio::test]
async fn without_configured_tokens_every_admin_call_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, _) = call(&app, "GET", "/api/v1/admin/services", None, Some(TOKEN)).await;
    assert_eq!(status, 403);
    app.stop().await;
}

async fn services_listed(app: &TestApp) -> Vec<String> {
    let (_, _, body) = app.get_json("/api/v1/services").await;
    body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap().to_owned())
        .collect()
}

async fn report_status(app: &TestApp, service: &str) -> u16 {
    app.post_reports(&json!({"service": service, "country": "PK", "problem": "app"}))
        .await
        .status()
        .as_u16()
}

async fn added_service_takes_reports_and_a_disabled_one_refuses_them(backend: Backend) {
    let app = admin_app(backend).await;
    let put = |enabled: bool| json!({"name": "Bluesky", "enabled": enabled});
    let path = "/api/v1/admin/services/bluesky";
    assert_eq!(report_status(&app, "bluesky").await, 422);
    let (status, body) = call(&app, "PUT", path, Some(put(true)), Some(TOKEN)).await;
    assert_eq!(
        (status, body),
        (
            201,
            json!({"slug": "bluesky", "name": "Bluesky", "enabled": true})
        )
    );
    assert_eq!(report_status(&app, "bluesky").await, 201);
    assert_eq!(services_listed(&app).await.last().unwrap(), "bluesky");
    let (status, _) = call(&app, "PUT", path, Some(put(false)), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(report_status(&app, "bluesky").await, 422);
    assert!(!services_listed(&app).await.contains(&"bluesky".to_owned()));
    // Invalid slugs and names are refused before anything is stored.
    let (status, _) = call(
        &app,
        "PUT",
        "/api/v1/admin/services/Blue%20Sky",
        Some(put(true)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);
    let (status, problem) = call(&app, "PUT", path, Some(json!({"name": ""})), Some(TOKEN)).await;
    assert_eq!(
        (status, &problem["errors"][0]["field"]),
        (422, &json!("name"))
    );
    // The stored catalog survives a restart: still disabled.
    let db = app.stop_keeping_db().await;
    let app = TestApp::spawn_on(db, &admin_config()).await;
    assert_eq!(report_status(&app, "bluesky").await, 422);
    assert_eq!(report_status(&app, "x").await, 201);
    app.stop().await;
}

on_both_backends!(
    a_service_added_at_run_time_takes_reports_and_a_disabled_one_refuses_them,
    added_service_takes_reports_and_a_disabled_one_refuses_them
);

async fn note_and_resolve(backend: Backend) {
    let app = admin_app(backend).await;
    let incident = common::open_incident("2025-03-10T09:58:00Z".parse().unwrap());
    app.store
        .write_detection(&DetectionWrite {
            incidents: std::slice::from_ref(&incident),
            ..DetectionWrite::default()
        })
        .await
        .unwrap();
    let base = format!("/api/v1/admin/incidents/{}", incident.id);
    let note = "Robert'); DROP TABLE incidents;--\nsecond line";
    let (status, noted) = call(
        &app,
        "PUT",
        &format!("{base}/note"),
        Some(json!({"note": note})),
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, &noted["note"]), (200, &json!(note)));
    let (status, resolved) =
        call(&app, "POST", &format!("{base}/resolve"), None, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &resolved["status"],
            &resolved["resolved_by"],
            &resolved["note"]
        ),
        (&json!("resolved"), &json!("ops"), &json!(note))
    );
    let (_, _, read) = app
        .get_json(&format!("/api/v1/incidents/{}", incident.id))
        .await;
    assert_eq!(read, resolved);
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/admin/incidents/not-a-uuid/resolve",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);
    let missing = "/api/v1/admin/incidents/0b5e5c2a-7d3e-4c1a-9f55-2f8f2d1c9a10/resolve";
    assert_eq!(call(&app, "POST", missing, None, Some(TOKEN)).await.0, 404);
    let (status, problem) = call(
        &app,
        "PUT",
        &format!("{base}/note"),
        Some(json!({"note": "a\u{0}b"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, &problem["errors"][0]["field"]),
        (422, &json!("note"))
    );
    app.stop().await;
}

on_both_backends!(
    an_incident_is_noted_and_resolved_by_hand_and_served_with_both,
    note_and_resolve
);

#[tokio::test]
async fn a_redetect_runs_with_the_live_detector_paused_and_reports_its_summary() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &format!("[[admin.tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\n"),
    )
    .await;
    assert_eq!(report_status(&app, "x").await, 201);
    // Up to a few minutes ahead: the minute just reported in is not complete yet.
    let to = (outagewatch::runtime::clock::now() + chrono::TimeDelta::minutes(5)).to_rfc3339();
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/admin/redetect",
        Some(json!({"to": to})),
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, &body["status"]), (200, &json!("done")));
    assert_eq!(body["incidents"], 0);
    let (status, problem) = call(
        &app,
        "POST",
        "/api/v1/admin/redetect",
        Some(json!({"from": "2025-03-11T00:00:00Z", "to": "2025-03-10T00:00:00Z"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, &problem["errors"][0]["field"]),
        (422, &json!("from"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_redetect_whose_replay_starts_before_the_kept_minutes_is_refused_naming_from() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &format!("{}[retention]\nminute_rollups_days = 40\n", admin_config()),
    )
    .await;
    let now = outagewatch::runtime::clock::now();
    let from = now - chrono::TimeDelta::days(10);
    let (status, problem) = call(
        &app,
        "POST",
        "/api/v1/admin/redetect",
        Some(json!({"from": from.to_rfc3339()})),
        Some(TOKEN),
    )
    .await;
    // 40 days of minutes kept; the replay would start 35 days (detector.history_days) before.
    let first_kept = (now - chrono::TimeDelta::days(40)).date_naive();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"],
        json!([{"field": "from", "message": format!(
            "its replay starts 35 days earlier (detector.history_days), before {first_kept}, the \
             first day of minute counts kept (retention.minute_rollups_days); start on {} or later",
            first_kept + chrono::TimeDelta::days(35)
        )}])
    );
    app.stop().await;
}

/// Posts a report as if through a proxy from `client`; whether it counted.
async fn counted_from(app: &TestApp, client: &str, agent: usize) -> bool {
    let response = app
        .client
        .post(app.url("/api/v1/reports"))
        .header("x-forwarded-for", client)
        .header("user-agent", format!("reporter {agent}"))
        .json(&json!({"service": "x", "country": "PK", "problem": "app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json::<Value>().await.unwrap()["counted"] == true
}

async fn network_cap(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[abuse]\nmax_counted_per_network_per_minute = 3\n[detector]\nenabled = false\n",
    )
    .await;
    // Five reporters of one /24 within a minute: three count. A minute boundary in the middle
    // would split them, so the round is repeated (at most three times) until it fits in one.
    let mut rounds = 0;
    let counted = loop {
        rounds += 1;
        let minute = outagewatch::store::minute_of(outagewatch::runtime::clock::now());
        let mut counted = Vec::new();
        for i in 0..5 {
            let client = format!("203.0.{rounds}.{}", 10 + i);
            counted.push(counted_from(&app, &client, rounds * 10 + i).await);
        }
        let same_minute =
            outagewatch::store::minute_of(outagewatch::runtime::clock::now()) == minute;
        if same_minute || rounds == 3 {
            break counted;
        }
    };
    assert_eq!(counted, [true, true, true, false, false]);
    // Another network is not held back.
    assert!(counted_from(&app, "198.51.100.1", 99).await);
    app.stop().await;
}

on_both_backends!(
    one_network_counts_at_most_its_quota_a_minute_and_the_rest_is_stored_uncounted,
    network_cap
);

#[tokio::test]
async fn a_challenge_from_the_api_is_solved_and_accepted_once() {
    let config =
        "[proof_of_work]\nmode = \"always\"\nsecret = \"shared challenge key\"\nmax_number = 500\n";
    let app = TestApp::spawn_with(Backend::Sqlite, config).await;
    let response = app
        .client
        .get(app.url("/api/v1/challenge"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let challenge: Challenge = response.json().await.unwrap();
    assert_eq!(
        (challenge.algorithm.as_str(), challenge.maxnumber),
        ("SHA-256", 500)
    );
    let solution = pow::solve(&challenge).unwrap();
    // What the form handler will do: verify with the same settings (the same key).
    let settings = Settings::from_toml(&[config]).unwrap();
    let verifier = ProofOfWork::new(&settings.proof_of_work);
    assert!(verifier.required(outagewatch::runtime::clock::now()));
    assert_eq!(
        verifier.verify(&solution, outagewatch::runtime::clock::now()),
        Ok(())
    );
    assert_eq!(
        verifier.verify(&solution, outagewatch::runtime::clock::now()),
        Err(PowError::Replayed)
    );
    app.stop().await;
}

/// Sends raw bytes on a new connection and reads until the server closes it (at most 5 s).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> (String, Duration) {
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let started = Instant::now();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[http]\nbody_read_timeout_ms = 300\n").await;
    let (answer, took) = raw_exchange(
        &app,
        b"POST /api/v1/reports HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"serv",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_cap_gets_503_and_idle_ones_are_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        "[http]\nmax_connections = 2\nheader_read_timeout_ms = 400\n",
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(app.address).await.unwrap());
    }
    let (answer, _) = raw_exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("too many open connections"), "{answer}");
    // The idle connections are closed by the server (read returns 0) soon after 400 ms.
    for mut stream in idle {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
    // With them gone, a new connection is served.
    let (answer, _) = raw_exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn every_answer_is_nosniff_and_errors_name_no_internals() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/api/v1/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body = response.text().await.unwrap();
    for leak in ["src/", ".rs", "sqlx", "panicked", "select "] {
        assert!(!body.contains(leak), "{body}");
    }
    app.stop().await;
}
