//! The shapes the OpenAPI document states once and every operation shares: the schemas of the
//! common parameters (a service slug, a country, cursors) and the answers every read may give.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use crate::domain::geo::CountryCode;
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
fn problem(description: &str, example: serde_json::Value) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .example(Some(example))
            .build(),
    )
}

/// What every read may answer besides its own 200: 304 for a matching `If-None-Match`, 400
/// naming each bad parameter, and 503 while the store is down.
pub(super) struct ReadAnswers;

impl IntoResponses for ReadAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let retry_after = HeaderBuilder::new()
            .schema(u64::schema())
            .description(Some("Seconds to wait before retrying."))
            .build();
        BTreeMap::from([
                (
                    "304".to_owned(),
                    ResponseBuilder::new()
                        .description(
                            "Not modified: the `ETag` sent in `If-None-Match` still holds.",
                        )
                        .build()
                        .into(),
                ),
                (
                    "400".to_owned(),
                    problem(
                        "An unknown or invalid parameter, each named in `errors`.",
                        serde_json::json!({"type": "/problems/invalid-parameter",
                            "title": "Invalid parameter", "status": 400,
                            "detail": "2 fields are invalid",
                            "errors": [{"field": "colour", "message": "unknown parameter; known: service, country"},
                                       {"field": "country", "message": "\"XX\" is not an ISO 3166-1 alpha-2 country code"}]}),
                    )
                    .build()
                    .into(),
                ),
                (
                    "503".to_owned(),
                    problem(
                        "The store is unavailable.",
                        serde_json::json!({"type": "/problems/unavailable",
                            "title": "Service unavailable", "status": 503,
                            "detail": "the store is unavailable; retry later"}),
                    )
                    .header("Retry-After", retry_after)
                    .build()
                    .into(),
                ),
        ])
    }
}
