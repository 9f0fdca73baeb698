//! The live detector inside `serve`: it catches up over imported rollups, stores incidents the
//! API serves, survives a restart, and ends exactly where `redetect` over the same range does.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::{TestApp, X_IN_PAKISTAN};
use outagewatch::detect::SeriesKey;
use outagewatch::domain::incidents::{Incident, Scope};
use outagewatch::store::{IncidentQuery, Store};
use outagewatch::{app, detector};

/// Waits (bounded) until the detector's watermark reaches `minute`.
async fn wait_for_watermark(store: &Arc<dyn Store>, minute: DateTime<Utc>) {
    for _ in 0..600 {
        if let Some(checkpoint) = store.checkpoint().await.unwrap() {
            if checkpoint.watermark >= minute {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the detector did not reach {minute} within 60 s");
}

async fn all_incidents(store: &Arc<dyn Store>) -> Vec<Incident> {
    store
        .incidents(&IncidentQuery {
            limit: 1000,
            ..IncidentQuery::default()
        })
        .await
        .unwrap()
}

const LIVE: &str =
    "[detector]\nsettle_seconds = 0\nleader_retry_seconds = 1\nsnapshot_every_minutes = 720\n";

on_both_backends!(
    the_live_detector_catches_up_restarts_and_agrees_with_redetect,
    |backend| async move {
        let now = outagewatch::runtime::clock::now();
        let scenario = common::pakistan_surge_scenario(now, 7, 90, 30);
        let last = scenario.end() - TimeDelta::minutes(1);

        // Import with the detector off, then serve with it on: it catches up over three days.
        let quiet = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
        common::import_scenario(&quiet, &scenario).await;
        let db = quiet.stop_keeping_db().await;
        let live = TestApp::spawn_on(db, LIVE).await;
        wait_for_watermark(&live.store, last).await;

        let response = live
            .client
            .get(live.url("/api/v1/incidents?service=x&country=PK"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page: serde_json::Value = response.json().await.unwrap();
        let served: Vec<(&str, Option<&str>)> = page["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["scope"].as_str().unwrap(), i["city"].as_str()))
            .collect();
        assert!(served.contains(&("country", None)), "{page}");

        // The detector stored its expectation of every quarter hour: charts get a normal band.
        let hour = |h: i64| {
            (scenario.end() - TimeDelta::hours(h))
                .duration_trunc(TimeDelta::hours(1))
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        let counts: serde_json::Value = live
            .client
            .get(live.url(&format!(
                "/api/v1/counts?service=x&country=PK&interval=1h&from={}&to={}",
                hour(5),
                hour(1)
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let buckets = counts["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 4, "{counts}");
        for bucket in buckets {
            assert!(bucket["expected"].as_f64().unwrap() > 10.0, "{counts}");
            assert!(bucket["count"].as_i64().unwrap() > 0, "{counts}");
        }

        let found = all_incidents(&live.store).await;
        let pk = found
            .iter()
            .find(|i| i.scope == Scope::Country)
            .expect("a PK incident");
        let surge_start = scenario.end() - TimeDelta::minutes(90);
        assert!(
            pk.started_at >= surge_start && pk.started_at <= surge_start + TimeDelta::minutes(15)
        );
        assert_eq!(pk.top_cities[0].city, "Lahore");
        for incident in &found {
            assert!(
                incident.started_at >= surge_start,
                "false incident {incident:?}"
            );
        }

        // Each incident is served with the minute the detector opened it: the minute the
        // detector core raises `Opened` for its series over the same rollups, after the start.
        let first = live.store.first_rollup_minute().await.unwrap().unwrap();
        let opened = common::opened_minutes(
            &live.store,
            &live.db.settings(LIVE).detector.model,
            first,
            last + TimeDelta::minutes(1),
        )
        .await;
        assert_eq!(opened.len(), found.len(), "{opened:?}");
        let served = page["incidents"].as_array().unwrap();
        assert!(!served.is_empty());
        for incident in served {
            let id: uuid::Uuid = incident["id"].as_str().unwrap().parse().unwrap();
            let record = found.iter().find(|i| i.id == id).unwrap();
            let key = SeriesKey {
                service: record.service.clone(),
                country: record.country.clone(),
                city: record.city.clone(),
            };
            let detected_at = opened[&(key, record.started_at)];
            assert!(detected_at > record.started_at, "{incident}");
            assert_eq!(
                incident["detected_at"],
                detected_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            );
            assert_eq!(record.detected_at, detected_at);
        }

        // Restart: the detector resumes from its snapshot and changes nothing it stored.
        let db = live.stop_keeping_db().await;
        let again = TestApp::spawn_on(db, LIVE).await;
        wait_for_watermark(&again.store, last).await;
        let after_restart = all_incidents(&again.store).await;
        assert_eq!(after_restart, found);

        // Redetect over the same range, from scratch, with the same code: the same records.
        let settings = again.db.settings(LIVE);
        let db = again.stop_keeping_db().await;
        let store = app::open_store(&settings).await.unwrap();
        let checkpoint = store.checkpoint().await.unwrap().unwrap();
        detector::redetect(
            store.clone(),
            Arc::new(app::catalog(&settings)),
            &settings.detector,
            None,
            Some(checkpoint.watermark + TimeDelta::minutes(1)),
            now,
        )
        .await
        .unwrap();
        assert_eq!(all_incidents(&store).await, after_restart);
        drop(db);
    }
);

/// Reads an SSE response, sending each complete event (its `event:` name and `data:`) on.
fn read_events(
    mut response: reqwest::Response,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            for event in common::complete_sse_events(&mut buffer, &chunk) {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

on_both_backends!(
    server_sent_events_deliver_an_incident_opened_by_an_import,
    |backend| async move {
        let app = TestApp::spawn_with(backend, LIVE).await;
        let response = app
            .client
            .get(app.url("/api/v1/events?service=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut events = read_events(response);

        // One transaction: the detector's next tick sees the whole import, never a part of it
        // (reports landing behind its watermark would need `redetect`).
        let scenario =
            common::pakistan_surge_scenario(outagewatch::runtime::clock::now(), 7, 90, 30);
        common::insert_scenario_at_once(&app, &scenario).await;

        // The detector picks the import up at its next minute and catches up over it.
        let (mut opened, mut counts) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while opened.is_none() || counts.is_none() {
            let (name, data) = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("an opened incident and a minute count within two minutes")
                .unwrap();
            match name.as_str() {
                "incident"
                    if data["kind"] == "opened" && data["incident"]["scope"] == "country" =>
                {
                    opened = Some(data)
                }
                "counts" => counts = Some(data),
                _ => {}
            }
        }
        let opened = opened.unwrap();
        assert_eq!(opened["type"], "incident");
        // Announced the minute it opened: detected then, and last changed then.
        assert_eq!(
            opened["incident"]["detected_at"],
            opened["incident"]["updated_at"]
        );
        assert!(
            opened["incident"]["detected_at"].as_str().unwrap()
                > opened["incident"]["started_at"].as_str().unwrap()
        );
        assert_eq!(opened["incident"]["service"], "x");
        assert_eq!(opened["incident"]["country"], "PK");
        let id: uuid::Uuid = opened["incident"]["id"].as_str().unwrap().parse().unwrap();
        assert!(app.store.incident(id).await.unwrap().is_some());
        // A minute's count is the stored worldwide count of that minute (0 for a quiet one:
        // every processed minute is announced).
        let counts = counts.unwrap();
        assert_eq!(counts["service"], "x");
        let minute: DateTime<Utc> = counts["minute"].as_str().unwrap().parse().unwrap();
        let stored = app
            .store
            .counts(
                &SeriesKey::global("x"),
                outagewatch::store::TimeRange::new(minute, minute + TimeDelta::minutes(1)),
                60,
            )
            .await
            .unwrap();
        assert_eq!(
            counts["count"].as_i64(),
            Some(stored.iter().map(|b| b.count).sum::<i64>())
        );
        app.stop().await;
    }
);

#[tokio::test]
async fn the_event_stream_sends_a_comment_line_as_soon_as_it_opens() {
    let app = TestApp::spawn_with(common::Backend::Sqlite, "[detector]\nenabled = false\n").await;
    let mut response = app
        .client
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // No event comes (the detector is off) and the first keep-alive is 15 s away, so only a
    // line sent on opening arrives within this bound.
    let first = tokio::time::timeout(Duration::from_secs(2), response.chunk())
        .await
        .expect("a first line within 2 s")
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&first), ": connected\n\n");
    drop(response);
    app.stop().await;
}

/// Three days of X in Pakistan from Monday 3 March 2025 and, on the last afternoon, two surges
/// 65 minutes apart: the second begins within the hour after the first resolves.
fn resurge_scenario() -> outagewatch_scenario::Scenario {
    outagewatch_scenario::Scenario::from_toml(&format!(
        r#"
name = "re-surge"
start = "2025-03-03T00:00:00Z"
end = "2025-03-06T00:00:00Z"
seed = 12

[problems]
app = 1.0

{X_IN_PAKISTAN}
[[surge]]
service = "x"
country = "PK"
points = [["2025-03-05T12:00:00Z", 0], ["2025-03-05T12:05:00Z", 300], ["2025-03-05T12:30:00Z", 300], ["2025-03-05T12:35:00Z", 0]]

[[surge]]
service = "x"
country = "PK"
points = [["2025-03-05T13:35:00Z", 0], ["2025-03-05T13:40:00Z", 300], ["2025-03-05T14:00:00Z", 300], ["2025-03-05T14:05:00Z", 0]]
"#
    ))
    .unwrap()
}

on_both_backends!(
    a_reopened_incident_keeps_the_minute_it_was_first_detected,
    |backend| async move {
        use outagewatch::detect::IncidentEvent;
        use outagewatch::detector::Detection;
        use outagewatch::store::DetectionWrite;

        let app = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
        let scenario = resurge_scenario();
        common::insert_scenario_at_once(&app, &scenario).await;
        let settings = app.db.settings("[detector]\nenabled = false\n");
        let store = app.store.clone();
        let catalog = Arc::new(app::catalog(&settings));
        let (first, end) = (
            store.first_rollup_minute().await.unwrap().unwrap(),
            scenario.end(),
        );
        let minute = |seconds: i64| DateTime::from_timestamp(seconds, 0).unwrap();

        // The core opens Pakistan's incident, resolves it, reopens it and resolves it again.
        let pk = SeriesKey::country("x", "PK");
        let events: Vec<(&str, DateTime<Utc>)> =
            common::engine_events(&store, &settings.detector.model, first, end)
                .await
                .into_iter()
                .filter(|e| e.key == pk && !matches!(e.event, IncidentEvent::Updated(_)))
                .map(|e| {
                    let kind = match e.event {
                        IncidentEvent::Opened(_) => "opened",
                        IncidentEvent::Reopened(_) => "reopened",
                        _ => "resolved",
                    };
                    (kind, minute(e.at))
                })
                .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
        assert_eq!(kinds, ["opened", "resolved", "reopened", "resolved"]);
        let (opened_at, first_resolution) = (events[0].1, events[1].1);

        // Without a restart the reopened record keeps the first detection.
        let mut unstopped = Detection::fresh(store.clone(), catalog.clone(), &settings.detector);
        let unstopped: Vec<Incident> = unstopped
            .step_range(first, end)
            .await
            .unwrap()
            .incidents
            .into_values()
            .filter(|i| i.scope == Scope::Country)
            .collect();
        assert_eq!(unstopped.len(), 1);
        assert_eq!(unstopped[0].detected_at, opened_at);
        assert!(unstopped[0].updated_at > events[2].1);

        // Stopped right after the first resolution and resumed from the store: the same record.
        let mut before = Detection::fresh(store.clone(), catalog.clone(), &settings.detector);
        let changes = before
            .step_range(first, first_resolution + TimeDelta::minutes(1))
            .await
            .unwrap();
        let incidents: Vec<Incident> = changes.incidents.into_values().collect();
        let snapshot = before.snapshot().unwrap();
        store
            .write_detection(&DetectionWrite {
                incidents: &incidents,
                watermark: Some(first_resolution),
                state: Some((first_resolution, &snapshot)),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        let (mut resumed, watermark) = Detection::resume(
            store.clone(),
            catalog.clone(),
            &settings.detector,
            &Default::default(),
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        assert_eq!(watermark, Some(first_resolution));
        let changes = resumed
            .step_range(first_resolution + TimeDelta::minutes(1), end)
            .await
            .unwrap();
        let reopened = changes
            .events
            .iter()
            .find(|c| c.kind == "reopened" && c.incident.scope == Scope::Country)
            .expect("a reopening after the restart");
        assert_eq!(reopened.incident.id, unstopped[0].id);
        assert_eq!(reopened.incident.detected_at, opened_at);
        assert_eq!(changes.incidents[&unstopped[0].id], unstopped[0]);

        // `redetect` computes the same minute from the same rollups.
        detector::redetect(
            store.clone(),
            catalog.clone(),
            &settings.detector,
            None,
            Some(end),
            end,
        )
        .await
        .unwrap();
        assert_eq!(
            store.incident(unstopped[0].id).await.unwrap().as_ref(),
            Some(&unstopped[0])
        );
        app.stop().await;
    }
);

on_both_backends!(
    a_tick_takes_the_time_and_catches_up_an_hour_at_a_time,
    |backend| async move {
        use outagewatch::detector::{Detection, LiveContext, LiveDetector, Tick};
        use outagewatch::runtime::events::{EventBus, LiveEvent};

        let app = TestApp::spawn_with(backend, "[detector]\nenabled = false\n").await;
        let scenario = resurge_scenario();
        common::insert_scenario_at_once(&app, &scenario).await;
        let settings = app
            .db
            .settings("[detector]\nenabled = false\nsettle_seconds = 30\n");
        let store = app.store.clone();
        let catalog = Arc::new(app::catalog(&settings));
        let first = store.first_rollup_minute().await.unwrap().unwrap();
        let (events, relay) = EventBus::start(store.clone()).await;
        let bus = events.clone();
        let mut heard = events.subscribe();
        let context = LiveContext {
            store: store.clone(),
            catalog: catalog.clone(),
            settings: settings.detector.clone(),
            events,
            outbox: Default::default(),
        };
        // Three days of rollups, the last minute settled 40 s ago at `now`.
        let now = scenario.end() + TimeDelta::seconds(30 + 40);
        let mut live = LiveDetector::resume(context, now).await.unwrap();
        assert_eq!(live.watermark(), None);
        let mut behind = 0;
        let next_due = loop {
            match live.tick(now).await.unwrap() {
                Tick::Behind => behind += 1,
                Tick::CaughtUp { next_due } => break next_due,
            }
        };
        // 72 hours, an hour per tick: 71 ticks leave more to do, the 72nd catches up.
        assert_eq!(behind, 71);
        let last = scenario.end() - TimeDelta::minutes(1);
        assert_eq!(live.watermark(), Some(last));
        assert_eq!(store.checkpoint().await.unwrap().unwrap().watermark, last);
        // The next minute is complete at its end plus the settle time.
        assert_eq!(
            next_due,
            scenario.end() + TimeDelta::minutes(1) + TimeDelta::seconds(30)
        );
        // Nothing new at the same time: no work, the same answer.
        assert_eq!(live.tick(now).await.unwrap(), Tick::CaughtUp { next_due });
        assert_eq!(live.watermark(), Some(last));

        // What it stored is what the detector computes over the same rollups in one range.
        let mut whole = Detection::fresh(store.clone(), catalog.clone(), &settings.detector);
        let expected: Vec<Incident> = whole
            .step_range(first, scenario.end())
            .await
            .unwrap()
            .incidents
            .into_values()
            .collect();
        let mut stored = all_incidents(&store).await;
        stored.sort_by_key(|i| i.id);
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by_key(|i| i.id);
        assert_eq!(stored, expected_sorted);
        assert!(!stored.is_empty());
        // The changes were announced (relayed through the store on Postgres): every incident, and
        // X's counts of the last five minutes only. A marker published after the ticks ends the
        // reading, since events arrive in the order they were published.
        bus.publish(LiveEvent::Counts {
            service: "end-of-ticks".to_owned(),
            minute: scenario.end(),
            count: 0,
        })
        .await;
        let mut announced = std::collections::BTreeSet::new();
        let mut counted = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), heard.recv())
                .await
                .expect("the marker arrives")
                .unwrap();
            if event.service() == "end-of-ticks" {
                break;
            }
            match event {
                LiveEvent::Incident { incident, .. } => {
                    announced.insert(incident.id);
                }
                LiveEvent::Counts {
                    service, minute, ..
                } if service == "x" => counted.push(minute),
                _ => {}
            }
        }
        assert_eq!(
            announced.into_iter().collect::<Vec<_>>(),
            expected_sorted.iter().map(|i| i.id).collect::<Vec<_>>()
        );
        assert_eq!(
            counted,
            (1..=5)
                .rev()
                .map(|m| scenario.end() - TimeDelta::minutes(m))
                .collect::<Vec<_>>()
        );
        relay.stop().await;
        app.stop().await;
    }
);
