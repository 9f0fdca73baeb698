//! Read endpoints for dashboards: `GET /api/v1/counts` (a series in buckets, with the detector's
//! expectation), `GET /api/v1/services` (the catalog with status) and `GET /api/v1/places`
//! (gazetteer suggestions for a form's city field).

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::geo::{gazetteer, CountryCode};
use crate::incidents::Status;
use crate::report::Catalog;
use crate::report::FieldError;
use crate::store::{floor_to, IncidentQuery, Store};

/// The bucket widths `interval` accepts, in seconds.
const INTERVALS: [(&str, i64); 5] = [
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3600),
    ("1d", 86_400),
];

/// Most buckets one answer holds (a week at one minute is 10,080).
const MAX_BUCKETS: i64 = 10_080;

/// Expectations are stored per quarter hour.
const QUARTER: i64 = 900;

/// The query parameters as given, rejecting anything not in `known`.
pub(super) fn parameters(
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::InvalidParameters(vec![FieldError::new("query", e.body_text())]))?;
    let unknown: Vec<FieldError> = params
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.as_str(),
                format!("unknown parameter; known: {}", known.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(params)
    } else {
        Err(ApiError::InvalidParameters(unknown))
    }
}

fn time_parameter(
    params: &BTreeMap<String, String>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let value = params.get(name)?;
    match value.parse::<DateTime<Utc>>() {
        Ok(at) => Some(at),
        Err(_) => {
            errors.push(FieldError::new(
                name,
                format!("{name} must be an RFC 3339 time, e.g. 2025-03-10T00:00:00Z"),
            ));
            None
        }
    }
}

/// The required `service` parameter, as a catalog slug.
pub(super) fn service_parameter(
    params: &BTreeMap<String, String>,
    catalog: &Catalog,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match params.get("service").map(|s| catalog.parse(s)) {
        None => {
            errors.push(FieldError::new("service", "service is required"));
            None
        }
        Some(Ok(service)) => Some(service.slug.as_str().to_owned()),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
    }
}

/// The optional `country` parameter.
pub(super) fn country_parameter(
    params: &BTreeMap<String, String>,
    errors: &mut Vec<FieldError>,
) -> Option<CountryCode> {
    match params.get("country").map(|c| CountryCode::parse(c)) {
        None => None,
        Some(Ok(code)) => Some(code),
        Some(Err(e)) => {
            errors.push(FieldError::new("country", e.to_string()));
            None
        }
    }
}

/// A parameter naming one of `choices` (name, seconds); `default` when absent.
fn choice_parameter(
    params: &BTreeMap<String, String>,
    name: &str,
    default: &str,
    choices: &[(&str, i64)],
    errors: &mut Vec<FieldError>,
) -> (String, i64) {
    let value = params.get(name).map_or(default, String::as_str);
    let fallback = choices
        .iter()
        .find(|(c, _)| *c == default)
        .map_or(0, |(_, s)| *s);
    match choices.iter().find(|(choice, _)| *choice == value) {
        Some((choice, seconds)) => ((*choice).to_owned(), *seconds),
        None => {
            let names: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
            errors.push(FieldError::new(
                name,
                format!("{name} must be one of {}", names.join(", ")),
            ));
            (default.to_owned(), fallback)
        }
    }
}

/// The optional `limit` parameter, from 1 to `max`.
fn limit_parameter(
    params: &BTreeMap<String, String>,
    default: usize,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> usize {
    match params.get("limit").map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                format!("limit must be a whole number from 1 to {max}"),
            ));
            default
        }
    }
}

/// One bucket of counts.
#[derive(Serialize, Debug, PartialEq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub count: i64,
    /// The detector's expected count for the bucket; null where it has no expectation yet.
    pub expected: Option<f64>,
}

/// A counts series.
#[derive(Serialize)]
pub struct Counts {
    pub service: String,
    pub country: Option<String>,
    pub city: Option<String>,
    pub interval: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub buckets: Vec<Bucket>,
}

/// Dense buckets over `[from, to)` (from already aligned), with counts where the store had
/// any and the sum of the quarter-hour expectations each bucket covers (prorated when the
/// bucket is shorter than a quarter hour).
pub fn fill_buckets(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    counts: &[(DateTime<Utc>, i64)],
    quarters: &[(DateTime<Utc>, f64)],
) -> Vec<Bucket> {
    let counts: HashMap<i64, i64> = counts.iter().map(|(t, n)| (t.timestamp(), *n)).collect();
    let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
    for (quarter, value) in quarters {
        let q = quarter.timestamp();
        if bucket_seconds >= QUARTER {
            *expected
                .entry(q - q.rem_euclid(bucket_seconds))
                .or_default() += value;
        } else {
            let share = value * bucket_seconds as f64 / QUARTER as f64;
            let mut start = q;
            while start < q + QUARTER {
                expected.insert(start, share);
                start += bucket_seconds;
            }
        }
    }
    let mut buckets = Vec::new();
    let mut start = from.timestamp();
    while start < to.timestamp() {
        buckets.push(Bucket {
            start: DateTime::from_timestamp(start, 0).unwrap_or(from),
            count: counts.get(&start).copied().unwrap_or(0),
            expected: expected.get(&start).map(|e| (e * 100.0).round() / 100.0),
        });
        start += bucket_seconds;
    }
    buckets
}

/// The parameters `counts` knows.
const COUNTS_PARAMETERS: [&str; 6] = ["service", "country", "city", "interval", "from", "to"];

/// `GET /api/v1/counts`
pub async fn get_counts(
    State(state): State<AppState>,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<Counts>, ApiError> {
    let params = parameters(params, &COUNTS_PARAMETERS)?;
    Ok(Json(
        counts_answer(&state.store, &state.catalog, &params).await?,
    ))
}

/// The counts answer for query parameters (the API's and the `counts` command's).
pub async fn counts_answer(
    store: &Arc<dyn Store>,
    catalog: &Catalog,
    params: &BTreeMap<String, String>,
) -> Result<Counts, ApiError> {
    let mut errors = Vec::new();
    let service = service_parameter(params, catalog, &mut errors);
    let country = country_parameter(params, &mut errors);
    let city = match (params.get("city"), country) {
        (None, _) => None,
        (Some(_), None) => {
            if !params.contains_key("country") {
                errors.push(FieldError::new("city", "city needs a country"));
            }
            None
        }
        (Some(input), Some(code)) => match gazetteer().lookup(code, input) {
            Ok(city) => Some(city.name.to_owned()),
            Err(e) => {
                errors.push(FieldError::new("city", e.to_string()));
                None
            }
        },
    };
    let (interval, bucket_seconds) =
        choice_parameter(params, "interval", "15m", &INTERVALS, &mut errors);
    let to = time_parameter(params, "to", &mut errors);
    let from = time_parameter(params, "from", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::InvalidParameters(errors));
    }
    // Default: the last 24 hours, up to the end of the current bucket.
    let to = to.unwrap_or_else(|| {
        floor_to(crate::clock::now(), bucket_seconds) + TimeDelta::seconds(bucket_seconds)
    });
    let from = from.unwrap_or(to - TimeDelta::days(1));
    if from >= to {
        return Err(ApiError::InvalidParameters(vec![FieldError::new(
            "from",
            "from must be before to",
        )]));
    }
    let from = floor_to(from, bucket_seconds);
    if (to - from).num_seconds() / bucket_seconds > MAX_BUCKETS {
        return Err(ApiError::InvalidParameters(vec![FieldError::new(
            "from",
            format!("the range holds more than {MAX_BUCKETS} buckets of {interval}; narrow it or use a wider interval"),
        )]));
    }
    let service = service.unwrap_or_default();
    let (country_text, city_text) = (country.map(|c| c.as_str().to_owned()), city.clone());
    let counts = store
        .counts(
            &service,
            country_text.as_deref(),
            city_text.as_deref(),
            from,
            to,
            bucket_seconds,
        )
        .await
        .map_err(ApiError::from_store)?;
    let quarters = store
        .expectations(
            &service,
            country_text.as_deref(),
            city_text.as_deref(),
            floor_to(from, QUARTER),
            to,
        )
        .await
        .map_err(ApiError::from_store)?;
    let counts: Vec<(DateTime<Utc>, i64)> = counts.iter().map(|b| (b.start, b.count)).collect();
    Ok(Counts {
        buckets: fill_buckets(from, to, bucket_seconds, &counts, &quarters),
        service,
        country: country_text,
        city,
        interval,
        from,
        to,
    })
}

/// One catalog entry with its current state.
#[derive(Serialize)]
pub struct ServiceStatus {
    pub slug: String,
    pub name: String,
    /// `incident` while any incident of the service is open, else `normal`.
    pub status: &'static str,
    pub open_incidents: usize,
    /// Counted reports in the last 24 hours.
    pub reports_24h: i64,
}

/// `GET /api/v1/services`
pub async fn list_services(
    State(state): State<AppState>,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    parameters(params, &[])?;
    let now = crate::clock::now();
    let open = state
        .store
        .incidents(&IncidentQuery {
            status: Some(Status::Open),
            limit: 10_000,
            ..IncidentQuery::default()
        })
        .await
        .map_err(ApiError::from_store)?;
    let mut services = Vec::new();
    for service in state.catalog.services() {
        let slug = service.slug.as_str();
        let day = state
            .store
            .counts(slug, None, None, now - TimeDelta::days(1), now, 86_400 * 2)
            .await
            .map_err(ApiError::from_store)?;
        let open_incidents = open.iter().filter(|i| i.service == slug).count();
        services.push(ServiceStatus {
            slug: slug.to_owned(),
            name: service.name.clone(),
            status: if open_incidents > 0 {
                "incident"
            } else {
                "normal"
            },
            open_incidents,
            reports_24h: day.iter().map(|b| b.count).sum(),
        });
    }
    Ok(Json(serde_json::json!({ "services": services })))
}

/// One place suggestion.
#[derive(Serialize)]
pub struct Place {
    pub name: String,
    pub ascii_name: String,
    pub country: String,
    pub latitude: f64,
    pub longitude: f64,
    pub population: u32,
}

/// `GET /api/v1/places?country=PK&q=lah[&limit=10]`
pub async fn list_places(
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = parameters(params, &["country", "q", "limit"])?;
    let mut errors = Vec::new();
    let country = country_parameter(&params, &mut errors);
    if !params.contains_key("country") {
        errors.push(FieldError::new("country", "country is required"));
    }
    let q = params
        .get("q")
        .map(|q| q.trim().to_owned())
        .unwrap_or_default();
    if q.is_empty() {
        errors.push(FieldError::new(
            "q",
            "q (the start of a city name) is required",
        ));
    }
    let limit = limit_parameter(&params, 10, 50, &mut errors);
    let Some(country) = country.filter(|_| errors.is_empty()) else {
        return Err(ApiError::InvalidParameters(errors));
    };
    let places: Vec<Place> = gazetteer()
        .search_prefix(country, &q, limit)
        .into_iter()
        .map(|city| Place {
            name: city.name.to_owned(),
            ascii_name: city.ascii_name.to_owned(),
            country: city.country.as_str().to_owned(),
            latitude: city.latitude,
            longitude: city.longitude,
            population: city.population,
        })
        .collect();
    Ok(Json(serde_json::json!({ "places": places })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_800 + minutes * 60, 0).expect("valid time")
    }

    #[test]
    fn hourly_buckets_sum_four_quarters_and_fill_gaps_with_zero() {
        // 1_741_600_800 is 2025-03-10T10:00:00Z, on the hour.
        let quarters: Vec<(DateTime<Utc>, f64)> =
            (0..8).map(|q| (t(q * 15), 1.25 * (q + 1) as f64)).collect();
        let buckets = fill_buckets(t(0), t(180), 3600, &[(t(60), 42)], &quarters);
        let got: Vec<(i64, Option<f64>)> = buckets.iter().map(|b| (b.count, b.expected)).collect();
        assert_eq!(got, [(0, Some(12.5)), (42, Some(32.5)), (0, None)]);
        assert_eq!(buckets[2].start, t(120));
    }

    #[test]
    fn five_minute_buckets_get_a_third_of_their_quarter() {
        let buckets = fill_buckets(t(0), t(20), 300, &[], &[(t(0), 9.0)]);
        let got: Vec<Option<f64>> = buckets.iter().map(|b| b.expected).collect();
        assert_eq!(got, [Some(3.0), Some(3.0), Some(3.0), None]);
    }
}

/// A region key: (country, city or "" for the country itself).
type RegionKey = (String, String);

/// The windows `regions` accepts, in seconds.
const WINDOWS: [(&str, i64); 3] = [("15m", 900), ("1h", 3600), ("24h", 86_400)];

/// A region is `elevated` at this ratio to its expectation (and `ELEVATED_MIN_COUNT` reports)
/// without an incident: the detector's default open floors.
const ELEVATED_RATIO: f64 = 1.5;
const ELEVATED_MIN_COUNT: i64 = 10;

/// One region's current standing.
#[derive(Serialize, Debug)]
pub struct Region {
    pub country: String,
    /// Set at city level.
    pub city: Option<String>,
    /// "Pakistan", or the city's name.
    pub name: String,
    pub count: i64,
    /// The detector's expectation for the window; null where it has none.
    pub expected: Option<f64>,
    /// count / expected, when there is an expectation.
    pub ratio: Option<f64>,
    /// `incident` (an open incident of this region), `elevated` or `normal`.
    pub status: &'static str,
    pub incident_id: Option<uuid::Uuid>,
}

/// The expectation of `[from, to)` from quarter-hour expectations, each weighted by how much
/// of its quarter falls in the range.
fn prorated(
    quarters: impl Iterator<Item = (DateTime<Utc>, f64)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> f64 {
    quarters
        .map(|(quarter, expected)| {
            let start = quarter.max(from);
            let end = (quarter + TimeDelta::seconds(QUARTER)).min(to);
            let overlap = (end - start).num_seconds().max(0) as f64 / QUARTER as f64;
            expected * overlap
        })
        .sum()
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// `GET /api/v1/regions?service=x&level=country|city&country=PK&window=15m|1h|24h&limit=`
pub async fn list_regions(
    State(state): State<AppState>,
    params: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = parameters(
        params,
        &["service", "level", "country", "window", "limit", "cursor"],
    )?;
    let mut errors = Vec::new();
    let service = service_parameter(&params, &state.catalog, &mut errors);
    let cities = match params.get("level").map_or("country", String::as_str) {
        "country" => false,
        "city" => true,
        _ => {
            errors.push(FieldError::new("level", "level must be country or city"));
            false
        }
    };
    let country = country_parameter(&params, &mut errors);
    let (window, window_seconds) = choice_parameter(&params, "window", "1h", &WINDOWS, &mut errors);
    let limit = limit_parameter(&params, 100, 1000, &mut errors);
    // The ranking is computed whole per request; a cursor is the position of the next region.
    let offset = match params
        .get("cursor")
        .map(|c| c.strip_prefix("r").map(str::parse::<usize>))
    {
        None => 0,
        Some(Some(Ok(offset))) => offset,
        Some(_) => {
            errors.push(FieldError::new(
                "cursor",
                "cursor must be a next_cursor value from a previous page",
            ));
            0
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::InvalidParameters(errors));
    }
    let service = service.unwrap_or_default();
    let country_text = country.map(|c| c.as_str().to_owned());
    let to = crate::clock::now();
    let from = to - TimeDelta::seconds(window_seconds);
    let store = &state.store;
    let counts = store
        .region_counts(&service, country_text.as_deref(), cities, from, to)
        .await
        .map_err(ApiError::from_store)?;
    let quarters = store
        .region_expectations(
            &service,
            country_text.as_deref(),
            cities,
            floor_to(from, QUARTER),
            to,
        )
        .await
        .map_err(ApiError::from_store)?;
    let open = store
        .incidents(&IncidentQuery {
            service: Some(service.clone()),
            country: country_text.clone(),
            status: Some(Status::Open),
            limit: 10_000,
            ..IncidentQuery::default()
        })
        .await
        .map_err(ApiError::from_store)?;
    let scope = if cities {
        crate::incidents::Scope::City
    } else {
        crate::incidents::Scope::Country
    };
    let incident_of: HashMap<(String, String), uuid::Uuid> = open
        .iter()
        .filter(|i| i.scope == scope)
        .map(|i| {
            let key = (
                i.country.clone().unwrap_or_default(),
                i.city.clone().unwrap_or_default(),
            );
            (key, i.id)
        })
        .collect();
    let mut expected_of: HashMap<RegionKey, Vec<(DateTime<Utc>, f64)>> = HashMap::new();
    for (country, city, quarter, expected) in quarters {
        expected_of
            .entry((country, city))
            .or_default()
            .push((quarter, expected));
    }
    let mut regions: BTreeMap<(String, String), i64> = counts
        .into_iter()
        .map(|(country, city, count)| ((country, city), count))
        .collect();
    for key in incident_of.keys() {
        regions.entry(key.clone()).or_insert(0);
    }
    let mut listed: Vec<Region> = regions
        .into_iter()
        .map(|((country, city), count)| {
            let expected = expected_of
                .get(&(country.clone(), city.clone()))
                .map(|q| round2(prorated(q.iter().copied(), from, to)));
            let ratio = expected
                .filter(|e| *e > 0.0)
                .map(|e| round2(count as f64 / e));
            let incident_id = incident_of.get(&(country.clone(), city.clone())).copied();
            let status = if incident_id.is_some() {
                "incident"
            } else if count >= ELEVATED_MIN_COUNT && ratio.is_some_and(|r| r >= ELEVATED_RATIO) {
                "elevated"
            } else {
                "normal"
            };
            let name = if city.is_empty() {
                CountryCode::parse(&country)
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|_| country.clone())
            } else {
                city.clone()
            };
            Region {
                city: (!city.is_empty()).then_some(city),
                country,
                name,
                count,
                expected,
                ratio,
                status,
                incident_id,
            }
        })
        .collect();
    listed.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.country.cmp(&b.country))
            .then_with(|| a.city.cmp(&b.city))
    });
    let total = listed.len();
    let listed: Vec<Region> = listed.into_iter().skip(offset).take(limit).collect();
    let next_cursor = (offset + limit < total).then(|| format!("r{}", offset + limit));
    Ok(Json(serde_json::json!({
        "service": service,
        "level": if cities { "city" } else { "country" },
        "country": country_text,
        "window": window,
        "from": from,
        "to": to,
        "regions": listed,
        "next_cursor": next_cursor,
    })))
}
