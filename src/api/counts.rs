//! Read endpoints for dashboards: `GET /api/v1/counts` (a series in buckets, with the detector's
//! expectation), `GET /api/v1/services` (the catalog with status) and `GET /api/v1/places`
//! (gazetteer suggestions for a form's city field).

use axum::extract::State;
use axum::Json;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::contract::{Country, CsvFormat, ReadAnswers, Slug};
use super::docs::{choice_schema, enum_schema};
use super::extract::ApiQuery;
use super::params::{
    choice_parameter, country_parameter, limit_parameter, service_parameter, time_parameter,
};
use super::{ApiError, AppState};
use crate::domain::geo::{gazetteer, MAX_CITY_CHARS};
use crate::domain::report::Catalog;
use crate::domain::report::FieldError;
use crate::domain::series::SeriesKey;
use crate::read::counts::{CountsQuery, Interval, INTERVALS};
use crate::read::regions::{Level, RegionsQuery};
use crate::read::Reads;

/// The `interval` parameter's schema: the names of [`INTERVALS`].
pub(super) struct IntervalChoice;

impl PartialSchema for IntervalChoice {
    fn schema() -> RefOr<Schema> {
        choice_schema(INTERVALS.iter().map(|(name, _)| *name), "15m")
    }
}

/// One bucket of counts.
#[derive(Serialize, Debug, PartialEq, ToSchema)]
pub struct Bucket {
    /// The bucket's start, aligned to UTC.
    #[serde(serialize_with = "whole_second_time")]
    pub start: DateTime<Utc>,
    /// Counted reports in the bucket.
    pub count: i64,
    /// The detector's expected count for the bucket; null where it has no expectation yet.
    pub expected: Option<f64>,
}

/// Serializes a time as chrono does (RFC 3339, `Z`, no fraction when it has none), digits
/// written directly: chrono's formatter through serde_json's escaping writer was the largest
/// cost of building an answer of hundreds of buckets.
fn whole_second_time<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    // Each field of a `DateTime` converts it to its local time again: once here.
    let utc = time.naive_utc();
    let year = utc.year();
    if utc.nanosecond() != 0 || !(0..=9999).contains(&year) {
        return time.serialize(serializer);
    }
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, digits: usize, value: u32| {
        let mut value = value;
        for i in (at..at + digits).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, utc.month());
    put(8, 2, utc.day());
    put(11, 2, utc.hour());
    put(14, 2, utc.minute());
    put(17, 2, utc.second());
    // Only ASCII digits and separators went in.
    serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
}

/// A counts series.
#[derive(Serialize, ToSchema)]
pub struct Counts {
    pub service: String,
    /// Null for the worldwide series.
    pub country: Option<String>,
    /// The city's canonical name; null unless asked for.
    pub city: Option<String>,
    /// The bucket width: `1m`, `5m`, `15m`, `1h` or `1d`.
    pub interval: String,
    /// The first bucket's start.
    pub from: DateTime<Utc>,
    /// The end of the last bucket (exclusive).
    pub to: DateTime<Utc>,
    /// Every bucket of the range, oldest first; empty ones count 0.
    pub buckets: Vec<Bucket>,
}

/// A city name as the gazetteer reads it: not blank, at most its longest.
pub(super) struct City;

impl PartialSchema for City {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_CITY_CHARS))
            .pattern(Some(r"\S"))
            .into()
    }
}

/// The parameters of `GET /api/v1/counts`.
#[derive(Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountsParams {
    /// A service slug from the catalog.
    #[param(value_type = Slug, inline, example = "x")]
    pub service: Option<String>,
    /// ISO 3166-1 alpha-2, any case; leave out for worldwide.
    #[param(value_type = Option<Country>, inline, example = "PK")]
    pub country: Option<String>,
    /// A city of that country, any spelling the gazetteer knows; needs `country`.
    #[param(value_type = Option<City>, inline, example = "Lahore")]
    pub city: Option<String>,
    /// The bucket width.
    #[param(value_type = Option<IntervalChoice>, inline)]
    pub interval: Option<String>,
    /// RFC 3339; floored to the interval. Default: 24 hours before `to`.
    #[param(value_type = Option<DateTime<Utc>>, example = "2025-03-10T00:00:00Z")]
    pub from: Option<String>,
    /// RFC 3339, exclusive. Default: the end of the current bucket.
    #[param(value_type = Option<DateTime<Utc>>, example = "2025-03-11T00:00:00Z")]
    pub to: Option<String>,
}

/// `GET /api/v1/counts`
#[utoipa::path(
    get,
    path = "/api/v1/counts",
    summary = "Counts of a service, country or city, with the expectation",
    tag = "reads",
    description = "Counted reports of a service worldwide, in a country or in a city, in dense \
        buckets aligned to UTC, with the detector's expectation for each bucket. Default range: the \
        last 24 hours. A range is capped at 10,080 buckets (7 days of `1m`, 35 days of `5m`, …): \
        a longer one is refused with 400 naming `from`, a limit no schema can state. So is a \
        `1m` or `5m` range starting before the minute counts retention keeps \
        (`retention.minute_rollups_days`); `15m` and wider read the coarse tiers, kept longer. \
        The CSV has one row per bucket.",
    params(CountsParams, CsvFormat),
    responses(
        (status = 200, description = "The series.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (Counts = "application/json", example = json!({"service": "x", "country": "PK", "city": null,
                "interval": "15m", "from": "2025-03-10T00:00:00Z", "to": "2025-03-10T00:30:00Z",
                "buckets": [{"start": "2025-03-10T00:00:00Z", "count": 3, "expected": 2.61},
                            {"start": "2025-03-10T00:15:00Z", "count": 0, "expected": null}]})),
            (String = "text/csv", example = "start,count,expected\n2025-03-10T00:00:00Z,3,2.61\n2025-03-10T00:15:00Z,0,\n"),
        )),
        ReadAnswers,
    )
)]
pub async fn get_counts(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CountsParams>,
) -> Result<Json<Counts>, ApiError> {
    Ok(Json(
        counts_answer(&state.reads, &state.catalog.current(), &params).await?,
    ))
}

/// The counts answer for [`CountsParams`].
pub async fn counts_answer(
    reads: &Reads,
    catalog: &Catalog,
    params: &CountsParams,
) -> Result<Counts, ApiError> {
    let mut errors = Vec::new();
    let service = service_parameter(params.service.as_deref(), catalog, &mut errors);
    let country = country_parameter(params.country.as_deref(), &mut errors);
    let city = match (params.city.as_deref(), country) {
        (None, _) => None,
        (Some(_), None) => {
            if params.country.is_none() {
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
    let (interval, _) = choice_parameter(
        params.interval.as_deref(),
        "interval",
        "15m",
        &INTERVALS,
        &mut errors,
    );
    let to = time_parameter(params.to.as_deref(), "to", &mut errors);
    let from = time_parameter(params.from.as_deref(), "from", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::InvalidParameters(errors));
    }
    let service = service.unwrap_or_default();
    let country = country.map(|c| c.as_str().to_owned());
    let query = CountsQuery {
        series: SeriesKey {
            service: service.clone(),
            country: country.clone(),
            city: city.clone(),
        },
        // Checked above: `interval` names one of INTERVALS.
        interval: Interval::parse(&interval).unwrap_or_default(),
        from,
        to,
    };
    let read = reads
        .counts(&query, crate::runtime::clock::now())
        .await
        .map_err(ApiError::from_read)?;
    Ok(Counts {
        service,
        country,
        city,
        interval,
        from: read.range.from,
        to: read.range.to,
        buckets: read
            .buckets
            .into_iter()
            .map(|b| Bucket {
                start: b.start,
                count: b.count,
                expected: b.expected,
            })
            .collect(),
    })
}

/// One catalog entry with its current state.
#[derive(Serialize, ToSchema)]
pub struct ServiceStatus {
    pub slug: String,
    pub name: String,
    /// `incident` while any incident of the service is open, else `normal`.
    #[schema(schema_with = service_status)]
    pub status: &'static str,
    pub open_incidents: usize,
    /// Counted reports in the last 24 hours.
    pub reports_24h: i64,
}

fn service_status() -> RefOr<Schema> {
    enum_schema(["incident", "normal"])
        .description(Some(
            "`incident` while any incident of the service is open.",
        ))
        .into()
}

/// The catalog.
#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
}

/// No parameters: any given is refused.
#[derive(Deserialize, IntoParams)]
pub struct NoParams {}

/// `GET /api/v1/services`
#[utoipa::path(
    get,
    path = "/api/v1/services",
    summary = "The service catalog with each service's status",
    tag = "reads",
    description = "The service catalog with each service's status. The CSV has one row per service.",
    params(NoParams, CsvFormat),
    responses(
        (status = 200, description = "The catalog, in catalog order.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (ServiceList = "application/json", example = json!({"services": [
                {"slug": "x", "name": "X (Twitter)", "status": "incident", "open_incidents": 2, "reports_24h": 1520},
                {"slug": "youtube", "name": "YouTube", "status": "normal", "open_incidents": 0, "reports_24h": 41}]})),
            (String = "text/csv", example = "slug,name,status,open_incidents,reports_24h\nx,X (Twitter),incident,2,1520\n"),
        )),
        ReadAnswers,
    )
)]
pub async fn list_services(
    State(state): State<AppState>,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<ServiceList>, ApiError> {
    Ok(Json(
        services_answer(&state.reads, &state.catalog.current()).await?,
    ))
}

/// The catalog with each service's status now (the API's and the status pages').
pub async fn services_answer(reads: &Reads, catalog: &Catalog) -> Result<ServiceList, ApiError> {
    let read = reads
        .services(catalog, crate::runtime::clock::now())
        .await
        .map_err(ApiError::from_read)?;
    let services = read
        .into_iter()
        .map(|s| ServiceStatus {
            slug: s.slug,
            name: s.name,
            status: s.state.as_str(),
            open_incidents: s.open_incidents,
            reports_24h: s.reports_24h,
        })
        .collect();
    Ok(ServiceList { services })
}

/// The windows `regions` accepts, in seconds.
const WINDOWS: [(&str, i64); 3] = [("15m", 900), ("1h", 3600), ("24h", 86_400)];

/// The `window` parameter's schema: the names of [`WINDOWS`].
pub(super) struct WindowChoice;

impl PartialSchema for WindowChoice {
    fn schema() -> RefOr<Schema> {
        choice_schema(WINDOWS.iter().map(|(name, _)| *name), "1h")
    }
}

/// The levels `regions` ranks at: countries, or cities.
const LEVELS: [&str; 2] = ["country", "city"];

/// The `level` parameter's schema: [`LEVELS`].
pub(super) struct LevelChoice;

impl PartialSchema for LevelChoice {
    fn schema() -> RefOr<Schema> {
        choice_schema(LEVELS, LEVELS[0])
    }
}

/// One region's current standing.
#[derive(Serialize, Debug, ToSchema)]
pub struct Region {
    /// ISO 3166-1 alpha-2.
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
    /// `incident` (an open incident of this region), `elevated` (1.5 times the expectation
    /// and at least 10 reports) or `normal`.
    #[schema(schema_with = region_status)]
    pub status: &'static str,
    /// The region's open incident, if any.
    pub incident_id: Option<uuid::Uuid>,
}

fn region_status() -> RefOr<Schema> {
    enum_schema(["incident", "elevated", "normal"])
        .description(Some(
            "`incident` while the region has an open incident; `elevated` at 1.5 times the \
             expectation and at least 10 reports.",
        ))
        .into()
}

/// One page of the region ranking.
#[derive(Serialize, ToSchema)]
pub struct RegionPage {
    pub service: String,
    /// `country` or `city`.
    pub level: &'static str,
    /// The country asked for, if any.
    pub country: Option<String>,
    /// `15m`, `1h` or `24h`.
    pub window: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Most reports first.
    pub regions: Vec<Region>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A regions cursor: `r` and the position of the page's first region.
struct RegionsCursor;

impl PartialSchema for RegionsCursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^r[0-9]{1,18}$"))
            .into()
    }
}

/// The parameters of `GET /api/v1/regions`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegionsParams {
    /// A service slug from the catalog.
    #[param(value_type = Slug, inline, example = "x")]
    service: Option<String>,
    /// Rank countries, or cities.
    #[param(value_type = Option<LevelChoice>, inline)]
    level: Option<String>,
    /// Only this country (ISO 3166-1 alpha-2, any case).
    #[param(value_type = Option<Country>, inline, example = "PK")]
    country: Option<String>,
    /// How far back to count.
    #[param(value_type = Option<WindowChoice>, inline)]
    window: Option<String>,
    /// Most regions per page; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<RegionsCursor>, inline, example = "r100")]
    cursor: Option<String>,
}

/// `GET /api/v1/regions?service=x&level=country|city&country=PK&window=15m|1h|24h&limit=`
#[utoipa::path(
    get,
    path = "/api/v1/regions",
    summary = "Regions ranked by reports in the last window",
    tag = "reads",
    description = "The countries or cities with reports of a service in the last window, most \
        first, each with its expectation and status. The CSV has one row per region.",
    params(RegionsParams, CsvFormat),
    responses(
        (status = 200, description = "One page of the ranking.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("X-Data-Age" = String, description = "Only on an answer read from the read replica (`database.read_url`): seconds its data lagged the primary when computed, e.g. `0.0` (it had replayed everything) or `2.4`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (RegionPage = "application/json", example = json!({"service": "x", "level": "city",
                "country": "PK", "window": "1h", "from": "2025-03-10T17:06:00Z", "to": "2025-03-10T18:06:00Z",
                "regions": [{"country": "PK", "city": "Lahore", "name": "Lahore", "count": 212,
                    "expected": 8.4, "ratio": 25.24, "status": "incident",
                    "incident_id": "5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b"}],
                "next_cursor": null})),
            (String = "text/csv", example = "country,city,name,count,expected,ratio,status,incident_id\nPK,Lahore,Lahore,212,8.4,25.24,incident,5f0c2d6e-8b1a-8e4f-9a57-3c2d1e0f4a6b\n"),
        )),
        ReadAnswers,
    )
)]
pub async fn list_regions(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RegionsParams>,
) -> Result<Json<RegionPage>, ApiError> {
    Ok(Json(
        regions_answer(&state.reads, &state.catalog.current(), &params).await?,
    ))
}

/// One page of the region ranking for [`RegionsParams`].
pub async fn regions_answer(
    reads: &Reads,
    catalog: &Catalog,
    params: &RegionsParams,
) -> Result<RegionPage, ApiError> {
    let mut errors = Vec::new();
    let service = service_parameter(params.service.as_deref(), catalog, &mut errors);
    let cities = match params.level.as_deref().unwrap_or(LEVELS[0]) {
        "country" => false,
        "city" => true,
        _ => {
            errors.push(FieldError::new("level", "level must be country or city"));
            false
        }
    };
    let country = country_parameter(params.country.as_deref(), &mut errors);
    let (window, window_seconds) = choice_parameter(
        params.window.as_deref(),
        "window",
        "1h",
        &WINDOWS,
        &mut errors,
    );
    let limit = limit_parameter(params.limit.as_deref(), 100, 1000, &mut errors);
    // The ranking is computed whole per request; a cursor is the position of the next region.
    let offset = match params
        .cursor
        .as_deref()
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
    let query = RegionsQuery {
        service: service.clone(),
        country: country_text.clone(),
        level: if cities { Level::City } else { Level::Country },
        window: TimeDelta::seconds(window_seconds),
    };
    let read = reads
        .regions(&query, crate::runtime::clock::now())
        .await
        .map_err(ApiError::from_read)?;
    let (from, to) = (read.range.from, read.range.to);
    let listed: Vec<Region> = read
        .regions
        .into_iter()
        .map(|r| Region {
            country: r.country,
            city: r.city,
            name: r.name,
            count: r.count,
            expected: r.expected,
            ratio: r.ratio,
            status: r.status.as_str(),
            incident_id: r.incident_id,
        })
        .collect();
    let total = listed.len();
    let listed: Vec<Region> = listed.into_iter().skip(offset).take(limit).collect();
    let next_cursor = (offset + limit < total).then(|| format!("r{}", offset + limit));
    Ok(RegionPage {
        service,
        level: if cities { LEVELS[1] } else { LEVELS[0] },
        country: country_text,
        window,
        from,
        to,
        regions: listed,
        next_cursor,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_times_serialize_as_chrono_writes_them() {
        for text in [
            "2025-03-10T00:15:00Z",
            "1999-12-31T23:59:59Z",
            "0042-01-02T03:04:05Z",
            "2025-03-10T00:15:00.250Z",
        ] {
            let time: DateTime<Utc> = text.parse().unwrap();
            let bucket = Bucket {
                start: time,
                count: 1,
                expected: None,
            };
            let ours = serde_json::to_value(&bucket).unwrap();
            assert_eq!(ours["start"], serde_json::to_value(time).unwrap());
            assert_eq!(ours["start"], text);
        }
    }
}
