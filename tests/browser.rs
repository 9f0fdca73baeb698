//! Browser tests of the pages: headless Chromium (Debian `chromium` + `chromium-driver`) drives the report form with scripts on, off and by keyboard alone, and watches the status page draw and follow new reports; screenshots go to `target/screenshots/`.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "browser/driver.rs"]
mod driver;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use common::{Backend, TestApp};
use driver::{Browser, Options};
use fantoccini::key::Key;
use outagewatch::domain::incidents::{Incident, Scope, Status};
use outagewatch::store::{IncidentQuery, Store};
use serde_json::json;

/// An app for the form: an empty store, no detector.
async fn form_app() -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        &format!("[detector]\nenabled = false\n{SLOW_MACHINE}"),
    )
    .await
}

/// The live detector, processing each minute as soon as it ends.
const LIVE: &str =
    "[detector]\nsettle_seconds = 0\nleader_retry_seconds = 1\nsnapshot_every_minutes = 720\n";

/// These tests check the pages, not the store's time limits (the fault suite does): with six
/// browsers on two busy cores a page's store call can pass the default 1 s, and a refresh
/// answered 503 would leave the page as it was. (Once seen in a full run: the status page
/// never showed the new reports within its 120 s.)
const SLOW_MACHINE: &str = "[database]\nquery_timeout_ms = 10000\n";

/// An app whose store holds three days of X traffic in Pakistan ending with a Lahore-led surge
/// that is still going on, and whose detector has caught up over it: the open Pakistan incident;
/// and a desktop browser to look at its pages.
async fn surge_app() -> (TestApp, Incident, Browser) {
    let scenario = common::pakistan_surge_scenario(outagewatch::runtime::clock::now(), 11, 90, 0);
    let quiet = form_app().await;
    common::insert_scenario_at_once(&quiet, &scenario).await;
    let db = quiet.stop_keeping_db().await;
    let app = TestApp::spawn_on(db, &format!("{LIVE}{SLOW_MACHINE}")).await;
    let last = scenario.end() - TimeDelta::minutes(1);
    let incident = wait_for_pakistan_incident(&app.store, last).await;
    (app, incident, Browser::start(Options::desktop()).await)
}

/// Waits (bounded) until the detector has processed `minute` and holds the open PK incident.
async fn wait_for_pakistan_incident(
    store: &Arc<dyn Store>,
    minute: chrono::DateTime<chrono::Utc>,
) -> Incident {
    for _ in 0..1200 {
        let caught_up = store
            .checkpoint()
            .await
            .unwrap()
            .is_some_and(|c| c.watermark >= minute);
        if caught_up {
            let open = store
                .incidents(&IncidentQuery {
                    service: Some("x".into()),
                    country: Some("PK".into()),
                    status: Some(Status::Open),
                    limit: 100,
                    ..IncidentQuery::default()
                })
                .await
                .unwrap();
            if let Some(incident) = open.into_iter().find(|i| i.scope == Scope::Country) {
                return incident;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the detector did not open the Pakistan incident within 120 s");
}

/// An empty app and a phone showing the form at `path`, once its script has enhanced it.
async fn enhanced_form(path: &str) -> (TestApp, Browser) {
    let app = form_app().await;
    let browser = Browser::start(Options::phone()).await;
    browser.open(&app, path).await;
    browser
        .wait_for("#report-form[data-enhanced=\"true\"]")
        .await;
    (app, browser)
}

/// Runs a test body, failing it after five minutes: a browser that stops answering must not
/// hang the suite.
async fn within(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(300), body)
        .await
        .expect("the test did not finish within 5 minutes");
}

/// The end of every test: closes the browser, then stops the app.
async fn close(app: TestApp, browser: Browser) {
    browser.close().await;
    app.stop().await;
}

/// Asserts that the page logged no console errors, then closes as [`close`] does.
async fn close_clean(app: TestApp, browser: Browser) {
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    close(app, browser).await;
}

fn tab() -> char {
    Key::Tab.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_sent_with_javascript_on_is_counted_without_a_reload() {
    within(async {
        let (app, browser) = enhanced_form("/").await;

        // The service list is searchable; the country comes from Accept-Language (en-PK).
        browser.type_into("#service-filter", "twit").await;
        assert_eq!(
            browser
                .run("return document.getElementById('service').value")
                .await,
            json!("x")
        );
        assert_eq!(
            browser
                .run("return document.getElementById('country').value")
                .await,
            json!("PK")
        );
        // The city field suggests places from /api/v1/places as one types.
        let city = browser.find("#city").await;
        city.send_keys("Lah").await.unwrap();
        browser
            .wait_for("#city-options option[value=\"Lahore\"]")
            .await;
        city.send_keys("ore").await.unwrap();
        browser.click("label[for=\"problem-login\"]").await;
        browser.screenshot("report-form").await;

        browser.run("window.sameDocument = true").await;
        browser.click("#send").await;
        browser.wait_for("#thanks").await;
        assert_eq!(
            browser.run("return window.sameDocument === true").await,
            json!(true)
        );
        assert_eq!(browser.text("#place-count").await, "1 report");
        assert_eq!(browser.text("#country-count").await, "1 report");
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/report/thanks");
        assert_eq!(
            url.query(),
            Some("service=x&country=PK&city=Lahore&counted=true")
        );
        assert_eq!(app.store.report_count().await.unwrap(), 1);
        browser.screenshot("report-thanks").await;
        close_clean(app, browser).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_sent_with_javascript_off_is_a_plain_post_answered_with_the_thanks_page() {
    within(async {
        let app = form_app().await;
        let browser = Browser::start(Options {
            javascript: false,
            ..Options::phone()
        })
        .await;
        browser.open(&app, "/report/youtube").await;
        let form = browser.wait_for("#report-form").await;
        // The script never ran: the form is the plain one.
        assert_eq!(form.attr("data-enhanced").await.unwrap(), None);
        assert!(!browser.find(".filter").await.is_displayed().await.unwrap());
        browser
            .find("#country")
            .await
            .select_by_value("GB")
            .await
            .unwrap();
        browser.type_into("#city", "london").await;
        browser.click("label[for=\"problem-website\"]").await;
        browser.click("#send").await;

        browser.wait_for("#thanks").await;
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/report/thanks");
        assert_eq!(
            url.query(),
            Some("service=youtube&country=GB&city=London&counted=true")
        );
        assert_eq!(browser.text("#place-count").await, "1 report");
        assert_eq!(app.store.report_count().await.unwrap(), 1);
        close(app, browser).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_city_is_answered_beside_the_field_with_a_suggestion_to_choose() {
    within(async {
        let (app, browser) = enhanced_form("/report/x").await;
        browser.type_into("#city", "Rawalpindy").await;
        browser.click("label[for=\"problem-app\"]").await;
        browser.click("#send").await;

        let error = browser.wait_for("#city-error").await;
        assert_eq!(
            error
                .find(fantoccini::Locator::Css("p"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "We don't know a city called “Rawalpindy” in Pakistan. Did you mean Rawalpindi?"
        );
        // What was typed is kept, and the field says it is the one at fault.
        let city = browser.find("#city").await;
        assert_eq!(
            city.prop("value").await.unwrap().as_deref(),
            Some("Rawalpindy")
        );
        assert_eq!(
            city.attr("aria-invalid").await.unwrap().as_deref(),
            Some("true")
        );
        assert!(browser
            .find("#problem-app")
            .await
            .is_selected()
            .await
            .unwrap());
        assert_eq!(app.store.report_count().await.unwrap(), 0);
        browser.screenshot("report-unknown-city").await;

        browser
            .click("button.suggestion[value=\"Rawalpindi\"]")
            .await;
        browser.wait_for("#thanks").await;
        assert!(browser
            .text("main")
            .await
            .contains("from Rawalpindi in the last hour"));
        assert_eq!(browser.text("#place-count").await, "1 report");
        // The one console error is the form's 422 answer, which is the page showing the mistake.
        let errors = browser.console_errors().await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(
                "/report - Failed to load resource: the server responded with a status of 422"
            ),
            "{errors:?}"
        );
        close(app, browser).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_can_be_sent_with_the_keyboard_alone() {
    within(async {
    let (app, browser) = enhanced_form("/report/x").await;

    // From the top of the page, Tab reaches the city field through the links and lists.
    let mut visited = Vec::new();
    while browser.focused_id().await != "city" {
        assert!(
            visited.len() < 15,
            "Tab never reached the city field: {visited:?}"
        );
        browser.press(tab()).await;
        visited.push(browser.focused_id().await);
    }
    assert!(visited.contains(&"service".to_owned()), "{visited:?}");
    assert!(visited.contains(&"country".to_owned()), "{visited:?}");
    browser.type_text("Karachi").await;
    // Into the problem buttons: the arrow keys choose, and the focus ring shows which.
    browser.press(tab()).await;
    assert_eq!(browser.focused_id().await, "problem-app");
    browser.press(Key::Right.into()).await;
    assert_eq!(browser.focused_id().await, "problem-website");
    assert_eq!(
        browser
            .run("return getComputedStyle(document.querySelector('label[for=problem-website]')).outlineStyle")
            .await,
        json!("solid")
    );
    browser.press(tab()).await;
    assert_eq!(browser.focused_id().await, "send");
    browser.press(Key::Enter.into()).await;

    browser.wait_for("#thanks").await;
    assert!(browser
        .text("main")
        .await
        .contains("from Karachi in the last hour"));
    assert_eq!(app.store.report_count().await.unwrap(), 1);
    close_clean(app, browser).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_its_chart_and_map_and_follows_new_reports() {
    within(async {
    let (app, incident, browser) = surge_app().await;
    browser.open(&app, "/status/x").await;
    browser.wait_for("#chart[data-drawn=\"true\"]").await;

    // The chart's canvas has pixels drawn; the map shades Pakistan darkest (an open incident).
    browser
        .wait_until(
            "const c = document.querySelector('#chart canvas'); if (!c || !c.width) return false;\
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;\
             for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true; return false;",
            driver::WAIT,
        )
        .await;
    assert_eq!(
        browser
            .find("#world-map path[data-cc=\"PK\"]")
            .await
            .attr("class")
            .await
            .unwrap()
            .as_deref(),
        Some("level-4")
    );
    let shapes = browser
        .run("return document.querySelectorAll('#world-map path').length")
        .await;
    assert_eq!(shapes, json!(176));
    assert!(browser
        .text("#banner")
        .await
        .starts_with("People are reporting an outage of X (Twitter)."));
    assert!(browser.text("#incidents").await.contains(&incident.summary));
    assert!(browser
        .text("#countries tbody tr:first-child")
        .await
        .starts_with("Pakistan"));
    assert!(browser
        .text("#cities tbody tr:first-child")
        .await
        .starts_with("Lahore"));
    let problems = browser
        .run("return [...document.querySelectorAll('#problems li')].map(l => l.dataset.problem)")
        .await;
    assert_eq!(problems, json!(["app", "login"]));
    browser.resize(1280, 2300).await;
    browser.screenshot("status").await;

    // New reports (three reporters) reach the page without a reload: the 24-hour figure and
    // the chart's total both grow on the next refresh (event stream or poll).
    // Both sum the quarter hours of the last 24 hours, so at a quarter's end the window slides
    // and the oldest quarter (about 15 ordinary reports here) drops out: near one, wait for the
    // next quarter first, so no boundary falls between `before` and the checks below.
    let into_quarter = outagewatch::runtime::clock::now().timestamp().rem_euclid(900);
    if 900 - into_quarter < 90 {
        tokio::time::sleep(Duration::from_secs((900 - into_quarter + 2) as u64)).await;
        browser.open(&app, "/status/x").await;
        browser.wait_for("#chart[data-drawn=\"true\"]").await;
    }
    let before: i64 = browser
        .text("#reports-24h")
        .await
        .replace(',', "")
        .parse()
        .unwrap();
    let drawn = browser
        .run("return Number(document.getElementById('chart').dataset.total)")
        .await;
    browser.run("window.sameDocument = true").await;
    for n in 0..3 {
        let response = app
            .client
            .post(app.url("/api/v1/reports"))
            .header("user-agent", format!("reporter {n}"))
            .json(&json!({"service": "x", "country": "GB", "city": "London", "problem": "app"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    browser
        .wait_until(
            &format!("return Number(document.getElementById('reports-24h').textContent.replace(/,/g, '')) >= {}", before + 3),
            Duration::from_secs(120),
        )
        .await;
    browser
        .wait_until(
            &format!(
                "return Number(document.getElementById('chart').dataset.total) >= {}",
                drawn.as_i64().unwrap() + 3
            ),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(
        browser.run("return window.sameDocument === true").await,
        json!(true)
    );
    // The refreshed places table names the new country, and the map shades it.
    browser
        .wait_until(
            "return [...document.querySelectorAll('#countries tbody th')].some(th => th.textContent === 'United Kingdom')\
             && document.querySelector('#world-map path[data-cc=GB]').getAttribute('class') !== 'level-0'",
            Duration::from_secs(120),
        )
        .await;
    close_clean(app, browser).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_page_shows_its_timeline_peak_cities_and_scope() {
    within(async {
        let (app, incident, browser) = surge_app().await;
        // From the list of services, to the service, to its incident.
        browser.open(&app, "/status").await;
        let row = browser.wait_for("tr[data-service=\"x\"]").await;
        assert!(row.text().await.unwrap().contains("Outage"));
        browser.screenshot("services").await;
        browser.open(&app, "/status/x").await;
        browser
            .wait_for(&format!(
                "#incidents a[href=\"/incidents/{}\"]",
                incident.id
            ))
            .await
            .click()
            .await
            .unwrap();

        browser.wait_for("#timeline").await;
        assert_eq!(browser.text("h1").await, "X (Twitter): Pakistan Outage");
        assert_eq!(browser.text("#incident-scope").await, "One country");
        assert_eq!(browser.text("#incident-status").await, "Open");
        let timeline = browser.text("#timeline").await;
        assert!(
            timeline.contains(
                &incident
                    .started_at
                    .format("%Y-%m-%d %H:%M UTC — started")
                    .to_string()
            ),
            "{timeline}"
        );
        assert!(
            timeline.contains(
                &incident
                    .detected_at
                    .format("%Y-%m-%d %H:%M UTC — detected")
                    .to_string()
            ),
            "{timeline}"
        );
        assert!(timeline.contains("Still going on"), "{timeline}");
        let peak = browser.text("#incident-peak").await;
        let peak_count = format!(
            "{} reports per 15 minutes",
            incident.peak_count.round() as i64
        );
        assert!(
            peak.replace(',', "").starts_with(&peak_count),
            "{peak} / {peak_count}"
        );
        assert!(browser
            .text("#incident-cities tbody tr:first-child")
            .await
            .starts_with("Lahore, Pakistan"));
        match incident.parent_id {
            Some(parent) => assert_eq!(
                browser
                    .find("#parent-link")
                    .await
                    .attr("href")
                    .await
                    .unwrap(),
                Some(format!("/incidents/{parent}"))
            ),
            None => assert!(browser
                .client
                .find(fantoccini::Locator::Css("#parent-link"))
                .await
                .is_err()),
        }
        browser.wait_for("#chart[data-drawn=\"true\"]").await;
        browser.screenshot("incident").await;
        close_clean(app, browser).await;
    })
    .await;
}

/// Lighthouse-style basics of one loaded page: the inputs that lack a label, and the page's `lang`.
const BASICS: &str = "return {\
    lang: document.documentElement.lang,\
    title: document.title,\
    h1: document.querySelectorAll('h1').length,\
    unlabelled: [...document.querySelectorAll('input, select, textarea')]\
        .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))\
        .map(e => e.id || e.name)\
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_has_a_language_a_label_for_every_input_and_no_console_errors() {
    within(async {
        let (app, incident, browser) = surge_app().await;
        let pages = [
            "/".to_owned(),
            "/report/x".to_owned(),
            "/report/thanks?service=x&country=PK&city=Lahore&counted=true".to_owned(),
            "/status".to_owned(),
            "/status/x".to_owned(),
            format!("/incidents/{}", incident.id),
        ];
        for path in &pages {
            browser.open(&app, path).await;
            browser.wait_for("footer").await;
            let basics = browser.run(BASICS).await;
            assert_eq!(basics["lang"], "en", "{path}");
            assert_eq!(basics["h1"], 1, "{path}");
            assert!(
                basics["title"]
                    .as_str()
                    .unwrap()
                    .ends_with(" · outagewatch"),
                "{path}"
            );
            assert_eq!(basics["unlabelled"], json!([]), "{path}");
            assert_eq!(
                browser.console_errors().await,
                Vec::<String>::new(),
                "{path}"
            );
        }
        // A page that does not exist is a page too; its only console line is its own 404.
        browser
            .open(&app, "/incidents/00000000-0000-0000-0000-000000000001")
            .await;
        assert_eq!(browser.text("h1").await, "Page not found");
        let errors = browser.console_errors().await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("status of 404"), "{errors:?}");
        close(app, browser).await;
    })
    .await;
}
