//! `GET /api/v1/places`: gazetteer suggestions for a form's city field.

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::contract::{Country, CsvFormat, ReadAnswers};
use super::counts::City;
use super::extract::ApiQuery;
use super::params::{country_parameter, limit_parameter};
use super::ApiError;
use crate::domain::geo::{gazetteer, MAX_CITY_CHARS};
use crate::domain::report::FieldError;

/// One place suggestion.
#[derive(Serialize, ToSchema)]
pub struct Place {
    /// The canonical name, as reports and counts use it.
    pub name: String,
    pub ascii_name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub latitude: f64,
    pub longitude: f64,
    pub population: u32,
}

/// Place suggestions.
#[derive(Serialize, ToSchema)]
pub struct PlaceList {
    /// Most populous first.
    pub places: Vec<Place>,
}

/// The parameters of `GET /api/v1/places`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlacesParams {
    /// ISO 3166-1 alpha-2, any case.
    #[param(value_type = Country, inline, example = "PK")]
    country: Option<String>,
    /// The start of a city name, any case (not blank; at most as long as the longest name read).
    #[param(value_type = City, inline, example = "lah")]
    q: Option<String>,
    /// Most places to answer; default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 50)]
    limit: Option<String>,
}

/// `GET /api/v1/places?country=PK&q=lah[&limit=10]`
#[utoipa::path(
    get,
    path = "/api/v1/places",
    summary = "City suggestions for a form",
    tag = "reads",
    description = "Gazetteer suggestions for a form's city field: cities of the country whose name \
        (or a known alternate name) starts with `q`. The CSV has one row per place.",
    params(PlacesParams, CsvFormat),
    responses(
        (status = 200, description = "The suggestions.", headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            ), content(
            (PlaceList = "application/json", example = json!({"places": [{"name": "Lahore",
                "ascii_name": "Lahore", "country": "PK", "latitude": 31.558, "longitude": 74.35071,
                "population": 6310888}]})),
            (String = "text/csv", example = "name,ascii_name,country,latitude,longitude,population\nLahore,Lahore,PK,31.558,74.35071,6310888\n"),
        )),
        ReadAnswers,
    )
)]
pub async fn list_places(
    ApiQuery(params): ApiQuery<PlacesParams>,
) -> Result<Json<PlaceList>, ApiError> {
    let mut errors = Vec::new();
    let country = country_parameter(params.country.as_deref(), &mut errors);
    if params.country.is_none() {
        errors.push(FieldError::new("country", "country is required"));
    }
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        errors.push(FieldError::new(
            "q",
            "q (the start of a city name) is required",
        ));
    } else if q.chars().count() > MAX_CITY_CHARS {
        errors.push(FieldError::new(
            "q",
            format!("q must be at most {MAX_CITY_CHARS} characters"),
        ));
    }
    let limit = limit_parameter(params.limit.as_deref(), 10, 50, &mut errors);
    let Some(country) = country.filter(|_| errors.is_empty()) else {
        return Err(ApiError::InvalidParameters(errors));
    };
    let places: Vec<Place> = gazetteer()
        .search_prefix(country, q, limit)
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
    Ok(Json(PlaceList { places }))
}
