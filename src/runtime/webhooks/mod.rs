//! Webhooks: which configured endpoints an incident change is announced to, the JSON body, its event id and signature, and when a failed delivery is retried.
//!
//! The detector leader turns each opened, reopened or resolved incident into one queued
//! delivery per matching endpoint ([`Outbox`]), stored in the same transaction as the
//! incident change; every process's [`deliverer`] then POSTs the queued bodies until a
//! receiver answers 2xx, backing off between failures. Everything here but the deliverer is
//! pure: time is an argument.

pub mod deliverer;

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::config::{WebhookDeliverySettings, WebhookSettings};
use crate::domain::buckets::minute_of;
use crate::domain::incidents::Incident;
use crate::store::NewDelivery;

/// The event type of an incident that opened or reopened.
pub const OPENED: &str = "incident.opened";

/// The event type of an incident that resolved.
pub const RESOLVED: &str = "incident.resolved";

/// The header naming the event (the same id on every attempt: receivers deduplicate on it).
pub const EVENT_ID_HEADER: &str = "x-outagewatch-event-id";

/// The header with the attempt's unix time in seconds, which the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-outagewatch-timestamp";

/// The header with `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-outagewatch-signature";

/// One configured endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The stable key its deliveries are stored under.
    pub name: String,
    url: SecretString,
    services: Vec<String>,
    /// Upper-case ISO codes.
    countries: Vec<String>,
    secret: Option<SecretString>,
}

impl Endpoint {
    /// The endpoint a (validated) `[[webhooks]]` table describes.
    pub fn new(settings: &WebhookSettings) -> Endpoint {
        Endpoint {
            name: settings.name.clone(),
            url: settings.url.clone(),
            services: settings.services.clone(),
            countries: settings
                .countries
                .iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .collect(),
            secret: settings.secret.clone(),
        }
    }

    /// Whether the endpoint wants events about `incident`: its service is listed (or none
    /// are) and its country is listed (or none are; a global incident has no country).
    pub fn matches(&self, incident: &Incident) -> bool {
        let service = self.services.is_empty() || self.services.contains(&incident.service);
        let country = self.countries.is_empty()
            || incident
                .country
                .as_ref()
                .is_some_and(|c| self.countries.contains(c));
        service && country
    }

    /// The URL's host, the only part of it that is logged (the path and query may hold a token).
    pub fn host(&self) -> String {
        reqwest::Url::parse(self.url.expose_secret())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

/// The event type an incident change is announced as: opened (a reopening is an opening) and
/// resolved; peak updates are not announced.
pub fn event_type(kind: &str) -> Option<&'static str> {
    match kind {
        "opened" | "reopened" => Some(OPENED),
        "resolved" => Some(RESOLVED),
        _ => None,
    }
}

/// The stable id of one event: the same incident, type and minute always give the same id,
/// so however often it is enqueued or retried, a receiver can tell it has seen it.
pub fn event_id(incident_id: Uuid, event_type: &str, occurred_at: DateTime<Utc>) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("outagewatch 2026 webhook event id");
    hasher.update(incident_id.as_bytes());
    hasher.update(&(event_type.len() as u64).to_le_bytes());
    hasher.update(event_type.as_bytes());
    hasher.update(&minute_of(occurred_at).timestamp().to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The one line chat tools show: Slack reads it from `text`, Discord from `content`.
pub fn text(kind: &str, incident: &Incident) -> String {
    let lead = match kind {
        "reopened" => "\u{1f6a8} Outage reopened",
        "resolved" => "\u{2705} Outage resolved",
        _ => "\u{1f6a8} Outage opened",
    };
    format!("{lead}: {}", incident.summary)
}

/// The JSON body of one event.
#[derive(Serialize)]
struct Payload<'a> {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'static str,
    occurred_at: DateTime<Utc>,
    /// The incident as the API serves it, as it stood when the event happened.
    incident: &'a Incident,
    text: &'a str,
    content: &'a str,
}

/// The JSON body announcing `incident`'s change of `kind` (an `event_type` event) at `occurred_at`.
pub fn payload(
    event_id: Uuid,
    event_type: &'static str,
    kind: &str,
    occurred_at: DateTime<Utc>,
    incident: &Incident,
) -> String {
    let line = text(kind, incident);
    let payload = Payload {
        event_id,
        event_type,
        occurred_at,
        incident,
        text: &line,
        content: &line,
    };
    // Strings, numbers, times and maps of them always serialize.
    serde_json::to_string(&payload).unwrap_or_default()
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the timestamp is signed with
/// the body so a captured request cannot be replayed later under a new time.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// How long to wait after the `failures`-th failed attempt (1 for the first): the initial
/// backoff doubled per further failure, capped, then shortened by up to the jitter share
/// (`jitter_unit` in [0, 1) picks how much).
pub fn backoff(settings: &WebhookDeliverySettings, failures: u32, jitter_unit: f64) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(40);
    let seconds = settings
        .initial_backoff_seconds
        .saturating_mul(1u64 << doublings)
        .min(settings.max_backoff_seconds);
    let shortened =
        f64::from(settings.backoff_jitter_percent.min(100)) / 100.0 * jitter_unit.clamp(0.0, 1.0);
    let millis = (seconds as f64 * 1000.0 * (1.0 - shortened)).round() as i64;
    TimeDelta::milliseconds(millis)
}

/// A number in [0, 1) that differs between deliveries and attempts but not between runs:
/// retries of many deliveries spread out without a random number generator.
pub fn jitter_unit(event_id: Uuid, endpoint: &str, failures: u32) -> f64 {
    let mut hasher = blake3::Hasher::new_derive_key("outagewatch 2026 webhook jitter");
    hasher.update(event_id.as_bytes());
    hasher.update(endpoint.as_bytes());
    hasher.update(&failures.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The configured endpoints, as the detector leader enqueues deliveries for them.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    endpoints: Vec<Endpoint>,
    max_event_age: TimeDelta,
}

impl Outbox {
    /// The outbox of the configured endpoints (empty when none are).
    pub fn new(webhooks: &[WebhookSettings], delivery: &WebhookDeliverySettings) -> Outbox {
        Outbox {
            endpoints: webhooks.iter().map(Endpoint::new).collect(),
            max_event_age: TimeDelta::minutes(
                i64::try_from(delivery.max_event_age_minutes).unwrap_or(i64::MAX / 60_000),
            ),
        }
    }

    /// The deliveries announcing one incident change of `kind` at `now`: one per matching
    /// endpoint, none for a peak update or for a change older than the age bound (history
    /// the detector is catching up over).
    pub fn deliveries(
        &self,
        kind: &str,
        incident: &Incident,
        now: DateTime<Utc>,
    ) -> Vec<NewDelivery> {
        let Some(event_type) = event_type(kind) else {
            return Vec::new();
        };
        let occurred_at = minute_of(incident.updated_at);
        if now - occurred_at > self.max_event_age {
            return Vec::new();
        }
        let matching: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.matches(incident))
            .collect();
        if matching.is_empty() {
            return Vec::new();
        }
        let event_id = event_id(incident.id, event_type, occurred_at);
        let body = payload(event_id, event_type, kind, occurred_at, incident);
        matching
            .into_iter()
            .map(|endpoint| NewDelivery {
                event_id,
                endpoint: endpoint.name.clone(),
                event_type,
                incident_id: incident.id,
                occurred_at,
                payload: body.clone(),
                created_at: now,
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Settings;
    use crate::domain::incidents::{incident_id, Scope, Status};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn incident(service: &str, country: Option<&str>, city: Option<&str>) -> Incident {
        let started_at = at("2025-03-10T09:52:00Z");
        Incident {
            id: incident_id(service, country, city, started_at),
            service: service.into(),
            scope: match (country, city) {
                (None, _) => Scope::Global,
                (Some(_), None) => Scope::Country,
                (Some(_), Some(_)) => Scope::City,
            },
            country: country.map(str::to_owned),
            city: city.map(str::to_owned),
            status: Status::Open,
            started_at,
            detected_at: at("2025-03-10T09:55:00Z"),
            peak_at: started_at,
            peak_count: 136.0,
            expected_at_peak: 4.44,
            start_count: 74.0,
            excess_reports: 62.0,
            resolved_at: None,
            top_cities: Vec::new(),
            problems: BTreeMap::new(),
            parent_id: None,
            summary: "Reports about X in Pakistan rose from 74 to 136 per 15 minutes (1.8×; about 4.4 expected).".into(),
            updated_at: at("2025-03-10T09:55:00Z"),
            note: None,
            resolved_by: None,
        }
    }

    fn settings(extra: &str) -> Settings {
        Settings::from_toml(&[extra]).unwrap()
    }

    const HOOKS: &str = r#"
[[webhooks]]
name = "pk-x"
url = "https://hooks.example.com/services/T0/B0/token"
services = ["x"]
countries = ["pk"]
[[webhooks]]
name = "everything"
url = "http://127.0.0.1:9/hook"
[[webhooks]]
name = "youtube-only"
url = "http://127.0.0.1:9/hook"
services = ["youtube"]
"#;

    fn outbox(extra: &str) -> (Outbox, Vec<Endpoint>) {
        let settings = settings(&format!("{HOOKS}{extra}"));
        let endpoints = settings.webhooks.iter().map(Endpoint::new).collect();
        (
            Outbox::new(&settings.webhooks, &settings.webhook_delivery),
            endpoints,
        )
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body_in_hex() {
        // python3: hmac.new(b"s3cret-key", b"1741600000." + body, hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"s3cret-key", 1_741_600_000, br#"{"event_id":"x"}"#),
            "sha256=654e0e5a27c514a314fc58f9503962d72e790db4929027f481a27071589d5d1e"
        );
    }

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let mut delivery = settings("").webhook_delivery;
        assert_eq!(
            (
                delivery.initial_backoff_seconds,
                delivery.max_backoff_seconds
            ),
            (10, 600)
        );
        delivery.backoff_jitter_percent = 0;
        let waits: Vec<i64> = (1..=9)
            .map(|n| backoff(&delivery, n, 0.7).num_seconds())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff(&delivery, u32::MAX, 0.7).num_seconds(), 600);
    }

    #[test]
    fn jitter_shortens_a_wait_by_at_most_its_share() {
        let delivery = settings("").webhook_delivery;
        assert_eq!(delivery.backoff_jitter_percent, 20);
        assert_eq!(backoff(&delivery, 1, 0.0).num_milliseconds(), 10_000);
        assert_eq!(backoff(&delivery, 1, 0.5).num_milliseconds(), 9_000);
        assert_eq!(backoff(&delivery, 3, 0.25).num_milliseconds(), 38_000);
        let id = Uuid::from_u128(7);
        let units: Vec<f64> = (1..=50).map(|n| jitter_unit(id, "pk-x", n)).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        assert_eq!(units[0], jitter_unit(id, "pk-x", 1));
        assert_ne!(units[0], jitter_unit(id, "everything", 1));
        // Spread out, not stuck at one end.
        assert!(units.iter().any(|u| *u < 0.3) && units.iter().any(|u| *u > 0.7));
    }

    #[test]
    fn filters_match_listed_services_and_countries_and_no_filter_matches_everything() {
        let (_, endpoints) = outbox("");
        let [pk_x, everything, youtube] = [&endpoints[0], &endpoints[1], &endpoints[2]];
        let country = incident("x", Some("PK"), None);
        let city = incident("x", Some("PK"), Some("Lahore"));
        let global = incident("x", None, None);
        let elsewhere = incident("x", Some("GB"), None);
        let other_service = incident("youtube", Some("PK"), None);
        assert!(pk_x.matches(&country) && pk_x.matches(&city));
        assert!(!pk_x.matches(&global), "a global incident has no country");
        assert!(!pk_x.matches(&elsewhere) && !pk_x.matches(&other_service));
        for incident in [&country, &city, &global, &elsewhere, &other_service] {
            assert!(everything.matches(incident));
        }
        assert!(youtube.matches(&other_service) && !youtube.matches(&country));
        assert_eq!(pk_x.host(), "hooks.example.com");
    }

    #[test]
    fn an_event_id_depends_on_the_incident_the_type_and_the_minute_only() {
        let id = Uuid::from_u128(42);
        let a = event_id(id, OPENED, at("2025-03-10T09:55:00Z"));
        assert_eq!(a, event_id(id, OPENED, at("2025-03-10T09:55:59Z")));
        assert_ne!(a, event_id(id, RESOLVED, at("2025-03-10T09:55:00Z")));
        assert_ne!(a, event_id(id, OPENED, at("2025-03-10T09:56:00Z")));
        assert_ne!(
            a,
            event_id(Uuid::from_u128(43), OPENED, at("2025-03-10T09:55:00Z"))
        );
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn the_text_line_says_what_happened_and_repeats_the_summary() {
        let mut incident = incident("x", Some("PK"), None);
        assert_eq!(
            text("opened", &incident),
            "🚨 Outage opened: Reports about X in Pakistan rose from 74 to 136 per 15 minutes (1.8×; about 4.4 expected)."
        );
        assert!(text("reopened", &incident).starts_with("🚨 Outage reopened: Reports about X"));
        incident
            .summary
            .push_str(" It ended at 2025-03-10 16:31 UTC.");
        assert_eq!(
            text("resolved", &incident),
            "✅ Outage resolved: Reports about X in Pakistan rose from 74 to 136 per 15 minutes (1.8×; about 4.4 expected). It ended at 2025-03-10 16:31 UTC."
        );
    }

    #[test]
    fn an_opening_is_queued_once_per_matching_endpoint_with_one_body() {
        let (outbox, _) = outbox("[webhook_delivery]\nmax_event_age_minutes = 60\n");
        let incident = incident("x", Some("PK"), Some("Lahore"));
        let now = at("2025-03-10T09:56:10Z");
        let deliveries = outbox.deliveries("reopened", &incident, now);
        let names: Vec<&str> = deliveries.iter().map(|d| d.endpoint.as_str()).collect();
        assert_eq!(names, ["pk-x", "everything"]);
        let expected_id = event_id(incident.id, OPENED, at("2025-03-10T09:55:00Z"));
        for delivery in &deliveries {
            assert_eq!(delivery.event_id, expected_id);
            assert_eq!(delivery.event_type, OPENED);
            assert_eq!(delivery.occurred_at, at("2025-03-10T09:55:00Z"));
            assert_eq!(delivery.created_at, now);
            assert_eq!(delivery.payload, deliveries[0].payload);
        }
        let body: serde_json::Value = serde_json::from_str(&deliveries[0].payload).unwrap();
        assert_eq!(body["event_id"], expected_id.to_string());
        assert_eq!(body["type"], "incident.opened");
        assert_eq!(body["occurred_at"], "2025-03-10T09:55:00Z");
        assert_eq!(body["incident"]["id"], incident.id.to_string());
        assert_eq!(body["incident"]["city"], "Lahore");
        assert_eq!(body["incident"]["started_at"], "2025-03-10T09:52:00Z");
        assert_eq!(body["incident"]["detected_at"], "2025-03-10T09:55:00Z");
        assert!(body["text"]
            .as_str()
            .unwrap()
            .starts_with("🚨 Outage reopened: "));
        assert_eq!(body["content"], body["text"]);
    }

    #[test]
    fn peak_updates_and_changes_older_than_the_age_bound_are_not_queued() {
        let (outbox, _) = outbox("[webhook_delivery]\nmax_event_age_minutes = 60\n");
        let incident = incident("x", Some("PK"), None);
        assert!(outbox
            .deliveries("updated", &incident, at("2025-03-10T09:56:00Z"))
            .is_empty());
        assert_eq!(
            outbox
                .deliveries("opened", &incident, at("2025-03-10T10:55:00Z"))
                .len(),
            2
        );
        assert!(outbox
            .deliveries("opened", &incident, at("2025-03-10T10:55:01Z"))
            .is_empty());
        assert!(Outbox::default()
            .deliveries("opened", &incident, at("2025-03-10T09:56:00Z"))
            .is_empty());
    }
}
