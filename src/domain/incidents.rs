//! Incidents as the outside world sees them: scope, status, peak, cities, problem mix and a one-sentence summary.
//!
//! The detector core ([`crate::detect`]) finds surges in anonymous series; this module gives
//! them names: which service, where, how they relate (a city incident belongs to its country's,
//! a country's to the service's global one) and how to say so in plain English.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How far an incident reaches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The service's worldwide series surged.
    Global,
    /// One country's series surged.
    Country,
    /// One city's series surged.
    City,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Country => "country",
            Self::City => "city",
        }
    }

    /// The scope of the incidents of a regions level: cities, or countries.
    pub fn of_regions(cities: bool) -> Scope {
        if cities {
            Self::City
        } else {
            Self::Country
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "global" => Some(Self::Global),
            "country" => Some(Self::Country),
            "city" => Some(Self::City),
            _ => None,
        }
    }
}

/// Whether an incident is still going on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "open" => Some(Self::Open),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// Reports from one city during an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CityCount {
    pub country: String,
    pub city: String,
    pub count: i64,
}

/// Which incidents to list: newest first, `limit` at most, after the `after` cursor.
#[derive(Clone, Debug, Default)]
pub struct IncidentQuery {
    pub service: Option<String>,
    pub country: Option<String>,
    /// None = open and resolved.
    pub status: Option<Status>,
    /// Only incidents that started at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
    /// The (started_at, id) of the last incident of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// One incident, as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub service: String,
    pub scope: Scope,
    /// None for a global incident.
    pub country: Option<String>,
    /// Set only for a city incident.
    pub city: Option<String>,
    pub status: Status,
    /// The first surging minute (the detector back-dates the start to it).
    pub started_at: DateTime<Utc>,
    /// The minute the detector opened the incident, once the surge had held long enough; a
    /// reopened incident keeps its first.
    pub detected_at: DateTime<Utc>,
    pub peak_at: DateTime<Utc>,
    /// The highest 15-minute count.
    pub peak_count: f64,
    /// The 15-minute count expected at the peak.
    pub expected_at_peak: f64,
    /// The 15-minute count when the incident opened.
    pub start_count: f64,
    /// Reports above the expectation, summed over the incident (severity).
    pub excess_reports: f64,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The cities with most counted reports during the incident, most first.
    pub top_cities: Vec<CityCount>,
    /// Share of each problem kind among the incident's counted reports.
    pub problems: BTreeMap<String, f64>,
    /// The incident this one is part of: a city's country incident, a country's global one.
    pub parent_id: Option<Uuid>,
    pub summary: String,
    /// The last minute the detector changed this record at.
    pub updated_at: DateTime<Utc>,
    /// An admin's note on the incident (left out when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who resolved it by hand (an admin token's name); the detector no longer changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// The stable id of the incident of one series that started at `started_at`: a re-run of the
/// detector over the same rollups writes the same ids.
pub fn incident_id(
    service: &str,
    country: Option<&str>,
    city: Option<&str>,
    started_at: DateTime<Utc>,
) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("outagewatch 2026 incident id");
    for part in [Some(service), country, city] {
        match part {
            None => hasher.update(&[0]),
            Some(text) => hasher
                .update(&[1])
                .update(&(text.len() as u64).to_le_bytes())
                .update(text.as_bytes()),
        };
    }
    hasher.update(&started_at.timestamp().to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Share of each problem kind, from counts (kinds with no reports are left out).
pub fn problem_shares(counts: &[(String, i64)]) -> BTreeMap<String, f64> {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    if total <= 0 {
        return BTreeMap::new();
    }
    counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| {
            let share = *n as f64 / total as f64;
            (kind.clone(), (share * 1000.0).round() / 1000.0)
        })
        .collect()
}

/// Names used in a summary sentence.
pub struct Names<'a> {
    /// The service's display name ("X").
    pub service: &'a str,
    /// "Pakistan", "Lahore, Pakistan", or None for the world.
    pub place: Option<String>,
}

/// One plain-English sentence: "Reports about X in Pakistan rose from 74 to 136 per 15 minutes
/// (1.8×; about 12 expected), mostly from Lahore, Rawalpindi and Karachi."
pub fn summary(incident: &Incident, names: &Names<'_>) -> String {
    let mut text = format!("Reports about {}", names.service);
    match &names.place {
        Some(place) => {
            let _ = write!(text, " in {place}");
        }
        None => text.push_str(" worldwide"),
    }
    let start = incident.start_count.round();
    let peak = incident.peak_count.round();
    let growth = if start > 0.0 { peak / start } else { 0.0 };
    let _ = write!(
        text,
        " rose from {} to {} per 15 minutes",
        thousands(start),
        thousands(peak)
    );
    if growth > 0.0 {
        let _ = write!(
            text,
            " ({growth:.1}×; about {} expected)",
            expected_text(incident)
        );
    } else {
        let _ = write!(text, " (about {} expected)", expected_text(incident));
    }
    let cities: Vec<&str> = incident
        .top_cities
        .iter()
        .take(3)
        .map(|c| c.city.as_str())
        .collect();
    if incident.scope != Scope::City && !cities.is_empty() {
        let _ = write!(text, ", mostly from {}", english_list(&cities));
    }
    text.push('.');
    if let Some(resolved_at) = incident.resolved_at {
        let _ = write!(
            text,
            " It ended at {} UTC.",
            resolved_at.format("%Y-%m-%d %H:%M")
        );
    }
    text
}

fn expected_text(incident: &Incident) -> String {
    let expected = incident.expected_at_peak;
    if expected >= 10.0 {
        thousands(expected.round())
    } else {
        format!("{expected:.1}")
    }
}

/// 40000 → "40,000".
fn thousands(value: f64) -> String {
    let digits = format!("{}", value.max(0.0) as u64);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// ["a", "b", "c"] → "a, b and c".
fn english_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pakistan() -> Incident {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("valid time");
        Incident {
            id: incident_id("x", Some("PK"), None, at("2025-03-10T09:52:00Z")),
            service: "x".into(),
            scope: Scope::Country,
            country: Some("PK".into()),
            city: None,
            status: Status::Open,
            started_at: at("2025-03-10T09:52:00Z"),
            detected_at: at("2025-03-10T09:54:00Z"),
            peak_at: at("2025-03-10T18:06:00Z"),
            peak_count: 136.0,
            expected_at_peak: 4.44,
            start_count: 74.0,
            excess_reports: 1500.0,
            resolved_at: None,
            top_cities: ["Lahore", "Rawalpindi", "Karachi", "Islamabad"]
                .iter()
                .zip([50, 30, 20, 5])
                .map(|(city, count)| CityCount {
                    country: "PK".into(),
                    city: (*city).into(),
                    count,
                })
                .collect(),
            problems: BTreeMap::new(),
            parent_id: None,
            summary: String::new(),
            updated_at: at("2025-03-10T18:06:00Z"),
            note: None,
            resolved_by: None,
        }
    }

    #[test]
    fn the_summary_names_the_rise_the_ratio_and_three_cities() {
        let names = Names {
            service: "X",
            place: Some("Pakistan".into()),
        };
        assert_eq!(
            summary(&pakistan(), &names),
            "Reports about X in Pakistan rose from 74 to 136 per 15 minutes (1.8×; about 4.4 expected), mostly from Lahore, Rawalpindi and Karachi."
        );
    }

    #[test]
    fn a_resolved_global_summary_says_worldwide_and_when_it_ended() {
        let mut incident = pakistan();
        incident.scope = Scope::Global;
        incident.start_count = 2_000.0;
        incident.peak_count = 40_012.4;
        incident.expected_at_peak = 61.0;
        incident.top_cities.truncate(1);
        incident.resolved_at = Some("2025-03-10T16:31:00Z".parse().expect("valid time"));
        let names = Names {
            service: "X",
            place: None,
        };
        assert_eq!(
            summary(&incident, &names),
            "Reports about X worldwide rose from 2,000 to 40,012 per 15 minutes (20.0×; about 61 expected), mostly from Lahore. It ended at 2025-03-10 16:31 UTC."
        );
    }

    #[test]
    fn ids_are_stable_and_differ_by_series_and_start() {
        let at = "2025-03-10T09:52:00Z".parse().expect("valid time");
        let a = incident_id("x", Some("PK"), None, at);
        assert_eq!(a, incident_id("x", Some("PK"), None, at));
        assert_ne!(a, incident_id("x", Some("PK"), Some(""), at));
        assert_ne!(a, incident_id("x", Some("P"), Some("K"), at));
        assert_ne!(
            a,
            incident_id("x", Some("PK"), None, at + chrono::Duration::minutes(1))
        );
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn problem_shares_round_to_a_thousandth_and_skip_empty_kinds() {
        let shares = problem_shares(&[
            ("app".into(), 2),
            ("login".into(), 1),
            ("website".into(), 0),
        ]);
        assert_eq!(
            shares.into_iter().collect::<Vec<_>>(),
            vec![("app".to_owned(), 0.667), ("login".to_owned(), 0.333)]
        );
        assert!(problem_shares(&[]).is_empty());
    }
}
