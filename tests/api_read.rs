//! Black-box tests of the dashboard reads: `/api/v1/counts`, `/api/v1/services`, `/api/v1/places`.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use common::TestApp;
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::incidents::{incident_id, Incident, Scope, Status};
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::store::{DetectionWrite, Expectation, Fingerprint, NewReport};
use serde_json::{json, Value};
use uuid::Uuid;

/// 2025-03-10T10:00:00Z, on the hour.
const T0: i64 = 1_741_600_800;

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + minutes * 60, 0).unwrap()
}

fn report(n: u8, country: &str, city: Option<&'static str>, minute: i64) -> NewReport {
    let catalog = Catalog::new([("x", "X")]);
    NewReport {
        id: Uuid::from_u128(u128::from(n)),
        client_id: true,
        received_at: at(minute),
        service: catalog.services()[0].slug.clone(),
        country: CountryCode::parse(country).unwrap(),
        city,
        problem: Problem::App,
        fingerprint: Fingerprint([n; 16]),
        dedup_window_start: at(minute - minute.rem_euclid(15)),
        network: None,
    }
}

fn expectation(country: &str, city: &str, quarter: i64, expected: f64) -> Expectation {
    Expectation {
        service: "x".into(),
        country: country.into(),
        city: city.into(),
        quarter: at(quarter * 15),
        expected,
    }
}

/// Reports in PK (Lahore at minutes 1 and 16, country-level at 2) and GB (minute 20), and
/// expectations for PK's first two quarters.
async fn app_with_counts(backend: common::Backend) -> TestApp {
    let app = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
    app.store
        .insert_reports(
            &[
                report(1, "PK", Some("Lahore"), 1),
                report(2, "PK", None, 2),
                report(3, "PK", Some("Lahore"), 16),
                report(4, "GB", Some("London"), 20),
            ],
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
    app.store
        .write_detection(&DetectionWrite {
            expectations: &[
                expectation("PK", "", 0, 1.5),
                expectation("PK", "", 1, 0.75),
                expectation("PK", "Lahore", 0, 0.5),
            ],
            ..DetectionWrite::default()
        })
        .await
        .unwrap();
    app
}

async fn get(app: &TestApp, path: &str) -> (u16, String, Value) {
    app.get_json(path).await
}

fn range(from: i64, to: i64) -> String {
    format!(
        "from={}&to={}",
        at(from).format("%Y-%m-%dT%H:%M:%SZ"),
        at(to).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

on_both_backends!(
    counts_come_in_dense_buckets_with_the_expectation,
    |backend| async move {
        let app = app_with_counts(backend).await;
        let (status, _, pk) = get(
            &app,
            &format!(
                "/api/v1/counts?service=x&country=pk&interval=15m&{}",
                range(0, 45)
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            pk["buckets"],
            json!([
                {"start": "2025-03-10T10:00:00Z", "count": 2, "expected": 1.5},
                {"start": "2025-03-10T10:15:00Z", "count": 1, "expected": 0.75},
                {"start": "2025-03-10T10:30:00Z", "count": 0, "expected": null},
            ])
        );
        assert_eq!(pk["country"], "PK");
        assert_eq!(pk["interval"], "15m");

        // A city by any spelling; an hour bucket sums its quarters' expectations.
        let (_, _, lahore) = get(
            &app,
            &format!(
                "/api/v1/counts?service=x&country=PK&city=LAHORE&interval=1h&{}",
                range(0, 60)
            ),
        )
        .await;
        assert_eq!(lahore["city"], "Lahore");
        assert_eq!(
            lahore["buckets"],
            json!([{"start": "2025-03-10T10:00:00Z", "count": 2, "expected": 0.5}])
        );

        // The service worldwide sums every country's total.
        let (_, _, world) = get(
            &app,
            &format!("/api/v1/counts?service=x&interval=1h&{}", range(0, 60)),
        )
        .await;
        assert_eq!(world["buckets"][0]["count"], 4);
        assert_eq!(world["buckets"][0]["expected"], Value::Null);

        // Minute buckets start at the floor of `from`.
        let (_, _, minutes) = get(
            &app,
            &format!(
                "/api/v1/counts?service=x&country=PK&interval=1m&{}",
                range(1, 3)
            ),
        )
        .await;
        assert_eq!(
            minutes["buckets"],
            json!([
                {"start": "2025-03-10T10:01:00Z", "count": 1, "expected": 0.1},
                {"start": "2025-03-10T10:02:00Z", "count": 1, "expected": 0.1},
            ])
        );
        app.stop().await;
    }
);

on_both_backends!(
    bad_counts_parameters_are_400_problems_naming_the_parameter,
    |backend| async move {
        let app = app_with_counts(backend).await;
        let cases = [
            ("/api/v1/counts".to_owned(), "service"),
            ("/api/v1/counts?service=myspace".to_owned(), "service"),
            (
                "/api/v1/counts?service=x&interval=2m".to_owned(),
                "interval",
            ),
            ("/api/v1/counts?service=x&country=XX".to_owned(), "country"),
            ("/api/v1/counts?service=x&city=Lahore".to_owned(), "city"),
            (
                "/api/v1/counts?service=x&country=PK&city=Rawalpindy".to_owned(),
                "city",
            ),
            (format!("/api/v1/counts?service=x&{}", range(60, 0)), "from"),
            (
                format!(
                    "/api/v1/counts?service=x&interval=1m&{}",
                    range(0, 8 * 1440)
                ),
                "from",
            ),
            ("/api/v1/counts?service=x&to=tomorrow".to_owned(), "to"),
            ("/api/v1/counts?service=x&colour=red".to_owned(), "colour"),
            ("/api/v1/places?q=lah".to_owned(), "country"),
            ("/api/v1/places?country=PK".to_owned(), "q"),
            ("/api/v1/places?country=PK&q=la&limit=0".to_owned(), "limit"),
            // Longer than any city name the gazetteer holds (the document's maxLength).
            (
                format!("/api/v1/places?country=PK&q={}", "a".repeat(101)),
                "q",
            ),
            ("/api/v1/services?x=1".to_owned(), "x"),
        ];
        for (path, field) in cases {
            let (status, content_type, problem) = get(&app, &path).await;
            assert_eq!(status, 400, "{path}");
            assert_eq!(content_type, "application/problem+json", "{path}");
            assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
        }
        app.stop().await;
    }
);

on_both_backends!(
    services_show_status_and_the_last_day_and_places_suggest_cities,
    |backend| async move {
        let app = app_with_counts(backend).await;
        let response = app
            .post_reports(&json!({"service":"x","country":"PK","problem":"app"}))
            .await;
        assert_eq!(response.status(), 201);
        let started_at = at(0);
        let open = Incident {
            id: incident_id("youtube", Some("GB"), None, started_at),
            service: "youtube".into(),
            scope: Scope::Country,
            country: Some("GB".into()),
            city: None,
            status: Status::Open,
            started_at,
            detected_at: started_at,
            peak_at: started_at,
            peak_count: 50.0,
            expected_at_peak: 5.0,
            start_count: 20.0,
            excess_reports: 45.0,
            resolved_at: None,
            top_cities: Vec::new(),
            problems: Default::default(),
            parent_id: None,
            summary: "Reports about YouTube in United Kingdom rose.".into(),
            updated_at: started_at,
            note: None,
            resolved_by: None,
        };
        app.store
            .write_detection(&DetectionWrite {
                incidents: std::slice::from_ref(&open),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        let (status, _, body) = get(&app, "/api/v1/services").await;
        assert_eq!(status, 200);
        let services = body["services"].as_array().unwrap();
        assert_eq!(services.len(), 10);
        let find = |slug: &str| services.iter().find(|s| s["slug"] == slug).unwrap().clone();
        assert_eq!(
            find("x"),
            json!({"slug":"x","name":"X (Twitter)","status":"normal","open_incidents":0,"reports_24h":1})
        );
        assert_eq!(find("youtube")["status"], "incident");
        assert_eq!(find("youtube")["open_incidents"], 1);

        let (status, _, places) = get(&app, "/api/v1/places?country=pk&q=lah&limit=3").await;
        assert_eq!(status, 200);
        assert_eq!(places["places"][0]["name"], "Lahore");
        assert_eq!(places["places"][0]["country"], "PK");
        assert!(places["places"].as_array().unwrap().len() <= 3);
        let (_, _, brazil) = get(&app, "/api/v1/places?country=BR&q=sao%20p").await;
        assert_eq!(brazil["places"][0]["name"], "São Paulo");
        app.stop().await;
    }
);

on_both_backends!(
    regions_rank_by_count_with_expectation_ratio_and_status,
    |backend| async move {
        let app = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
        let now = outagewatch::runtime::clock::now();
        let catalog = Catalog::new([("x", "X")]);
        let recent = |n: u8, country: &str, city: Option<&'static str>| NewReport {
            id: Uuid::from_u128(1000 + u128::from(n)),
            client_id: true,
            received_at: now - chrono::Duration::minutes(5),
            service: catalog.services()[0].slug.clone(),
            country: CountryCode::parse(country).unwrap(),
            city,
            problem: Problem::App,
            fingerprint: Fingerprint([n; 16]),
            dedup_window_start: now - chrono::Duration::minutes(20),
            network: None,
        };
        let mut batch = Vec::new();
        for n in 0..30u8 {
            batch.push(recent(n, "PK", (n < 20).then_some("Lahore")));
        }
        for n in 30..42u8 {
            batch.push(recent(n, "GB", None));
        }
        for n in 42..45u8 {
            batch.push(recent(n, "US", None));
        }
        app.store
            .insert_reports(&batch, outagewatch::runtime::clock::now())
            .await
            .unwrap();
        // A constant expectation per quarter over the last 26 hours: 24 h hold exactly 96 quarters.
        let first_quarter =
            DateTime::from_timestamp((now.timestamp() - 26 * 3600).div_euclid(900) * 900, 0)
                .unwrap();
        let mut expectations = Vec::new();
        for q in 0..(27 * 4) {
            for (country, expected) in [("PK", 0.25), ("GB", 0.05)] {
                expectations.push(Expectation {
                    service: "x".into(),
                    country: country.into(),
                    city: String::new(),
                    quarter: first_quarter + chrono::Duration::minutes(15 * q),
                    expected,
                });
            }
        }
        let us = Incident {
            id: incident_id("x", Some("US"), None, now),
            service: "x".into(),
            scope: Scope::Country,
            country: Some("US".into()),
            city: None,
            status: Status::Open,
            started_at: now,
            detected_at: now,
            peak_at: now,
            peak_count: 3.0,
            expected_at_peak: 1.0,
            start_count: 3.0,
            excess_reports: 2.0,
            resolved_at: None,
            top_cities: Vec::new(),
            problems: Default::default(),
            parent_id: None,
            summary: String::new(),
            updated_at: now,
            note: None,
            resolved_by: None,
        };
        app.store
            .write_detection(&DetectionWrite {
                incidents: std::slice::from_ref(&us),
                expectations: &expectations,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();

        let (status, _, body) = get(&app, "/api/v1/regions?service=x&window=24h").await;
        assert_eq!(status, 200);
        assert_eq!(
            body["regions"],
            json!([
                {"country":"PK","city":null,"name":"Pakistan","count":30,"expected":24.0,"ratio":1.25,"status":"normal","incident_id":null},
                {"country":"GB","city":null,"name":"United Kingdom","count":12,"expected":4.8,"ratio":2.5,"status":"elevated","incident_id":null},
                {"country":"US","city":null,"name":"United States","count":3,"expected":null,"ratio":null,"status":"incident","incident_id":us.id},
            ])
        );
        let (_, _, cities) = get(
            &app,
            "/api/v1/regions?service=x&level=city&country=PK&window=15m",
        )
        .await;
        assert_eq!(
            cities["regions"],
            json!([{"country":"PK","city":"Lahore","name":"Lahore","count":20,"expected":null,"ratio":null,"status":"normal","incident_id":null}])
        );
        // Without a country, cities are ranked worldwide.
        let (_, _, world_cities) =
            get(&app, "/api/v1/regions?service=x&level=city&window=1h").await;
        assert_eq!(world_cities["regions"], cities["regions"]);
        let (_, _, top) = get(&app, "/api/v1/regions?service=x&window=24h&limit=2").await;
        let names: Vec<&str> = top["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["country"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["PK", "GB"]);
        let cursor = top["next_cursor"].as_str().unwrap();
        let (_, _, rest) = get(
            &app,
            &format!("/api/v1/regions?service=x&window=24h&limit=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(rest["regions"][0]["country"], "US");
        assert_eq!(rest["regions"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_cursor"], Value::Null);
        for (path, field) in [
            ("/api/v1/regions", "service"),
            ("/api/v1/regions?service=x&level=state", "level"),
            ("/api/v1/regions?service=x&window=2h", "window"),
            ("/api/v1/regions?service=x&limit=0", "limit"),
            ("/api/v1/regions?service=x&country=ZZ", "country"),
            ("/api/v1/regions?service=x&cursor=7", "cursor"),
        ] {
            let (status, _, problem) = get(&app, path).await;
            assert_eq!(status, 400, "{path}");
            assert_eq!(problem["errors"][0]["field"], field, "{path}");
        }
        app.stop().await;
    }
);

on_both_backends!(
    reads_carry_an_etag_answer_304_when_unchanged_and_allow_any_origin,
    |backend| async move {
        let app = app_with_counts(backend).await;
        let path = format!("/api/v1/counts?service=x&country=PK&{}", range(0, 45));
        let first = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let tag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(tag.len(), 34, "{tag}");
        assert_eq!(first.headers()["cache-control"], "public, max-age=15");
        let body = first.text().await.unwrap();

        let again = app
            .client
            .get(app.url(&path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().unwrap(), tag);
        assert_eq!(again.text().await.unwrap(), "");

        // New data, new tag: the old one no longer matches.
        app.store
            .insert_reports(
                &[report(9, "PK", None, 3)],
                outagewatch::runtime::clock::now(),
            )
            .await
            .unwrap();
        let changed = app
            .client
            .get(app.url(&path))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200);
        assert_ne!(changed.headers()["etag"].to_str().unwrap(), tag);
        assert_ne!(changed.text().await.unwrap(), body);

        // Compressed on request; open to any origin.
        let gzipped = app
            .client
            .get(app.url("/api/v1/services"))
            .header("accept-encoding", "gzip")
            .header("origin", "https://dashboard.example")
            .send()
            .await
            .unwrap();
        assert_eq!(gzipped.status(), 200);
        assert_eq!(gzipped.headers()["content-encoding"], "gzip");
        assert_eq!(gzipped.headers()["access-control-allow-origin"], "*");
        app.stop().await;
    }
);

on_both_backends!(every_read_answers_csv_on_request, |backend| async move {
    let app = app_with_counts(backend).await;
    let text = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        response.text().await.unwrap()
    };
    let counts = app
        .client
        .get(app.url(&format!(
            "/api/v1/counts?service=x&country=PK&format=csv&{}",
            range(0, 45)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        text(counts).await,
        "start,count,expected\n\
             2025-03-10T10:00:00Z,2,1.5\n\
             2025-03-10T10:15:00Z,1,0.75\n\
             2025-03-10T10:30:00Z,0,\n"
    );
    // The Accept header works as well as format=csv.
    let places = app
        .client
        .get(app.url("/api/v1/places?country=PK&q=rawal&limit=1"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let places = text(places).await;
    assert!(
        places.starts_with(
            "name,ascii_name,country,latitude,longitude,population\nRawalpindi,Rawalpindi,PK,"
        ),
        "{places}"
    );
    let services = app
        .client
        .get(app.url("/api/v1/services?format=csv"))
        .send()
        .await
        .unwrap();
    let services = text(services).await;
    assert_eq!(services.lines().count(), 11, "{services}");
    assert_eq!(
        services.lines().next(),
        Some("slug,name,status,open_incidents,reports_24h")
    );
    // JSON stays the default, and an unknown format is a 400 naming it.
    let (status, content_type, _) = get(&app, "/api/v1/services?format=json").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let (status, _, problem) = get(&app, "/api/v1/services?format=xml").await;
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["field"], "format");
    app.stop().await;
});

on_both_backends!(
    a_percent_encoded_format_is_read_as_the_plain_one,
    |backend| async move {
        let app = app_with_counts(backend).await;
        let csv = |path: String| {
            let app = &app;
            async move {
                let response = app.client.get(app.url(&path)).send().await.unwrap();
                assert_eq!(response.status(), 200, "{path}");
                assert_eq!(
                    response.headers()["content-type"],
                    "text/csv; charset=utf-8",
                    "{path}"
                );
                response.text().await.unwrap()
            }
        };
        let plain = csv(format!(
            "/api/v1/counts?service=x&format=csv&{}",
            range(0, 45)
        ))
        .await;
        // `%63sv` is `csv`, and `%66ormat` is `format` (removed before the handler sees it).
        let encoded = csv(format!(
            "/api/v1/counts?service=x&format=%63sv&{}",
            range(0, 45)
        ))
        .await;
        let encoded_name = csv(format!(
            "/api/v1/counts?service=x&%66ormat=csv&{}",
            range(0, 45)
        ))
        .await;
        assert!(plain.starts_with("start,count,expected\n"), "{plain}");
        assert_eq!(encoded, plain);
        assert_eq!(encoded_name, plain);
        app.stop().await;
    }
);

on_both_backends!(
    a_read_answer_is_shared_for_the_cache_seconds_per_url_and_format,
    |backend| async move {
        let app = TestApp::spawn_with(
            backend,
            "[http]\nread_cache_seconds = 3600\n[detector]\nenabled = false\n",
        )
        .await;
        let path = format!(
            "/api/v1/counts?service=x&country=PK&interval=1h&{}",
            range(0, 60)
        );
        let (status, _, first) = get(&app, &path).await;
        assert_eq!(status, 200);
        assert_eq!(
            first["buckets"],
            json!([{"start": "2025-03-10T10:00:00Z", "count": 0, "expected": null}])
        );

        app.store
            .insert_reports(
                &[report(1, "PK", None, 5)],
                outagewatch::runtime::clock::now(),
            )
            .await
            .unwrap();
        // The same URL is answered from the cache, so it does not see the new report yet.
        let (_, _, cached) = get(&app, &path).await;
        assert_eq!(cached, first);
        // Another URL (and another format of the same URL) is computed afresh.
        let (_, _, other) = get(&app, &path.replace("country=PK", "country=pk")).await;
        assert_eq!(other["buckets"][0]["count"], 1);
        let csv = app
            .client
            .get(app.url(&path))
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(csv, "start,count,expected\n2025-03-10T10:00:00Z,1,\n");
        // A gzipped answer is kept gzipped: the same bytes again, though a report came since.
        let gzipped = || async {
            let response = app
                .client
                .get(app.url(&path))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["content-encoding"], "gzip");
            response.bytes().await.unwrap()
        };
        let first_gzip = gzipped().await;
        let mut json = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(&first_gzip[..]),
            &mut json,
        )
        .unwrap();
        let json: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["buckets"][0]["count"], 1);
        app.store
            .insert_reports(
                &[report(2, "PK", None, 6)],
                outagewatch::runtime::clock::now(),
            )
            .await
            .unwrap();
        assert_eq!(gzipped().await, first_gzip);
        app.stop().await;
    }
);

on_both_backends!(
    minute_counts_past_retention_are_refused_and_quarters_still_answer,
    |backend| async move {
        // 400 days of minutes: the 2025 reports' minutes are past it, their quarters are not.
        let app = TestApp::spawn_with(
            backend,
            "[detector]\nenabled = false\n[retention]\nminute_rollups_days = 400\n",
        )
        .await;
        app.store
            .insert_reports(
                &[report(1, "PK", None, 1), report(2, "PK", None, 16)],
                outagewatch::runtime::clock::now(),
            )
            .await
            .unwrap();
        let (status, content_type, problem) = get(
            &app,
            &format!("/api/v1/counts?service=x&interval=1m&{}", range(0, 60)),
        )
        .await;
        assert_eq!(
            (status, content_type.as_str()),
            (400, "application/problem+json")
        );
        assert_eq!(problem["errors"][0]["field"], "from");
        let first_kept =
            (outagewatch::runtime::clock::now() - chrono::TimeDelta::days(400)).date_naive();
        assert_eq!(
            problem["errors"][0]["message"],
            format!(
                "counts at 1m are kept from {first_kept} on (retention.minute_rollups_days); \
                 start there or ask for 15m or wider, kept longer"
            ),
            "{problem}"
        );
        let (status, _, quarters) = get(
            &app,
            &format!(
                "/api/v1/counts?service=x&country=PK&interval=15m&{}",
                range(0, 30)
            ),
        )
        .await;
        assert_eq!(status, 200, "{quarters}");
        let counts: Vec<i64> = quarters["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .collect();
        assert_eq!(counts, vec![1, 1]);
        app.stop().await;
    }
);
