//! Black-box HTTP tests of the pages: the form POST path without a browser (303, 422, 429), security headers, embedded assets and the status page's first-load weight.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use reqwest::redirect::Policy;

async fn app(extra: &str) -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        &format!("[detector]\nenabled = false\n{extra}"),
    )
    .await
}

/// A client that shows redirects instead of following them and sends no Accept-Encoding of
/// its own (reqwest here decompresses nothing), so bodies arrive as sent.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    client().get(app.url(path)).send().await.unwrap()
}

async fn post_form(app: &TestApp, body: &str) -> reqwest::Response {
    client()
        .post(app.url("/report"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_form_post_is_stored_and_answered_with_a_redirect_to_the_thanks_page() {
    let app = app("").await;
    let response = post_form(&app, "service=x&country=pk&city=lahore&problem=app").await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/report/thanks?service=x&country=PK&city=Lahore&counted=true"
    );
    assert_eq!(app.store.report_count().await.unwrap(), 1);

    let thanks = get(
        &app,
        "/report/thanks?service=x&country=PK&city=Lahore&counted=true",
    )
    .await;
    assert_eq!(thanks.status(), 200);
    let html = thanks.text().await.unwrap();
    assert!(html.contains(r#"<strong id="place-count">1 report</strong> about X (Twitter) from Lahore in the last hour"#), "{html}");
    assert!(
        html.contains(r#"<a class="button" href="/status/x">"#),
        "{html}"
    );

    // The same person again within 15 minutes: stored, not counted, and told so.
    let again = post_form(&app, "service=x&country=PK&problem=login").await;
    assert_eq!(
        again.headers()["location"],
        "/report/thanks?service=x&country=PK&counted=false"
    );
    assert_eq!(app.store.report_count().await.unwrap(), 2);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_form_comes_back_with_what_was_typed_and_a_message_beside_each_field() {
    let app = app("").await;
    let response = post_form(&app, "service=&country=PK&city=Rawalpindy").await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"<p class="error" id="service-error">Choose the service that isn't working for you.</p>"#), "{html}");
    assert!(
        html.contains(r#"<p class="error" id="problem-error">Choose what isn't working.</p>"#),
        "{html}"
    );
    assert!(
        html.contains(
            "<p>We don't know a city called “Rawalpindy” in Pakistan. Did you mean Rawalpindi?</p>"
        ),
        "{html}"
    );
    assert!(html.contains(r#"<button class="suggestion" type="submit" name="city_choice" value="Rawalpindi">Rawalpindi</button>"#), "{html}");
    assert!(html.contains(r#"value="Rawalpindy""#), "{html}");
    assert!(
        html.contains(r#"<option value="PK" selected>Pakistan</option>"#),
        "{html}"
    );
    assert_eq!(app.store.report_count().await.unwrap(), 0);

    // Choosing the suggestion sends the city chosen instead of the one typed.
    let chosen = post_form(
        &app,
        "service=x&country=PK&city=Rawalpindy&problem=app&city_choice=Rawalpindi",
    )
    .await;
    assert_eq!(
        chosen.headers()["location"],
        "/report/thanks?service=x&country=PK&city=Rawalpindi&counted=true"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limited_form_post_gets_a_try_again_page_that_can_send_it_again() {
    let app = app("[rate_limit]\nper_ip_per_minute = 1\n").await;
    assert_eq!(
        post_form(&app, "service=x&country=PK&problem=app")
            .await
            .status(),
        303
    );
    let refused = post_form(&app, "service=x&country=PK&city=Lahore&problem=app").await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        refused.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("<h1>Too many reports from your connection</h1>"),
        "{html}"
    );
    assert_eq!(app.store.report_count().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_form_preselects_the_country_of_accept_language_and_the_service_of_its_address() {
    let app = app("").await;
    let html = client()
        .get(app.url("/report/youtube"))
        .header("accept-language", "ur-PK,ur;q=0.9,en;q=0.8")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<option value="PK" selected>Pakistan</option>"#));
    assert!(html.contains(r#"<option value="youtube" selected>YouTube</option>"#));
    assert!(
        html.contains("<h1 id=\"report-heading\" tabindex=\"-1\">Is YouTube down for you?</h1>")
    );
    let unknown = get(&app, "/report/myspace").await;
    assert_eq!(unknown.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_hold_no_inline_script_or_style() {
    let app = app("").await;
    for path in ["/", "/report/x", "/status", "/status/x"] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "same-origin");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let html = response.text().await.unwrap();
        assert!(
            html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
            "{path}"
        );
        assert!(!html.contains("<style"), "{path}");
        assert!(!html.contains(" style="), "{path}");
        // Every script is a file of this origin.
        for script in html.split("<script").skip(1) {
            assert!(
                script.starts_with(" src=\"/assets/"),
                "{path}: <script{script}"
            );
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{path} links elsewhere"
        );
    }
    for path in [
        "/status/myspace",
        "/incidents/not-an-id",
        "/incidents/00000000-0000-0000-0000-000000000001",
    ] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("<h1>Page not found</h1>"));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_api_answer_and_a_page_carry_the_same_security_headers() {
    let app = app("").await;
    let names = [
        "referrer-policy",
        "x-content-type-options",
        "x-frame-options",
        "cross-origin-opener-policy",
        "permissions-policy",
    ];
    let page = get(&app, "/status").await;
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    for path in ["/api/v1/services", "/api/v1/nothing/here", "/api/docs"] {
        let answer = get(&app, path).await;
        for name in names {
            assert_eq!(
                answer.headers().get(name),
                page.headers().get(name),
                "{path}: {name}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_incident_timeline_shows_when_it_started_and_when_it_was_detected() {
    let app = app("").await;
    let started_at = "2025-03-10T09:52:00Z".parse().unwrap();
    let mut incident = common::open_incident(started_at);
    incident.detected_at = "2025-03-10T09:54:00Z".parse().unwrap();
    incident.start_count = 1234.0;
    app.store
        .write_detection(&outagewatch::store::DetectionWrite {
            incidents: std::slice::from_ref(&incident),
            ..Default::default()
        })
        .await
        .unwrap();
    let response = get(&app, &format!("/incidents/{}", incident.id)).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    let timeline = &html[html.find(r#"id="timeline""#).expect(&html)..];
    let timeline = &timeline[..timeline.find("</ol>").unwrap()];
    assert_eq!(
        timeline.split("<li").skip(1).take(2).collect::<Vec<_>>(),
        [
            r#"><time datetime="2025-03-10T09:52:00+00:00">2025-03-10 09:52 UTC</time> — started: reports rose above normal</li>"#,
            r#" id="incident-detected"><time datetime="2025-03-10T09:54:00+00:00">2025-03-10 09:54 UTC</time> — detected: 1,234 reports per 15 minutes</li>"#,
        ]
    );
    app.stop().await;
}

/// The `/assets/…` files a page links to.
fn asset_paths(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .map(|rest| format!("/assets/{}", &rest[..rest.find('"').unwrap()]))
        .collect()
}

#[tokio::test]
async fn assets_are_embedded_gzipped_and_cached_for_a_year() {
    let app = app("").await;
    let html = get(&app, "/status/x").await.text().await.unwrap();
    let assets = asset_paths(&html);
    assert_eq!(assets.len(), 5, "{assets:?}");
    for path in &assets {
        let response = client()
            .get(app.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        // And decompressed for a client that does not take gzip.
        let plain = get(&app, path).await;
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        assert!(!plain.bytes().await.unwrap().is_empty());
    }
    let missing = get(&app, "/assets/site.00000000.css").await;
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn the_status_page_first_load_is_at_most_250_kb_compressed() {
    let app = app("").await;
    let gzipped = |path: String| {
        let url = app.url(&path);
        async move {
            let response = client()
                .get(url)
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let bytes = response.bytes().await.unwrap();
            (path, bytes)
        }
    };
    let (_, page) = gzipped("/status/x".to_owned()).await;
    let html = {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&page[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let mut total = page.len();
    let mut lines = vec![format!("/status/x {}", page.len())];
    // What the page then loads: its assets and the chart's counts.
    let mut loads = asset_paths(&html);
    loads.push("/api/v1/counts?service=x&interval=15m".to_owned());
    for path in loads {
        let (path, bytes) = gzipped(path).await;
        lines.push(format!("{path} {}", bytes.len()));
        total += bytes.len();
    }
    println!(
        "status page first load, gzipped: {total} bytes\n{}",
        lines.join("\n")
    );
    assert!(total <= 250 * 1024, "{total} bytes: {lines:?}");
    app.stop().await;
}
