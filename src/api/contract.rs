//! The shapes the OpenAPI document states once and every operation shares: the schemas of the
//! common parameters (a service slug, a country, cursors), the answers every read may give, and
//! those every admin route may give.

use std::collections::BTreeMap;

use serde_json::json;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use crate::domain::geo::CountryCode;
use crate::domain::incidents::Incident;
use crate::http::Problem;

/// A service slug as the parser reads it: the catalog's letters, digits, `-` and `_`, in any
/// case (the catalog matches slugs case-insensitively).
pub(super) const SLUG_PATTERN: &str = "^[A-Za-z0-9_-]{1,40}$";
/// The longest slug the catalog holds (the admin API refuses longer ones).
pub(super) const SLUG_MAX_CHARS: usize = 40;

/// A string schema with a description.
fn text(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A `service` parameter: a slug shaped as the catalog's are. Whether it names a service in
/// the catalog is decided at run time (admins change the catalog), so no schema can say so.
pub(super) fn slug_schema() -> Schema {
    text("A service slug from the catalog (any case).")
        .pattern(Some(SLUG_PATTERN))
        .min_length(Some(1))
        .max_length(Some(SLUG_MAX_CHARS))
        .into()
}

/// A `country` parameter: one of the ISO 3166-1 alpha-2 codes the service knows (the parser
/// also takes them in lower case).
pub(super) fn country_schema() -> Schema {
    let codes: Vec<String> = CountryCode::all().map(|c| c.as_str().to_owned()).collect();
    text("ISO 3166-1 alpha-2 (any case).")
        .enum_values(Some(codes))
        .into()
}

/// A parameter's schema, for `#[param(value_type = …, inline)]`.
macro_rules! parameter_schema {
    ($($(#[$doc:meta])* $name:ident => $schema:expr;)*) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }
    )*};
}

parameter_schema! {
    /// A `service` parameter.
    Slug => slug_schema();
    /// A `country` parameter.
    Country => country_schema();
}

/// The `format` parameter the CSV layer (`super::export`) reads before the handler does.
pub(super) struct CsvFormat;

impl IntoParams for CsvFormat {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        vec![ParameterBuilder::new()
            .name("format")
            .parameter_in(ParameterIn::Query)
            .description(Some(
                "`csv` for CSV (as `Accept: text/csv` does); `json` wins over `Accept`.",
            ))
            .schema(Some(super::export::FormatChoice::schema()))
            .build()]
    }
}

/// A problem+json answer with one example.
pub(super) fn problem(description: &str, example: serde_json::Value) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .example(Some(example))
            .build(),
    )
}

/// The 503 every route that reads the store may answer, with its `Retry-After`.
pub(super) fn unavailable() -> ResponseBuilder {
    let retry_after = HeaderBuilder::new()
        .schema(u64::schema())
        .description(Some("Seconds to wait before retrying."))
        .build();
    problem(
        "The store is unavailable.",
        json!({"type": "/problems/unavailable",
            "title": "Service unavailable", "status": 503,
            "detail": "the store is unavailable; retry later"}),
    )
    .header("Retry-After", retry_after)
}

/// An `IntoResponses` table from status codes and answers.
pub(super) fn answers<const N: usize>(
    answers: [(&str, ResponseBuilder); N],
) -> BTreeMap<String, RefOr<Response>> {
    answers
        .into_iter()
        .map(|(status, answer)| (status.to_owned(), answer.build().into()))
        .collect()
}

/// What every read may answer besides its own 200: 304 for a matching `If-None-Match`, 400
/// naming each bad parameter, and 503 while the store is down.
pub(super) struct ReadAnswers;

impl IntoResponses for ReadAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers([
            (
                "304",
                ResponseBuilder::new()
                    .description("Not modified: the `ETag` sent in `If-None-Match` still holds."),
            ),
            (
                "400",
                problem(
                    "An unknown or invalid parameter, each named in `errors`.",
                    json!({"type": "/problems/invalid-parameter",
                        "title": "Invalid parameter", "status": 400,
                        "detail": "2 fields are invalid",
                        "errors": [{"field": "colour", "message": "unknown parameter; known: service, country"},
                                   {"field": "country", "message": "\"XX\" is not an ISO 3166-1 alpha-2 country code"}]}),
                ),
            ),
            ("503", unavailable()),
        ])
    }
}

/// What every admin route may answer besides its own answers (for the route descriptions).
pub(super) struct AdminProblems;

impl IntoResponses for AdminProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let challenge = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some("`Bearer`."))
            .build();
        answers([
            (
                "401",
                problem("No bearer token.", json!({"type": "/problems/unauthorized",
                    "title": "Admin token required", "status": 401,
                    "detail": "this route needs an admin bearer token (Authorization: Bearer ...)"}))
                .header("WWW-Authenticate", challenge),
            ),
            (
                "403",
                problem("The token is not an admin token.", json!({"type": "/problems/forbidden",
                    "title": "Forbidden", "status": 403, "detail": "the token is not an admin token"})),
            ),
            ("503", unavailable()),
        ])
    }
}

/// What the incident routes answer besides the problems above (for the route descriptions).
pub(super) struct IncidentAnswers;

impl IntoResponses for IncidentAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let incident = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Incident::name())))
            .example(Some(json!({"id": "5f0c6a53-8d1e-8a4b-9c3d-2e1f0a9b8c7d", "service": "x",
                "scope": "country", "country": "PK", "city": null, "status": "resolved",
                "started_at": "2025-03-10T09:58:00Z", "detected_at": "2025-03-10T10:00:00Z",
                "peak_at": "2025-03-10T18:06:00Z", "peak_count": 133.0, "expected_at_peak": 4.9,
                "start_count": 37.0, "excess_reports": 1800.0, "resolved_at": "2025-03-10T19:40:00Z",
                "top_cities": [], "problems": {"app": 1.0}, "parent_id": null,
                "summary": "Reports about X (Twitter) in Pakistan rose from 37 to 133 per 15 minutes.",
                "updated_at": "2025-03-10T19:40:00Z", "note": "Confirmed by the provider.",
                "resolved_by": "ops"})))
            .build();
        answers([
            (
                "200",
                ResponseBuilder::new()
                    .description("The incident as it now stands.")
                    .content("application/json", incident),
            ),
            (
                "400",
                problem(
                    "The id is not a UUID (or a body is not well-formed JSON).",
                    json!({"type": "/problems/invalid-parameter", "title": "Invalid parameter",
                        "status": 400, "detail": "id: \"abc\" is not a UUID",
                        "errors": [{"field": "id", "message": "\"abc\" is not a UUID"}]}),
                ),
            ),
            (
                "404",
                problem(
                    "No such incident.",
                    json!({"type": "/problems/not-found",
                    "title": "Not found", "status": 404, "detail": "not found"}),
                ),
            ),
        ])
    }
}

/// What an admin route with a JSON body may answer about the body (for the route descriptions).
pub(super) struct BodyProblems;

impl IntoResponses for BodyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers([
            (
                "408",
                problem(
                    "The body did not arrive in time.",
                    json!({"type": "/problems/request-timeout",
                    "title": "Request body too slow", "status": 408,
                    "detail": "the body did not arrive within 5000 ms"}),
                ),
            ),
            (
                "413",
                problem(
                    "The body is larger than the limit.",
                    json!({"type": "/problems/payload-too-large",
                    "title": "Body too large", "status": 413,
                    "detail": "the body is larger than 65536 bytes"}),
                ),
            ),
            (
                "415",
                problem(
                    "`Content-Type` is not `application/json`.",
                    json!({"type": "/problems/unsupported-media-type",
                        "title": "Unsupported content type", "status": 415,
                        "detail": "expected Content-Type: application/json"}),
                ),
            ),
        ])
    }
}
