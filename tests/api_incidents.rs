//! Black-box tests of `GET /api/v1/incidents` and `GET /api/v1/incidents/{id}` on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use common::TestApp;
use outagewatch::domain::incidents::{Incident, Status};
use outagewatch::store::DetectionWrite;
use serde_json::Value;

fn at(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_741_600_000 + minute * 60, 0).unwrap()
}

/// Three incidents stored: x/PK open (oldest), x global resolved, youtube/PK open (newest).
async fn app_with_incidents(backend: common::Backend) -> (TestApp, [Incident; 3]) {
    let app = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
    let incidents = [
        common::incident("x", Some("PK"), at(0), Status::Open),
        common::incident("x", None, at(1), Status::Resolved),
        common::incident("youtube", Some("PK"), at(2), Status::Open),
    ];
    app.store
        .write_detection(&DetectionWrite {
            incidents: &incidents,
            ..DetectionWrite::default()
        })
        .await
        .unwrap();
    (app, incidents)
}

async fn get(app: &TestApp, path: &str) -> (u16, String, Value) {
    app.get_json(path).await
}

fn ids(page: &Value) -> Vec<String> {
    page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(
    incidents_are_listed_newest_first_filtered_and_paged,
    |backend| async move {
        let (app, [pk, global, youtube]) = app_with_incidents(backend).await;
        let id = |i: &Incident| i.id.to_string();

        let (status, _, page) = get(&app, "/api/v1/incidents").await;
        assert_eq!(status, 200);
        assert_eq!(ids(&page), [id(&youtube), id(&global), id(&pk)]);
        assert_eq!(page["next_cursor"], Value::Null);

        let (_, _, first) = get(&app, "/api/v1/incidents?limit=2").await;
        assert_eq!(ids(&first), [id(&youtube), id(&global)]);
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let (_, _, second) = get(&app, &format!("/api/v1/incidents?limit=2&cursor={cursor}")).await;
        assert_eq!(ids(&second), [id(&pk)]);
        assert_eq!(second["next_cursor"], Value::Null);

        let (_, _, open_x) = get(&app, "/api/v1/incidents?service=X&status=open&country=pk").await;
        assert_eq!(ids(&open_x), [id(&pk)]);
        let (_, _, resolved) = get(&app, "/api/v1/incidents?status=resolved").await;
        assert_eq!(ids(&resolved), [id(&global)]);
        let since = at(1).to_rfc3339().replace('+', "%2B");
        let (_, _, recent) = get(&app, &format!("/api/v1/incidents?since={since}")).await;
        assert_eq!(ids(&recent), [id(&youtube), id(&global)]);

        let (status, _, one) = get(&app, &format!("/api/v1/incidents/{}", pk.id)).await;
        assert_eq!(status, 200);
        assert_eq!(one["scope"], "country");
        assert_eq!(one["country"], "PK");
        assert_eq!(one["city"], Value::Null);
        assert_eq!(one["status"], "open");
        assert_eq!(one["peak_count"], 136.0);
        assert_eq!(one["started_at"], "2025-03-10T09:46:40Z");
        assert_eq!(one["detected_at"], "2025-03-10T09:48:40Z");
        assert_eq!(one["resolved_at"], Value::Null);
        assert_eq!(one["problems"]["app"], 1.0);
        assert_eq!(one["summary"], "Reports about x rose.");
        app.stop().await;
    }
);

on_both_backends!(
    bad_incident_parameters_are_400_problems_naming_the_parameter,
    |backend| async move {
        let (app, _) = app_with_incidents(backend).await;
        let cases = [
            ("/api/v1/incidents?service=myspace", "service"),
            ("/api/v1/incidents?country=XX", "country"),
            ("/api/v1/incidents?status=closed", "status"),
            ("/api/v1/incidents?since=yesterday", "since"),
            ("/api/v1/incidents?limit=0", "limit"),
            ("/api/v1/incidents?limit=1001", "limit"),
            ("/api/v1/incidents?cursor=abc", "cursor"),
            ("/api/v1/incidents?colour=red", "colour"),
            ("/api/v1/incidents/not-a-uuid", "id"),
        ];
        for (path, field) in cases {
            let (status, content_type, problem) = get(&app, path).await;
            assert_eq!(status, 400, "{path}");
            assert_eq!(content_type, "application/problem+json", "{path}");
            assert_eq!(problem["errors"][0]["field"], field, "{path}: {problem}");
        }
        let (status, content_type, _) = get(
            &app,
            "/api/v1/incidents/00000000-0000-0000-0000-000000000000",
        )
        .await;
        assert_eq!(
            (status, content_type.as_str()),
            (404, "application/problem+json")
        );
        app.stop().await;
    }
);

on_both_backends!(
    an_atom_feed_lists_a_services_incidents_and_a_badge_shows_its_status,
    |backend| async move {
        let (app, [pk, global, _youtube]) = app_with_incidents(backend).await;
        let response = app
            .client
            .get(app.url("/feeds/incidents.atom?service=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/atom+xml; charset=utf-8"
        );
        let feed: atom_syndication::Feed = response.text().await.unwrap().parse().unwrap();
        assert_eq!(feed.title().as_str(), "X (Twitter) incidents (outagewatch)");
        let entries: Vec<(&str, &str)> = feed
            .entries()
            .iter()
            .map(|e| (e.id(), e.title().as_str()))
            .collect();
        let (global_id, pk_id) = (
            format!("urn:uuid:{}", global.id),
            format!("urn:uuid:{}", pk.id),
        );
        assert_eq!(
            entries,
            [
                (
                    global_id.as_str(),
                    "X (Twitter): global incident worldwide (resolved)"
                ),
                (
                    pk_id.as_str(),
                    "X (Twitter): country incident in Pakistan (open)"
                ),
            ]
        );
        assert_eq!(
            feed.entries()[1].summary().map(|s| s.as_str()),
            Some("Reports about x rose.")
        );
        // Each entry's content is its timeline: started, detected, peak and (once over) ended.
        let content = |i: usize| {
            let content = feed.entries()[i].content().unwrap();
            (content.content_type(), content.value())
        };
        assert_eq!(
            content(0),
            (
                Some("text"),
                Some("Started 2025-03-10 09:47 UTC; detected 2025-03-10 09:49 UTC; peak 2025-03-10 09:57 UTC; ended 2025-03-10 10:47 UTC.")
            )
        );
        assert_eq!(
            content(1),
            (
                Some("text"),
                Some("Started 2025-03-10 09:46 UTC; detected 2025-03-10 09:48 UTC; peak 2025-03-10 09:56 UTC; still going on.")
            )
        );

        let badge = |path: &'static str| {
            let (client, url) = (app.client.clone(), app.url(path));
            async move {
                let response = client.get(url).send().await.unwrap();
                let status = response.status().as_u16();
                let kind = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, kind, response.text().await.unwrap())
            }
        };
        let (status, kind, svg) = badge("/badge/x.svg").await;
        assert_eq!((status, kind.as_deref()), (200, Some("image/svg+xml")));
        assert!(
            svg.contains("<title>X (Twitter): incident</title>"),
            "{svg}"
        );
        let (_, _, svg) = badge("/badge/youtube.svg?country=GB").await;
        assert!(svg.contains("<title>YouTube · GB: up</title>"), "{svg}");
        assert_eq!(badge("/badge/myspace.svg").await.0, 400);
        assert_eq!(badge("/badge/x.png").await.0, 404);
        assert_eq!(badge("/feeds/incidents.atom").await.0, 400);
        app.stop().await;
    }
);
