//! The report domain: services, places, problem kinds, and the rules that turn raw fields into a valid report.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use crate::domain::geo::{gazetteer, City, CityError, CountryCode};

/// A service people can report about, as named by its catalog slug (e.g. `x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceSlug(Arc<str>);

impl ServiceSlug {
    /// The slug as text, e.g. `"x"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ServiceSlug {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One catalog entry: a slug and the name people know the service by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub slug: ServiceSlug,
    pub name: String,
}

/// The services the deployment accepts reports for.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    services: Vec<Service>,
    by_slug: HashMap<String, usize>,
}

impl Catalog {
    /// Builds a catalog from `(slug, display name)` pairs; slugs are matched case-insensitively.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Catalog {
        let mut catalog = Catalog::default();
        for (slug, name) in entries {
            let slug = slug.trim().to_ascii_lowercase();
            if catalog.by_slug.contains_key(&slug) {
                continue;
            }
            catalog.by_slug.insert(slug.clone(), catalog.services.len());
            catalog.services.push(Service {
                slug: ServiceSlug(Arc::from(slug.as_str())),
                name: name.to_string(),
            });
        }
        catalog
    }

    /// Finds a service by slug (case-insensitive, surrounding whitespace ignored).
    pub fn parse(&self, input: &str) -> Result<&Service, FieldError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("service", "service must not be empty"));
        }
        self.by_slug
            .get(&trimmed.to_ascii_lowercase())
            .map(|&i| &self.services[i])
            .ok_or_else(|| {
                FieldError::new(
                    "service",
                    format!(
                        "\"{trimmed}\" is not a known service; known services: {}",
                        self.slugs()
                    ),
                )
            })
    }

    /// Every service, in catalog order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    fn slugs(&self) -> String {
        let slugs: Vec<&str> = self.services.iter().map(|s| s.slug.as_str()).collect();
        slugs.join(", ")
    }
}

/// The catalog as it stands now: admins change it at run time, and every reader takes the
/// snapshot current when it starts, so one request sees one catalog.
#[derive(Debug, Default)]
pub struct LiveCatalog(std::sync::RwLock<Arc<Catalog>>);

impl LiveCatalog {
    pub fn new(catalog: Catalog) -> LiveCatalog {
        LiveCatalog(std::sync::RwLock::new(Arc::new(catalog)))
    }

    /// The catalog now.
    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new catalog in place for every later reader.
    pub fn replace(&self, catalog: Catalog) {
        let catalog = Arc::new(catalog);
        match self.0.write() {
            Ok(mut guard) => *guard = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
    }
}

/// What is broken, in the reporter's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    App,
    Website,
    Login,
    ServerConnection,
    Notifications,
    Other,
}

impl Problem {
    /// Every kind, in the order forms show them.
    pub const ALL: [Problem; 6] = [
        Problem::App,
        Problem::Website,
        Problem::Login,
        Problem::ServerConnection,
        Problem::Notifications,
        Problem::Other,
    ];

    /// The wire name, e.g. `"server_connection"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::App => "app",
            Problem::Website => "website",
            Problem::Login => "login",
            Problem::ServerConnection => "server_connection",
            Problem::Notifications => "notifications",
            Problem::Other => "other",
        }
    }

    /// Parses a wire name (case-insensitive).
    pub fn parse(input: &str) -> Result<Problem, FieldError> {
        let wanted = input.trim();
        Problem::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                FieldError::new(
                    "problem",
                    format!(
                        "\"{wanted}\" is not a problem kind; use one of app, website, login, server_connection, notifications, other"
                    ),
                )
            })
    }
}

/// One field that failed validation, with a message for people and, for cities, suggestions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
}

impl FieldError {
    /// An error on `field` without suggestions.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
            suggestions: Vec::new(),
        }
    }

    /// The same error with its field name under `prefix` (e.g. `reports[3].country`).
    pub fn within(mut self, prefix: &str) -> FieldError {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// The raw text fields of one report, as they arrive from the API, the form or an import.
#[derive(Clone, Debug, Default)]
pub struct ReportFields<'a> {
    pub service: Option<&'a str>,
    pub country: Option<&'a str>,
    pub city: Option<&'a str>,
    pub problem: Option<&'a str>,
    pub id: Option<&'a str>,
}

/// A report whose fields are all valid and canonical; not yet stamped with time or reporter.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The client's id, when it sent one (a retry with it is answered with the stored outcome).
    pub id: Option<Uuid>,
    pub service: ServiceSlug,
    pub country: CountryCode,
    /// The gazetteer city, or `None` for a country-level report.
    pub city: Option<&'static City>,
    pub problem: Problem,
}

impl Report {
    /// Validates every field, returning all the errors at once so a form can show each beside its field.
    pub fn parse(fields: &ReportFields<'_>, catalog: &Catalog) -> Result<Report, Vec<FieldError>> {
        let mut errors = Vec::new();
        let service = match fields.service {
            Some(s) => catalog.parse(s).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::new("service", "service is required"));
                None
            }
        };
        let country = match fields.country {
            Some(c) => CountryCode::parse(c)
                .map_err(|e| errors.push(FieldError::new("country", e.to_string())))
                .ok(),
            None => {
                errors.push(FieldError::new("country", "country is required"));
                None
            }
        };
        let city = match (
            fields.city.map(str::trim).filter(|c| !c.is_empty()),
            country,
        ) {
            (Some(city), Some(country)) => match gazetteer().lookup(country, city) {
                Ok(found) => Some(found),
                Err(e) => {
                    errors.push(city_error(e));
                    None
                }
            },
            _ => None,
        };
        let problem = match fields.problem {
            Some(p) => Problem::parse(p).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::new("problem", "problem is required"));
                None
            }
        };
        let id = match fields.id.map(str::trim) {
            Some(text) => match Uuid::try_parse(text) {
                Ok(id) if !id.is_nil() => Some(id),
                _ => {
                    errors.push(FieldError::new("id", format!("\"{text}\" is not a UUID")));
                    None
                }
            },
            None => None,
        };
        match (service, country, problem) {
            (Some(service), Some(country), Some(problem)) if errors.is_empty() => Ok(Report {
                id,
                service: service.slug.clone(),
                country,
                city,
                problem,
            }),
            _ => Err(errors),
        }
    }

    /// The canonical city name, if any.
    pub fn city_name(&self) -> Option<&'static str> {
        self.city.map(|c| c.name)
    }
}

fn city_error(error: CityError) -> FieldError {
    let message = error.to_string();
    match error {
        CityError::Unknown { suggestions, .. } => FieldError {
            field: "city".into(),
            message,
            suggestions,
        },
        CityError::Empty | CityError::TooLong => FieldError::new("city", message),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new([("x", "X"), ("youtube", "YouTube")])
    }

    fn fields<'a>(
        service: &'a str,
        country: &'a str,
        city: Option<&'a str>,
        problem: &'a str,
    ) -> ReportFields<'a> {
        ReportFields {
            service: Some(service),
            country: Some(country),
            city,
            problem: Some(problem),
            id: None,
        }
    }

    #[test]
    fn a_valid_report_is_canonicalised() {
        let report =
            Report::parse(&fields(" X ", "pk", Some("LAHORE"), "App"), &catalog()).unwrap();
        assert_eq!(report.service.as_str(), "x");
        assert_eq!(report.country.as_str(), "PK");
        assert_eq!(report.city_name(), Some("Lahore"));
        assert_eq!(report.problem, Problem::App);
        assert_eq!(report.id, None);
    }

    #[test]
    fn sao_paulo_is_stored_under_its_canonical_name() {
        let report =
            Report::parse(&fields("x", "BR", Some("Sao Paulo"), "login"), &catalog()).unwrap();
        assert_eq!(report.city_name(), Some("São Paulo"));
    }

    #[test]
    fn a_blank_city_is_a_country_level_report() {
        let report = Report::parse(&fields("x", "US", Some("  "), "website"), &catalog()).unwrap();
        assert_eq!(report.city, None);
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let input = ReportFields {
            service: Some("myspace"),
            country: Some("XX"),
            city: Some("Lahore"),
            problem: Some("slow"),
            id: Some("not-a-uuid"),
        };
        let errors = Report::parse(&input, &catalog()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["service", "country", "problem", "id"]);
        assert_eq!(
            errors[0].message,
            "\"myspace\" is not a known service; known services: x, youtube"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let errors = Report::parse(&ReportFields::default(), &catalog()).unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "service is required",
                "country is required",
                "problem is required"
            ]
        );
    }

    #[test]
    fn an_unknown_city_carries_suggestions_from_that_country() {
        let errors =
            Report::parse(&fields("x", "PK", Some("Rawalpindy"), "app"), &catalog()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "city");
        assert_eq!(
            errors[0].suggestions.first().map(String::as_str),
            Some("Rawalpindi")
        );
    }

    #[test]
    fn problem_kinds_round_trip_through_their_wire_names() {
        for problem in Problem::ALL {
            assert_eq!(Problem::parse(problem.as_str()).unwrap(), problem);
        }
        assert_eq!(
            Problem::parse("SERVER_CONNECTION").unwrap(),
            Problem::ServerConnection
        );
    }

    #[test]
    fn a_nil_uuid_is_not_an_id() {
        let mut input = fields("x", "PK", None, "app");
        input.id = Some("00000000-0000-0000-0000-000000000000");
        let errors = Report::parse(&input, &catalog()).unwrap_err();
        assert_eq!(errors[0].field, "id");
    }
}
