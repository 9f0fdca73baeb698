//! The field rules scenario and family files share: each check names the offending field in its error.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use outagewatch::domain::geo::{gazetteer, CityError, CountryCode};
use outagewatch::domain::report::Problem;

use crate::model::ScenarioError;

/// Slack for shares that should sum to at most 1 but were written as decimals.
const SHARE_EPSILON: f64 = 1e-9;

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn whole_minute(field: &str, at: DateTime<Utc>) -> Result<(), ScenarioError> {
    if at.second() != 0 || at.nanosecond() != 0 {
        return Err(invalid(field, format!("{at} is not on a whole minute")));
    }
    Ok(())
}

pub(crate) fn non_negative(field: &str, value: f64) -> Result<(), ScenarioError> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(field, format!("{value} is not a number ≥ 0")));
    }
    Ok(())
}

pub(crate) fn service(field: &str, slug: &str) -> Result<String, ScenarioError> {
    let valid = !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(invalid(
            field,
            format!("\"{slug}\" is not a catalog slug (lower-case letters, digits, - and _)"),
        ));
    }
    Ok(slug.to_owned())
}

pub(crate) fn country(field: &str, code: &str) -> Result<CountryCode, ScenarioError> {
    CountryCode::parse(code).map_err(|e| invalid(field, e.to_string()))
}

pub(crate) fn reporter(
    field: &str,
    reporter: Option<&str>,
) -> Result<Option<String>, ScenarioError> {
    let Some(reporter) = reporter else {
        return Ok(None);
    };
    if reporter.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let generated = reporter.len() > 1
        && reporter.starts_with('r')
        && reporter[1..].bytes().all(|b| b.is_ascii_digit());
    if generated {
        return Err(invalid(
            field,
            format!("\"{reporter}\" could be one of the generated reporters r0, r1, …"),
        ));
    }
    Ok(Some(reporter.to_owned()))
}

pub(crate) fn city_shares(
    field: &str,
    country: CountryCode,
    shares: &BTreeMap<String, f64>,
) -> Result<Vec<(String, f64)>, ScenarioError> {
    let mut total = 0.0;
    for (name, share) in shares {
        let at = format!("{field}.\"{name}\"");
        non_negative(&at, *share)?;
        total += share;
        match gazetteer().lookup(country, name) {
            Ok(city) if city.name == name => {}
            Ok(city) => {
                return Err(invalid(
                    at,
                    format!("write the canonical name \"{}\"", city.name),
                ))
            }
            Err(CityError::Unknown { suggestions, .. }) if !suggestions.is_empty() => {
                return Err(invalid(
                    at,
                    format!(
                        "not a city of {country} in the gazetteer; did you mean {}?",
                        suggestions.join(", ")
                    ),
                ))
            }
            Err(e) => return Err(invalid(at, e.to_string())),
        }
    }
    if total > 1.0 + SHARE_EPSILON {
        return Err(invalid(
            field,
            format!("shares sum to {total}, more than 1"),
        ));
    }
    Ok(shares
        .iter()
        .map(|(name, share)| (name.clone(), *share))
        .collect())
}

pub(crate) fn problem_mix(
    field: &str,
    shares: &BTreeMap<String, f64>,
) -> Result<Vec<(Problem, f64)>, ScenarioError> {
    for name in shares.keys() {
        if !Problem::ALL.iter().any(|p| p.as_str() == name) {
            let known: Vec<&str> = Problem::ALL.iter().map(|p| p.as_str()).collect();
            return Err(invalid(
                format!("{field}.{name}"),
                format!("not a problem kind; known: {}", known.join(", ")),
            ));
        }
    }
    let mut total = 0.0;
    for (name, share) in shares {
        non_negative(&format!("{field}.{name}"), *share)?;
        total += share;
    }
    if total <= 0.0 {
        return Err(invalid(field, "needs at least one positive share"));
    }
    Ok(Problem::ALL
        .iter()
        .filter_map(|p| {
            let share = shares.get(p.as_str()).copied().unwrap_or(0.0);
            (share > 0.0).then_some((*p, share / total))
        })
        .collect())
}
