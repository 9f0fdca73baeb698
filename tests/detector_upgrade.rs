//! Upgrading the detector: a stored snapshot of another model version (or none that parses) is
//! rebuilt from the stored rollups on start, and ends exactly where a detector that never
//! stopped would be; a snapshot of this version is restored as it is.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use common::{TestApp, X_IN_PAKISTAN};
use outagewatch::app;
use outagewatch::config::{DetectorSettings, Settings};
use outagewatch::detect::engine::{SnapshotError, SNAPSHOT_VERSION};
use outagewatch::detect::{DetectorConfig, Engine, PlaceCount, SeriesKey};
use outagewatch::detector::Detection;
use outagewatch::domain::incidents::{Incident, Scope, Status};
use outagewatch::domain::report::Catalog;
use outagewatch::runtime::webhooks::{self, Outbox};
use outagewatch::store::{DeliveryStatus, DetectionWrite, IncidentAction, IncidentQuery, Store};
use outagewatch_scenario::Scenario;
use uuid::Uuid;

fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

const MINUTE: TimeDelta = TimeDelta::minutes(1);

/// The snapshot `Engine::snapshot` wrote in the previous release (commit 9b71ab9), before
/// snapshots carried a version: an engine that stepped an hour of Pakistan and Lahore counts.
const PREVIOUS_RELEASE_SNAPSHOT: &str = include_str!("fixtures/detector-snapshot-9b71ab9.json");

#[test]
fn a_snapshot_of_the_previous_release_is_version_1_not_a_parse_error() {
    let config = DetectorConfig::default();
    assert!(!PREVIOUS_RELEASE_SNAPSHOT.contains("\"version\""));
    match Engine::restore(&config, PREVIOUS_RELEASE_SNAPSHOT) {
        Err(SnapshotError::Version { found }) => assert_eq!(found, 1),
        other => panic!("expected a version mismatch, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_snapshot_names_its_version_and_only_that_version_restores() {
    let config = DetectorConfig::default();
    let mut engine = Engine::new(&config);
    for minute in 0..30 {
        let counts = [PlaceCount {
            service: "x",
            country: "PK",
            city: "",
            count: 3,
        }];
        engine.step(1_741_600_800 + minute * 60, &counts);
    }
    let snapshot = engine.snapshot().unwrap();
    let value: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(SNAPSHOT_VERSION, 2);
    assert_eq!(value["version"], 2);
    let restored = Engine::restore(&config, &snapshot).unwrap();
    assert_eq!(restored.snapshot().unwrap(), snapshot);
    assert_eq!(restored.last_minute(), Some(1_741_600_800 + 29 * 60));

    let with_version = |version: serde_json::Value| {
        let mut value = value.clone();
        value["version"] = version;
        value.to_string()
    };
    let version_of = |snapshot: &str| match Engine::restore(&config, snapshot) {
        Err(SnapshotError::Version { found }) => Some(found),
        _ => None,
    };
    assert_eq!(version_of(&with_version(1.into())), Some(1));
    assert_eq!(version_of(&with_version(3.into())), Some(3));
    let mut unversioned = value.clone();
    unversioned.as_object_mut().unwrap().remove("version");
    assert_eq!(version_of(&unversioned.to_string()), Some(1));
    // Not a snapshot at all, a version that is not a number, and this version's tag on a body
    // that is not this version's shape: unreadable, not a version question.
    for unreadable in [
        "{not json".to_owned(),
        "[]".to_owned(),
        with_version("2".into()),
        r#"{"version":2,"series":7}"#.to_owned(),
    ] {
        assert!(
            matches!(
                Engine::restore(&config, &unreadable),
                Err(SnapshotError::Unreadable(_))
            ),
            "{unreadable}"
        );
    }
}

/// Four days of X in Pakistan (with Lahore and Karachi) and Great Britain, from Monday 3 March
/// 2025. Pakistan surges on Wednesday at noon (over by the watermark) and on Thursday from
/// 20:00 to 23:00 (open at the watermark, 21:00); Great Britain surges from 21:10.
fn scenario() -> Scenario {
    Scenario::from_toml(&format!(
        r#"
name = "upgrade"
start = "2025-03-03T00:00:00Z"
end = "2025-03-07T00:00:00Z"
seed = 35

[problems]
app = 0.6
login = 0.4

{X_IN_PAKISTAN}[traffic.cities]
Lahore = 0.4
Karachi = 0.3

[[traffic]]
service = "x"
country = "GB"
per_minute = 1.5
diurnal_amplitude = 0.4
peak_hour_utc = 19
dispersion = 0.05

[[surge]]
service = "x"
country = "PK"
points = [["2025-03-05T12:00:00Z", 0], ["2025-03-05T12:10:00Z", 300], ["2025-03-05T13:15:00Z", 300], ["2025-03-05T13:30:00Z", 0]]
[surge.cities]
Lahore = 0.7

[[surge]]
service = "x"
country = "PK"
points = [["2025-03-06T20:00:00Z", 0], ["2025-03-06T20:10:00Z", 300], ["2025-03-06T22:45:00Z", 300], ["2025-03-06T23:00:00Z", 0]]
[surge.cities]
Lahore = 0.7

[[surge]]
service = "x"
country = "GB"
points = [["2025-03-06T21:10:00Z", 0], ["2025-03-06T21:20:00Z", 400], ["2025-03-06T22:00:00Z", 400], ["2025-03-06T22:15:00Z", 0]]
"#
    ))
    .unwrap()
}

/// The last minute the previous release processed before it was stopped for the upgrade.
fn watermark() -> DateTime<Utc> {
    time("2025-03-06T21:00:00Z")
}

const DETECTOR_OFF: &str = "[detector]\nenabled = false\n";

/// A database the previous release left behind: the scenario's reports, the incidents the
/// detector stored up to the watermark, and a snapshot with no version; with the detector
/// settings and catalog to resume with.
struct Upgraded {
    app: TestApp,
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    settings: Settings,
    first: DateTime<Utc>,
}

impl Upgraded {
    async fn new(backend: common::Backend) -> Upgraded {
        let app = TestApp::spawn_with(backend, DETECTOR_OFF).await;
        common::insert_scenario_at_once(&app, &scenario()).await;
        let settings = app.db.settings(DETECTOR_OFF);
        let store = app.store.clone();
        let catalog = Arc::new(app::catalog(&settings));
        let first = store.first_rollup_minute().await.unwrap().unwrap();
        let mut previous = Detection::fresh(store.clone(), catalog.clone(), &settings.detector);
        let changes = previous
            .step_range(first, watermark() + MINUTE)
            .await
            .unwrap();
        let incidents: Vec<Incident> = changes.incidents.into_values().collect();
        let snapshot = unversioned(&previous.snapshot().unwrap());
        store
            .write_detection(&DetectionWrite {
                incidents: &incidents,
                watermark: Some(watermark()),
                state: Some((watermark(), &snapshot)),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
        Upgraded {
            app,
            store,
            catalog,
            settings,
            first,
        }
    }

    fn detector(&self) -> &DetectorSettings {
        &self.settings.detector
    }

    /// Stores `snapshot` as the one taken at the watermark.
    async fn store_snapshot(&self, snapshot: &str) {
        self.store
            .write_detection(&DetectionWrite {
                state: Some((watermark(), snapshot)),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();
    }

    async fn resume(&self, outbox: &Outbox) -> Detection {
        let (detection, resumed_at) = Detection::resume(
            self.store.clone(),
            self.catalog.clone(),
            self.detector(),
            outbox,
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        assert_eq!(resumed_at, Some(watermark()));
        detection
    }
}

/// A snapshot as the previous release wrote it: the same state, no version.
fn unversioned(snapshot: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(snapshot).unwrap();
    value.as_object_mut().unwrap().remove("version");
    value.to_string()
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

fn country_incidents<'a>(incidents: &'a [Incident], country: &str) -> Vec<&'a Incident> {
    incidents
        .iter()
        .filter(|i| i.scope == Scope::Country && i.country.as_deref() == Some(country))
        .collect()
}

fn expectations(detection: &Detection) -> Vec<(SeriesKey, f64)> {
    detection
        .expectations()
        .map(|(key, expected)| (key.clone(), expected))
        .collect()
}

on_both_backends!(
    a_snapshot_of_the_previous_release_is_rebuilt_from_the_rollups_as_if_the_detector_never_stopped,
    |backend| async move {
        let db = Upgraded::new(backend).await;
        let (store, end) = (db.store.clone(), scenario().end());

        // A detector that never stopped, over the same rollups.
        let mut reference = Detection::fresh(store.clone(), db.catalog.clone(), db.detector());
        let mut expected: BTreeMap<Uuid, Incident> = reference
            .step_range(db.first, watermark() + MINUTE)
            .await
            .unwrap()
            .incidents;
        let reference_snapshot = reference.snapshot().unwrap();
        let reference_expectations = expectations(&reference);
        expected.extend(
            reference
                .step_range(watermark() + MINUTE, end)
                .await
                .unwrap()
                .incidents,
        );

        // What the previous release stored: Pakistan's first incident resolved, its second open.
        let stored = all_incidents(&store).await;
        let pk: Vec<(Status, DateTime<Utc>)> = country_incidents(&stored, "PK")
            .iter()
            .map(|i| (i.status, i.started_at))
            .collect();
        assert_eq!(pk.len(), 2, "{stored:#?}");
        assert_eq!(pk[1].0, Status::Resolved);
        assert!(pk[1].1 >= time("2025-03-05T12:00:00Z") && pk[1].1 < time("2025-03-05T12:15:00Z"));
        assert_eq!(pk[0].0, Status::Open);
        assert!(pk[0].1 >= time("2025-03-06T20:00:00Z") && pk[0].1 < time("2025-03-06T20:15:00Z"));
        assert!(country_incidents(&stored, "GB").is_empty());
        // An admin resolved the Lahore incident by hand.
        let lahore = stored
            .iter()
            .find(|i| i.city.as_deref() == Some("Lahore") && i.status == Status::Open)
            .expect("an open Lahore incident")
            .id;
        let lahore = store
            .act_on_incident(lahore, &IncidentAction::Resolve { by: "ops" }, watermark())
            .await
            .unwrap()
            .unwrap();
        let before = all_incidents(&store).await;

        // Whatever is wrong with the stored snapshot, the state is rebuilt, the same each time.
        let current = db.resume(&Outbox::default()).await.snapshot().unwrap();
        for snapshot in [
            current.replace("{\"version\":2,", "{\"version\":1,"),
            current.replace("{\"version\":2,", "{\"version\":3,"),
            "{\"version\":2,\"series\":".to_owned(),
            unversioned(&current),
        ] {
            db.store_snapshot(&snapshot).await;
            let resumed = db.resume(&Outbox::default()).await;
            assert_eq!(resumed.snapshot().unwrap(), reference_snapshot);
            assert_eq!(
                all_incidents(&store).await,
                before,
                "the rebuild rewrote history"
            );
            let (state_at, state) = store.checkpoint().await.unwrap().unwrap().state.unwrap();
            assert_eq!((state_at, state), (watermark(), reference_snapshot.clone()));
        }

        // The last one, the previous release's own, is where the detector goes on from.
        let mut resumed = db.resume(&Outbox::default()).await;
        assert_eq!(resumed.last_minute(), Some(watermark()));
        assert_eq!(expectations(&resumed), reference_expectations);
        // Learned baselines, not the warm-up floor of a fresh detector (1 per 15 minutes).
        let pk_expected = reference_expectations
            .iter()
            .find(|(key, _)| *key == SeriesKey::country("x", "PK"))
            .unwrap()
            .1;
        assert!(pk_expected > 5.0, "{pk_expected}");

        let after = resumed.step_range(watermark() + MINUTE, end).await.unwrap();
        let written: Vec<Incident> = after.incidents.into_values().collect();
        store
            .write_detection(&DetectionWrite {
                incidents: &written,
                watermark: Some(end - MINUTE),
                ..DetectionWrite::default()
            })
            .await
            .unwrap();

        // Every incident is the one the detector that never stopped has, once: Pakistan's
        // second incident resolved under its stored id, Great Britain's surge detected at the
        // same minute; only the Lahore incident stays as the admin left it.
        let mut expected_now = expected.clone();
        expected_now.insert(lahore.id, lahore.clone());
        let found: BTreeMap<Uuid, Incident> = all_incidents(&store)
            .await
            .into_iter()
            .map(|i| (i.id, i))
            .collect();
        assert_eq!(found, expected_now);
        let found: Vec<Incident> = found.into_values().collect();
        let pk = country_incidents(&found, "PK");
        assert_eq!(pk.len(), 2);
        assert!(pk.iter().all(|i| i.status == Status::Resolved));
        let gb = country_incidents(&found, "GB");
        assert_eq!(gb.len(), 1);
        assert!(gb[0].detected_at > watermark() && gb[0].started_at > watermark());
        assert_eq!(gb[0].detected_at, expected[&gb[0].id].detected_at);
        let admin = found.iter().find(|i| i.id == lahore.id).unwrap();
        assert_eq!(
            (admin.status, admin.resolved_by.as_deref()),
            (Status::Resolved, Some("ops"))
        );
        db.app.stop().await;
    }
);

on_both_backends!(
    a_snapshot_of_this_version_is_restored_as_it_is_without_a_rebuild,
    |backend| async move {
        let db = Upgraded::new(backend).await;
        // A state no replay of these rollups would give: an engine that saw one minute of
        // Great Britain, at the watermark.
        let mut engine = Engine::new(&db.detector().model);
        let counts = [PlaceCount {
            service: "x",
            country: "GB",
            city: "",
            count: 4,
        }];
        engine.step(watermark().timestamp(), &counts);
        let snapshot = engine.snapshot().unwrap();
        db.store_snapshot(&snapshot).await;
        let before = all_incidents(&db.store).await;

        let resumed = db.resume(&Outbox::default()).await;
        assert_eq!(resumed.snapshot().unwrap(), snapshot);
        assert_eq!(resumed.series_count(), 2);
        assert_eq!(resumed.last_minute(), Some(watermark()));
        assert_eq!(
            db.store.checkpoint().await.unwrap().unwrap().state,
            Some((watermark(), snapshot))
        );
        assert_eq!(all_incidents(&db.store).await, before);
        db.app.stop().await;
    }
);

/// A new model: the default with a stricter ratio floor, so it sees the same surges a little later.
fn stricter_model() -> DetectorConfig {
    DetectorConfig {
        open_min_ratio: 4.0,
        ..DetectorConfig::default()
    }
}

on_both_backends!(
    a_series_the_new_model_dates_differently_continues_its_stored_incident,
    |backend| async move {
        let db = Upgraded::new(backend).await;
        let store = db.store.clone();
        let mut settings = db.detector().clone();
        settings.model = stricter_model();
        let stored = all_incidents(&store).await;
        let open_pk = country_incidents(&stored, "PK")[0].clone();
        assert_eq!(open_pk.status, Status::Open);

        // The new model opens Pakistan's second incident at another start: another id.
        let mut reference = Detection::fresh(store.clone(), db.catalog.clone(), &settings);
        let dated_differently: Vec<Incident> = reference
            .step_range(db.first, watermark() + MINUTE)
            .await
            .unwrap()
            .incidents
            .into_values()
            .filter(|i| {
                i.scope == Scope::Country
                    && i.status == Status::Open
                    && i.started_at != open_pk.started_at
            })
            .collect();
        assert_eq!(dated_differently.len(), 1, "the precondition of this test");

        let (mut resumed, _) = Detection::resume(
            store.clone(),
            db.catalog.clone(),
            &settings,
            &Outbox::default(),
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        assert_eq!(all_incidents(&store).await, stored, "nothing to reconcile");
        // Restarted again, now from the snapshot the rebuild stored, it goes on the same way.
        let (mut restored, _) = Detection::resume(
            store.clone(),
            db.catalog.clone(),
            &settings,
            &Outbox::default(),
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        let after = resumed
            .step_range(watermark() + MINUTE, scenario().end())
            .await
            .unwrap();
        let after_restart = restored
            .step_range(watermark() + MINUTE, scenario().end())
            .await
            .unwrap();
        assert_eq!(after.incidents, after_restart.incidents);
        let written: Vec<Incident> = after.incidents.into_values().collect();
        store
            .write_detection(&DetectionWrite {
                incidents: &written,
                ..DetectionWrite::default()
            })
            .await
            .unwrap();

        // Still two incidents in Pakistan: the second resolved under its stored id, start and
        // first detection.
        let found = all_incidents(&store).await;
        let pk = country_incidents(&found, "PK");
        assert_eq!(pk.len(), 2, "{pk:#?}");
        assert_eq!(pk[0].id, open_pk.id);
        assert_eq!(pk[0].status, Status::Resolved);
        assert_eq!(
            (pk[0].started_at, pk[0].detected_at),
            (open_pk.started_at, open_pk.detected_at)
        );
        assert!(pk[0].resolved_at.unwrap() > watermark());
        assert!(store
            .incident(dated_differently[0].id)
            .await
            .unwrap()
            .is_none());
        db.app.stop().await;
    }
);

on_both_backends!(
    a_stored_open_incident_the_new_model_does_not_hold_open_is_resolved_and_announced,
    |backend| async move {
        let db = Upgraded::new(backend).await;
        let store = db.store.clone();
        let hooks = db.app.db.settings(
            "[[webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             [webhook_delivery]\nmax_event_age_minutes = 100000000\n",
        );
        let outbox = Outbox::new(&hooks.webhooks, &hooks.webhook_delivery);
        // A model that opens nothing.
        let mut settings = db.detector().clone();
        settings.model.open_min_count = 1e9;
        let open: Vec<Incident> = all_incidents(&store)
            .await
            .into_iter()
            .filter(|i| i.status == Status::Open)
            .collect();
        let mut scopes: Vec<Scope> = open.iter().map(|i| i.scope).collect();
        scopes.sort();
        assert_eq!(
            scopes,
            [Scope::Global, Scope::Country, Scope::City],
            "{open:#?}"
        );

        Detection::resume(
            store.clone(),
            db.catalog.clone(),
            &settings,
            &outbox,
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        let mut announced: Vec<(Uuid, String, DateTime<Utc>)> = store
            .webhook_deliveries(100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                assert_eq!(d.status, DeliveryStatus::Pending);
                (d.incident_id, d.event_type, d.occurred_at)
            })
            .collect();
        announced.sort();
        let mut expected: Vec<(Uuid, String, DateTime<Utc>)> = open
            .iter()
            .map(|i| (i.id, webhooks::RESOLVED.to_owned(), watermark()))
            .collect();
        expected.sort();
        assert_eq!(announced, expected);
        for incident in &open {
            let now = store.incident(incident.id).await.unwrap().unwrap();
            assert_eq!(now.status, Status::Resolved);
            assert_eq!(now.resolved_at, Some(watermark()));
            assert_eq!(now.updated_at, watermark());
            assert!(
                now.summary.ends_with(" It ended at 2025-03-06 21:00 UTC."),
                "{}",
                now.summary
            );
            assert_eq!(
                (now.started_at, now.detected_at),
                (incident.started_at, incident.detected_at)
            );
        }
        db.app.stop().await;
    }
);

on_both_backends!(
    a_rebuild_replays_history_days_before_the_watermark,
    |backend| async move {
        let db = Upgraded::new(backend).await;
        let mut settings = db.detector().clone();
        settings.history_days = 1;
        let (resumed, _) = Detection::resume(
            db.store.clone(),
            db.catalog.clone(),
            &settings,
            &Outbox::default(),
            outagewatch::runtime::clock::now(),
        )
        .await
        .unwrap();
        // The same state as an engine that started a day before the watermark.
        let day_before = watermark() + MINUTE - TimeDelta::days(1);
        assert!(day_before > db.first);
        let mut reference = Detection::fresh(db.store.clone(), db.catalog.clone(), &settings);
        reference
            .step_range(day_before, watermark() + MINUTE)
            .await
            .unwrap();
        assert_eq!(resumed.snapshot().unwrap(), reference.snapshot().unwrap());
        db.app.stop().await;
    }
);
