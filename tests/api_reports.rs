//! Black-box tests of the report API over HTTP, on a port-0 server.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use chrono::Duration;
use common::{Backend, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

fn fields_of(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect()
}

/// Sum of the country-total rollup rows of `service` over the last hour and next minute.
async fn counted_total(app: &TestApp, service: &str) -> i64 {
    let now = outagewatch::runtime::clock::now();
    let rows = app
        .store
        .rollups(
            service,
            now - Duration::hours(1),
            now + Duration::minutes(2),
        )
        .await
        .unwrap();
    rows.iter()
        .filter(|r| r.city.is_empty())
        .map(|r| r.count)
        .sum()
}

#[tokio::test]
async fn a_report_is_acknowledged_with_201_after_it_is_stored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .post_reports(&json!({"service":"x","country":"pk","city":"LAHORE","problem":"app"}))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["counted"], true);
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let stored = app.store.report(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.country.as_str(), stored.city.as_deref()),
        ("PK", Some("Lahore"))
    );
    assert_eq!(counted_total(&app, "x").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn city_names_are_stored_under_their_canonical_gazetteer_name() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (country, input, canonical) in [
        ("PK", "rawalpindi", "Rawalpindi"),
        ("PK", " Karachi ", "Karachi"),
        ("BR", "Sao Paulo", "São Paulo"),
        ("IN", "Bombay", "Mumbai"),
    ] {
        let response = app
            .post_reports(&json!({"service":"x","country":country,"city":input,"problem":"login"}))
            .await;
        assert_eq!(response.status(), 201, "{input}");
        let id: Uuid = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            app.store.report(id).await.unwrap().unwrap().city.as_deref(),
            Some(canonical)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn each_invalid_field_is_a_422_naming_the_field() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let cases = [
        (json!({"country":"PK","problem":"app"}), vec!["service"]),
        (
            json!({"service":"myspace","country":"PK","problem":"app"}),
            vec!["service"],
        ),
        (
            json!({"service":"x","country":"XX","problem":"app"}),
            vec!["country"],
        ),
        (
            json!({"service":"x","country":"PK","problem":"slow"}),
            vec!["problem"],
        ),
        (
            json!({"service":"x","country":"PK","problem":"app","id":"42"}),
            vec!["id"],
        ),
        (
            json!({"service":"x","country":"PK","problem":"app","contry":"PK"}),
            vec!["contry"],
        ),
        (
            json!({"service":7,"country":"PK","problem":"app"}),
            vec!["service"],
        ),
        (
            json!({"service":"x","country":"PK","city":"Atlantis","problem":"app"}),
            vec!["city"],
        ),
        (json!(["x"]), vec!["body"]),
        (json!({"reports":[]}), vec!["reports"]),
        (
            json!({"reports":[{"service":"x","country":"PK","problem":"app"},{"service":"x","country":"ZZ","problem":"nope"}]}),
            vec!["reports[1].country", "reports[1].problem"],
        ),
    ];
    for (body, fields) in cases {
        let (status, problem) = problem(app.post_reports(&body).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["type"], "/problems/validation");
        assert_eq!(fields_of(&problem), fields, "{body}");
    }
    // Nothing of any rejected body was stored, not even the valid first report of the batch.
    assert_eq!(app.store.report_count().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_city_suggests_the_closest_names_in_that_country() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, problem) = problem(
        app.post_reports(
            &json!({"service":"x","country":"PK","city":"Rawalpindy","problem":"app"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "city");
    assert_eq!(
        problem["errors"][0]["message"],
        "\"Rawalpindy\" is not a known city in Pakistan"
    );
    assert_eq!(problem["errors"][0]["suggestions"][0], "Rawalpindi");
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_wrong_type_and_oversized_bodies_are_400_415_413() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/reports"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, body) = problem(
        post(b"{\"service\":".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("/problems/malformed-json"))
    );
    let (status, _) = problem(
        post(b"service=x".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415);
    let big = format!(
        "{{\"service\":\"x\",\"country\":\"PK\",\"problem\":\"app\",\"pad\":\"{}\"}}",
        "a".repeat(70_000)
    );
    let (status, body) = problem(post(big.into_bytes(), "application/json").await.unwrap()).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (413, Some("the body is larger than 65536 bytes"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_over_1000_reports_is_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[http]\nmax_body_bytes = 1000000").await;
    let reports: Vec<Value> = (0..1001)
        .map(|_| json!({"service":"x","country":"PK","problem":"app"}))
        .collect();
    let (status, problem) = problem(app.post_reports(&json!({ "reports": reports })).await).await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["errors"][0]["message"],
        "a batch holds 1 to 1000 reports, not 1001"
    );
    app.stop().await;
}

async fn idempotent_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = Uuid::new_v4();
    let body = json!({"service":"x","country":"PK","problem":"app","id":id});
    let first = app.post_reports(&body).await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"id":id,"counted":true,"replay":false})
    );
    let retry = app.post_reports(&body).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(
        retry.json::<Value>().await.unwrap(),
        json!({"id":id,"counted":true,"replay":true})
    );
    assert_eq!(app.store.report_count().await.unwrap(), 1);
    assert_eq!(counted_total(&app, "x").await, 1);
    app.stop().await;
}

on_both_backends!(
    retrying_with_the_same_id_is_a_200_with_the_original_outcome,
    idempotent_retry
);

async fn duplicate_not_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"service":"x","country":"PK","city":"Lahore","problem":"app"});
    let first: Value = app.post_reports(&body).await.json().await.unwrap();
    let second = app.post_reports(&body).await;
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    assert_eq!(
        (first["counted"].as_bool(), second["counted"].as_bool()),
        (Some(true), Some(false))
    );
    // Another service is another count.
    let other: Value = app
        .post_reports(&json!({"service":"youtube","country":"PK","problem":"app"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(other["counted"], true);
    assert_eq!(app.store.report_count().await.unwrap(), 3);
    assert_eq!(counted_total(&app, "x").await, 1);
    app.stop().await;
}

on_both_backends!(
    a_duplicate_report_is_stored_but_not_counted,
    duplicate_not_counted
);

async fn many_concurrent_clients(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let mut clients = Vec::new();
    for client in 0..100 {
        let app = app.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().user_agent(format!("client-{client}")).build().unwrap();
            let mut acknowledged = Vec::new();
            for i in 0..50 {
                let body = json!({"service": if i % 2 == 0 {"x"} else {"youtube"}, "country":"PK","city":"Lahore","problem":"app","id":Uuid::new_v4()});
                let response = http.post(app.url("/api/v1/reports")).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201);
                let receipt: Value = response.json().await.unwrap();
                acknowledged.push((receipt["id"].as_str().unwrap().parse::<Uuid>().unwrap(), receipt["counted"].as_bool().unwrap()));
            }
            acknowledged
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    let ids: HashSet<Uuid> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 5000);
    let ids: Vec<Uuid> = ids.into_iter().collect();
    assert_eq!(app.store.stored_ids(&ids).await.unwrap().len(), 5000);
    assert_eq!(app.store.report_count().await.unwrap(), 5000);
    // Each client is one reporter: counted once per service (two services), unless the run
    // straddled a dedup window boundary, in which case the store's rollups still equal the
    // counted outcomes it answered.
    let counted = all.iter().filter(|(_, counted)| *counted).count() as i64;
    assert!((200..=400).contains(&counted), "{counted}");
    assert_eq!(
        counted_total(&app, "x").await + counted_total(&app, "youtube").await,
        counted
    );
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("clients still hold the app"),
    }
}

on_both_backends!(
    a_hundred_concurrent_clients_have_every_report_stored_exactly_once,
    many_concurrent_clients
);

#[tokio::test]
async fn over_the_rate_limit_a_client_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(Backend::Sqlite, "[rate_limit]\nper_ip_per_minute = 3").await;
    let body = json!({"service":"x","country":"PK","problem":"app"});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.post_reports(&body).await);
    }
    let last = statuses.pop().unwrap();
    assert_eq!(
        statuses
            .iter()
            .map(|r| r.status().as_u16())
            .collect::<Vec<_>>(),
        [201, 201, 201]
    );
    assert_eq!(last.status(), 429);
    assert_eq!(last.headers()["retry-after"], "20");
    let (_, problem) = problem(last).await;
    assert_eq!(problem["type"], "/problems/rate-limited");
    // A forged X-Forwarded-For does not make a new client when no proxy is trusted.
    let forged = app
        .client
        .post(app.url("/api/v1/reports"))
        .header("x-forwarded-for", "203.0.113.77")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 429);
    assert_eq!(app.store.report_count().await.unwrap(), 3);
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer_while_the_store_is_up() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (
            health.status().as_u16(),
            health.json::<Value>().await.unwrap()
        ),
        (200, json!({"status":"ok"}))
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        (
            ready.status().as_u16(),
            ready.json::<Value>().await.unwrap()
        ),
        (200, json!({"status":"ready"}))
    );
    let (status, _) = problem(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn when_the_store_is_gone_reports_get_503_with_retry_after_quickly() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let body = json!({"service":"x","country":"PK","problem":"app"});
    assert_eq!(app.post_reports(&body).await.status(), 201);
    // Take the database away under the running service.
    let admin = sqlx::PgPool::connect(&std::env::var(common::POSTGRES_ENV).unwrap())
        .await
        .unwrap();
    let name = app.db.url.rsplit('/').next().unwrap().to_string();
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&admin)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let id = Uuid::new_v4();
    let response = app
        .post_reports(&json!({"service":"x","country":"PK","problem":"app","id":id}))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (_, problem) = problem(response).await;
    assert_eq!(problem["type"], "/problems/unavailable");
    assert_eq!(problem["ids"], json!([id]));
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_and_a_stuck_store_answer_503_fast_and_retries_find_what_was_stored() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        "[ingest]\nqueue_capacity = 1\nwriters = 1\ncommit_timeout_ms = 500",
    )
    .await;
    // The first report of the day fetches the day's fingerprint secret from the store; get
    // that done before the store gets stuck.
    assert_eq!(
        app.post_reports(&json!({"service":"youtube","country":"PK","problem":"app"}))
            .await
            .status(),
        201
    );
    // Another process holds SQLite's write lock: the writer's transaction waits on it.
    let mut blocker = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("begin immediate")
        .execute(&mut blocker)
        .await
        .unwrap();

    let report = |id: Uuid| json!({"service":"x","country":"PK","problem":"app","id":id});
    let app = std::sync::Arc::new(app);
    // Four at once: the writer takes one (and waits on the lock), the queue holds one, and
    // whatever finds the queue full is refused at once. Which is which depends on arrival.
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let requests: Vec<_> = ids
        .iter()
        .map(|&id| {
            let app = app.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let response = app.post_reports(&report(id)).await;
                let elapsed = started.elapsed();
                assert_eq!(response.status(), 503);
                assert_eq!(response.headers()["retry-after"], "1");
                let (_, body) = problem(response).await;
                assert_eq!(body["ids"], json!([id]));
                (id, body["detail"].as_str().unwrap().to_string(), elapsed)
            })
        })
        .collect();
    let mut refused = Vec::new();
    let mut unconfirmed = Vec::new();
    for request in requests {
        let (id, detail, elapsed) = request.await.unwrap();
        match detail.as_str() {
            "too many reports are waiting to be stored; retry shortly" => {
                assert!(elapsed < std::time::Duration::from_millis(400), "{elapsed:?}");
                refused.push(id);
            }
            "the store did not confirm in time; the reports may be stored: retry with the same ids" => {
                assert!(elapsed >= std::time::Duration::from_millis(500), "{elapsed:?}");
                unconfirmed.push(id);
            }
            other => panic!("unexpected 503: {other}"),
        }
    }
    assert!(
        !refused.is_empty() && !unconfirmed.is_empty(),
        "{refused:?} {unconfirmed:?}"
    );
    assert_eq!(refused.len() + unconfirmed.len(), 4);

    // Once the lock is gone the queued reports commit. A retry of an unconfirmed one finds it
    // stored (200); a refused one was never taken, so its retry stores it (201).
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();
    let mut answers = Vec::new();
    for id in unconfirmed.iter().chain(&refused) {
        let mut answer = app.post_reports(&report(*id)).await;
        // The writer may still be finishing the batch it was stuck on: wait for it, bounded.
        for _ in 0..50 {
            if answer.status() != 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            answer = app.post_reports(&report(*id)).await;
        }
        answers.push(answer.status().as_u16());
    }
    let expected: Vec<u16> = unconfirmed
        .iter()
        .map(|_| 200)
        .chain(refused.iter().map(|_| 201))
        .collect();
    assert_eq!(answers, expected);
    assert_eq!(app.store.report_count().await.unwrap(), 5);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}
