//! Upgrading the detector: a stored snapshot names its model version, and one of another version
//! is refused as such.
#![allow(clippy::unwrap_used)]

use outagewatch::detect::engine::{SnapshotError, SNAPSHOT_VERSION};
use outagewatch::detect::{DetectorConfig, Engine, PlaceCount};

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
