//! Query parameters as text, checked one by one: each bad one becomes a field error, and an
//! answer lists them all.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use chrono::{DateTime, Utc};

use super::ApiError;
use crate::domain::geo::CountryCode;
use crate::domain::report::{Catalog, FieldError};

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

pub(super) fn time_parameter(
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
pub(super) fn choice_parameter(
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
pub(super) fn limit_parameter(
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
