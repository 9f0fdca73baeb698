//! Black-box tests of the API's description: `/api/openapi.json` against the routes that answer, and the `/api/docs` page.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Read;

use common::{Backend, TestApp};
use serde_json::{json, Value};

/// Every route the router serves: (method, OpenAPI path, a plausible request path, the status
/// that request gets). A path parameter the router did not match would get the fallback's
/// 404 `/problems/not-found`, so none of these expects that.
const ROUTES: [(&str, &str, &str, u16); 22] = [
    ("POST", "/api/v1/reports", "/api/v1/reports", 201),
    ("GET", "/api/v1/challenge", "/api/v1/challenge", 200),
    // Admin routes answer 401 before anything else without a bearer token.
    (
        "GET",
        "/api/v1/admin/services",
        "/api/v1/admin/services",
        401,
    ),
    (
        "PUT",
        "/api/v1/admin/services/{slug}",
        "/api/v1/admin/services/bluesky",
        401,
    ),
    (
        "PUT",
        "/api/v1/admin/incidents/{id}/note",
        "/api/v1/admin/incidents/0b5e5c2a-7d3e-4c1a-9f55-2f8f2d1c9a10/note",
        401,
    ),
    (
        "POST",
        "/api/v1/admin/incidents/{id}/resolve",
        "/api/v1/admin/incidents/0b5e5c2a-7d3e-4c1a-9f55-2f8f2d1c9a10/resolve",
        401,
    ),
    (
        "POST",
        "/api/v1/admin/redetect",
        "/api/v1/admin/redetect",
        401,
    ),
    ("GET", "/api/v1/counts", "/api/v1/counts?service=x", 200),
    ("GET", "/api/v1/services", "/api/v1/services", 200),
    (
        "GET",
        "/api/v1/places",
        "/api/v1/places?country=PK&q=lah",
        200,
    ),
    ("GET", "/api/v1/regions", "/api/v1/regions?service=x", 200),
    ("GET", "/api/v1/incidents", "/api/v1/incidents", 200),
    // Not a UUID: the incident handler's own 400, which the fallback never answers.
    (
        "GET",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/not-a-uuid",
        400,
    ),
    ("GET", "/api/v1/events", "/api/v1/events?service=x", 200),
    (
        "GET",
        "/feeds/incidents.atom",
        "/feeds/incidents.atom?service=x",
        200,
    ),
    ("GET", "/badge/{file}", "/badge/x.svg", 200),
    ("GET", "/metrics", "/metrics", 200),
    ("GET", "/healthz", "/healthz", 200),
    ("GET", "/readyz", "/readyz", 200),
    ("GET", "/api/openapi.json", "/api/openapi.json", 200),
    ("GET", "/api/docs", "/api/docs", 200),
    ("GET", "/api/docs/{file}", "/api/docs/init.js", 200),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, "[detector]\nenabled = false\n").await
}

async fn spec(app: &TestApp) -> Value {
    let (status, content_type, spec) = app.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    spec
}

/// The operation at `method` (lower case) and `path`.
fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &spec["paths"][path][method];
    assert!(operation.is_object(), "no {method} {path} in the spec");
    operation
}

/// The query or path parameter `name` of an operation.
fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

fn names(operation: &Value) -> Vec<&str> {
    operation["parameters"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// Every `$ref` anywhere under `value`.
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (key, item) in fields {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => references(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_spec_is_openapi_3_with_the_crate_version_and_licence() {
    let app = app().await;
    let spec = spec(&app).await;
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["title"], "outagewatch");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(spec["info"]["license"]["identifier"], "MIT OR Apache-2.0");
    assert!(spec["info"]["description"]
        .as_str()
        .unwrap()
        .contains("application/problem+json"));
    app.stop().await;
}

#[tokio::test]
async fn the_spec_lists_every_route_and_every_listed_route_answers() {
    let app = app().await;
    let spec = spec(&app).await;
    let listed: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(listed, expected);

    for (method, _, request, status) in ROUTES {
        let response = match (method, request) {
            ("POST", "/api/v1/reports") => {
                app.post_reports(&json!({"service": "x", "country": "PK", "problem": "app"}))
                    .await
            }
            ("GET", _) => app.client.get(app.url(request)).send().await.unwrap(),
            (method, _) => app
                .client
                .request(method.parse().unwrap(), app.url(request))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        };
        assert_eq!(response.status().as_u16(), status, "{method} {request}");
        // The stream never ends; its headers are enough.
        if request.starts_with("/api/v1/events") {
            continue;
        }
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        assert!(
            !(content_type == "application/problem+json" && body.contains("/problems/not-found")),
            "{request}: {body}"
        );
    }
    // And a path nobody registered is the fallback's.
    let (status, _, problem) = app.get_json("/api/v2/counts").await;
    assert_eq!(
        (status, &problem["type"]),
        (404, &json!("/problems/not-found"))
    );
    app.stop().await;
}

#[tokio::test]
async fn every_operation_parameter_and_answer_is_described_with_examples() {
    let app = app().await;
    let spec = spec(&app).await;
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            assert!(
                operation["summary"].as_str().is_some_and(|s| s.len() > 8),
                "{at}"
            );
            assert_eq!(operation["tags"].as_array().map(Vec::len), Some(1), "{at}");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(
                    parameter["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{at} {}",
                    parameter["name"]
                );
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(response["description"].is_string(), "{at} {status}");
                for (media_type, content) in response["content"].as_object().into_iter().flatten() {
                    if media_type == "application/problem+json" {
                        assert_eq!(
                            content["schema"],
                            json!({"$ref": "#/components/schemas/Problem"}),
                            "{at} {status}"
                        );
                    }
                    // The docs page's own files are their example.
                    let is_docs = operation["tags"][0] == "docs" && status == "200";
                    assert!(
                        is_docs
                            || content.get("example").is_some()
                            || content.get("examples").is_some(),
                        "{at} {status} {media_type} has no example"
                    );
                }
            }
        }
    }
    assert_eq!(operations, ROUTES.len());
    app.stop().await;
}

#[tokio::test]
async fn every_reference_in_the_spec_resolves_to_a_schema() {
    let app = app().await;
    let spec = spec(&app).await;
    let mut found = Vec::new();
    references(&spec, &mut found);
    assert!(found.contains(&"#/components/schemas/Problem"));
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} is not a schema reference"));
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{target} does not resolve"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_read_parameters_are_documented_with_their_choices_and_bounds() {
    let app = app().await;
    let spec = spec(&app).await;

    let counts = operation(&spec, "get", "/api/v1/counts");
    assert_eq!(
        names(counts),
        ["service", "country", "city", "interval", "from", "to", "format"]
    );
    assert_eq!(parameter(counts, "service")["required"], true);
    assert_eq!(parameter(counts, "service")["in"], "query");
    assert_eq!(parameter(counts, "country")["required"], false);
    let interval = &parameter(counts, "interval")["schema"];
    assert_eq!(interval["enum"], json!(["1m", "5m", "15m", "1h", "1d"]));
    assert_eq!(interval["default"], "15m");
    assert_eq!(parameter(counts, "from")["schema"]["format"], "date-time");
    assert_eq!(
        parameter(counts, "format")["schema"]["enum"],
        json!(["json", "csv"])
    );

    let regions = operation(&spec, "get", "/api/v1/regions");
    assert_eq!(
        names(regions),
        ["service", "level", "country", "window", "limit", "cursor", "format"]
    );
    let level = &parameter(regions, "level")["schema"];
    assert_eq!(
        (&level["enum"], &level["default"]),
        (&json!(["country", "city"]), &json!("country"))
    );
    let window = &parameter(regions, "window")["schema"];
    assert_eq!(
        (&window["enum"], &window["default"]),
        (&json!(["15m", "1h", "24h"]), &json!("1h"))
    );
    let limit = &parameter(regions, "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(1000))
    );

    let incidents = operation(&spec, "get", "/api/v1/incidents");
    assert_eq!(
        names(incidents),
        ["service", "country", "status", "since", "limit", "cursor", "format"]
    );
    assert_eq!(
        parameter(incidents, "status")["schema"]["enum"],
        json!(["open", "resolved", "all"])
    );
    let id = parameter(operation(&spec, "get", "/api/v1/incidents/{id}"), "id");
    assert_eq!((&id["in"], &id["required"]), (&json!("path"), &json!(true)));
    assert_eq!(id["schema"]["format"], "uuid");

    let places = operation(&spec, "get", "/api/v1/places");
    assert_eq!(names(places), ["country", "q", "limit", "format"]);
    assert_eq!(parameter(places, "limit")["schema"]["maximum"], 50);
    assert_eq!(
        names(operation(&spec, "get", "/api/v1/events")),
        ["service"]
    );
    assert_eq!(
        names(operation(&spec, "get", "/badge/{file}")),
        ["file", "country"]
    );
    app.stop().await;
}

#[tokio::test]
async fn every_documented_choice_is_accepted_and_an_undocumented_one_refused() {
    let app = app().await;
    let spec = spec(&app).await;
    let cases = [
        (
            "/api/v1/counts",
            "interval",
            "/api/v1/counts?service=x&interval=",
        ),
        (
            "/api/v1/regions",
            "window",
            "/api/v1/regions?service=x&window=",
        ),
        (
            "/api/v1/regions",
            "level",
            "/api/v1/regions?service=x&level=",
        ),
        ("/api/v1/incidents", "status", "/api/v1/incidents?status="),
        ("/api/v1/services", "format", "/api/v1/services?format="),
    ];
    for (path, name, request) in cases {
        let choices = parameter(operation(&spec, "get", path), name)["schema"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        assert!(choices.len() >= 2, "{path} {name}");
        for choice in choices {
            let url = format!("{request}{}", choice.as_str().unwrap());
            let status = app.client.get(app.url(&url)).send().await.unwrap().status();
            assert_eq!(status.as_u16(), 200, "{url}");
        }
        let (status, _, problem) = app.get_json(&format!("{request}fortnightly")).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(problem["errors"][0]["field"], name);
    }
    app.stop().await;
}

#[tokio::test]
async fn report_errors_refer_to_the_problem_schema_which_matches_a_real_answer() {
    let app = app().await;
    let spec = spec(&app).await;
    let create = operation(&spec, "post", "/api/v1/reports");
    let problem_ref = json!({"$ref": "#/components/schemas/Problem"});
    for status in ["400", "413", "415", "422", "429", "503"] {
        let content = &create["responses"][status]["content"];
        assert_eq!(
            content["application/problem+json"]["schema"], problem_ref,
            "{status}"
        );
    }
    for status in ["429", "503"] {
        assert!(
            create["responses"][status]["headers"]["Retry-After"].is_object(),
            "{status}"
        );
    }
    let example = &create["responses"]["422"]["content"]["application/problem+json"]["example"];
    assert_eq!(example["errors"][0]["field"], "city");

    // The request body: one report or a batch of at most MAX_BATCH, with examples of both.
    let body = &create["requestBody"]["content"]["application/json"];
    assert_eq!(
        body["schema"],
        json!({"$ref": "#/components/schemas/SubmissionBody"})
    );
    let examples = body["examples"].as_object().unwrap();
    assert_eq!(
        examples.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            &"batch".to_owned(),
            &"one".to_owned(),
            &"with_id".to_owned()
        ])
    );
    assert_eq!(examples["batch"]["value"]["reports"][1]["city"], "London");
    let created = &create["responses"]["201"]["content"]["application/json"];
    assert_eq!(
        created["schema"],
        json!({"$ref": "#/components/schemas/Receipts"})
    );
    assert_eq!(
        spec["components"]["schemas"]["Receipts"]["oneOf"],
        json!([{"$ref": "#/components/schemas/ReportReceipt"},
               {"$ref": "#/components/schemas/ReceiptBatch"}])
    );
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["BatchBody"]["properties"]["reports"]["maxItems"],
        outagewatch::api::MAX_BATCH
    );
    assert_eq!(
        schemas["ReportBody"]["properties"]["problem"]["enum"],
        json!([
            "app",
            "website",
            "login",
            "server_connection",
            "notifications",
            "other"
        ])
    );
    assert_eq!(
        schemas["ReportBody"]["required"],
        json!(["service", "country", "problem"])
    );

    // A real 422 holds only documented members, and every required one.
    let problem = &schemas["Problem"];
    assert_eq!(
        problem["properties"]["errors"]["items"],
        json!({"$ref": "#/components/schemas/FieldError"})
    );
    let answer: Value = app
        .post_reports(
            &json!({"service": "x", "country": "PK", "city": "Rawalpindy", "problem": "app"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let documented = problem["properties"].as_object().unwrap();
    for member in answer.as_object().unwrap().keys() {
        assert!(
            documented.contains_key(member),
            "{member} is not documented"
        );
    }
    for member in problem["required"].as_array().unwrap() {
        assert!(answer.get(member.as_str().unwrap()).is_some(), "{member}");
    }
    let field_error = &schemas["FieldError"];
    for member in answer["errors"][0].as_object().unwrap().keys() {
        assert!(
            field_error["properties"].get(member).is_some(),
            "{member} is not documented"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_incident_schema_documents_when_it_started_and_when_it_was_detected() {
    let app = app().await;
    let spec = spec(&app).await;
    let incident = &spec["components"]["schemas"]["Incident"];
    for field in ["started_at", "detected_at"] {
        let property = &incident["properties"][field];
        assert_eq!(property["type"], "string", "{field}: {property}");
        assert_eq!(property["format"], "date-time", "{field}: {property}");
        assert!(
            incident["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{field}: {incident}"
        );
    }
    assert_eq!(
        incident["properties"]["detected_at"]["description"],
        "The minute the detector opened the incident, once the surge had held long enough; a\nreopened incident keeps its first."
    );
    app.stop().await;
}

#[tokio::test]
async fn each_answer_is_documented_with_its_media_type() {
    let app = app().await;
    let spec = spec(&app).await;
    let ok_types = |path: &str| -> Vec<String> {
        operation(&spec, "get", path)["responses"]["200"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for path in [
        "/api/v1/counts",
        "/api/v1/services",
        "/api/v1/places",
        "/api/v1/regions",
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
    ] {
        assert_eq!(ok_types(path), ["application/json", "text/csv"], "{path}");
        let responses = &operation(&spec, "get", path)["responses"];
        assert!(responses["200"]["headers"]["ETag"].is_object(), "{path}");
        assert!(responses["304"].is_object(), "{path}");
        assert!(responses["400"].is_object(), "{path}");
    }
    assert_eq!(ok_types("/api/v1/events"), ["text/event-stream"]);
    assert_eq!(ok_types("/feeds/incidents.atom"), ["application/atom+xml"]);
    assert_eq!(ok_types("/badge/{file}"), ["image/svg+xml"]);
    assert_eq!(
        ok_types("/metrics"),
        ["application/openmetrics-text; version=1.0.0; charset=utf-8"]
    );
    assert_eq!(ok_types("/api/docs"), ["text/html"]);
    assert_eq!(
        ok_types("/api/docs/{file}"),
        ["text/javascript", "text/css"]
    );
    let incident = operation(&spec, "get", "/api/v1/incidents/{id}");
    assert!(incident["responses"]["404"].is_object());
    assert_eq!(
        incident["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/Incident"})
    );

    // What the service sends agrees: CSV on request, and each page's type.
    let csv = app
        .client
        .get(app.url("/api/v1/services?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let badge = app
        .client
        .get(app.url("/badge/x.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");
    app.stop().await;
}

#[tokio::test]
async fn the_docs_page_is_html_under_a_strict_policy_with_embedded_assets() {
    let app = app().await;
    let page = app.client.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self'; "), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.ends_with("frame-ancestors 'none'"), "{policy}");
    // The headers every answer gets (src/api/security.rs).
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        assert_eq!(page.headers()[name], value, "{name}");
    }
    let html = page.text().await.unwrap();

    // No inline script: every script has a src.
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 2, "{html}");
    assert!(
        scripts.iter().all(|s| s.starts_with(" src=\"docs/")),
        "{html}"
    );

    // Each referenced file answers with its type and real content (relative to /api/docs).
    let referenced: Vec<&str> = html
        .split(['"'])
        .filter(|part| part.starts_with("docs/"))
        .collect();
    let expected = [
        (
            "docs/swagger-ui-5.35.0.css",
            "text/css; charset=utf-8",
            100_000,
        ),
        (
            "docs/swagger-ui-bundle-5.35.0.js",
            "text/javascript; charset=utf-8",
            1_000_000,
        ),
        ("docs/init.js", "text/javascript; charset=utf-8", 200),
    ];
    assert_eq!(
        referenced,
        expected
            .iter()
            .map(|(path, _, _)| *path)
            .collect::<Vec<_>>()
    );
    for (path, content_type, at_least) in expected {
        let response = app
            .client
            .get(app.url(&format!("/api/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public, max-age="),
            "{path}"
        );
        let body = response.bytes().await.unwrap();
        assert!(body.len() >= at_least, "{path}: {} bytes", body.len());
    }
    // Unencoded, the vendored files are exactly as vendored; browsers get them gzipped.
    let vendored = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js"
    ))
    .unwrap();
    let bundle = "/api/docs/swagger-ui-bundle-5.35.0.js";
    let plain = app.client.get(app.url(bundle)).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.bytes().await.unwrap() == vendored);
    let gzipped = app
        .client
        .get(app.url(bundle))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(gzipped.headers()["vary"], "accept-encoding");
    let body = gzipped.bytes().await.unwrap();
    assert!(body.len() < vendored.len() / 2, "{} bytes", body.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    // Gzipped once, not again by the compression layer.
    assert!(unzipped == vendored);

    let init = app
        .client
        .get(app.url("/api/docs/init.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("url: \"openapi.json\""), "{init}");

    let (status, content_type, problem) = app.get_json("/api/docs/evil.js").await;
    assert_eq!(
        (status, content_type.as_str(), &problem["type"]),
        (
            404,
            "application/problem+json",
            &json!("/problems/not-found")
        )
    );
    app.stop().await;
}
