//! Query parameters as text, checked one by one: each bad one becomes a field error, and an
//! answer lists them all (the parameter structs in each handler's file call these).

use chrono::{DateTime, Utc};

use crate::domain::geo::CountryCode;
use crate::domain::report::{Catalog, FieldError};

/// An optional RFC 3339 time parameter named `name`.
pub(super) fn time_parameter(
    value: Option<&str>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let value = value?;
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
    value: Option<&str>,
    catalog: &Catalog,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match value.map(|s| catalog.parse(s)) {
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
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<CountryCode> {
    match value.map(CountryCode::parse) {
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
    value: Option<&str>,
    name: &str,
    default: &str,
    choices: &[(&str, i64)],
    errors: &mut Vec<FieldError>,
) -> (String, i64) {
    let value = value.unwrap_or(default);
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
    value: Option<&str>,
    default: usize,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> usize {
    match value.map(|l| l.parse::<usize>()) {
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
