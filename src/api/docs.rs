//! The API described: the OpenAPI document at `GET /api/openapi.json`, built from the same route
//! registrations as the router, and a docs page at `GET /api/docs` from embedded Swagger UI assets.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{License, OpenApi, RefOr};
use utoipa::PartialSchema;

use super::ApiError;
use crate::domain::report::FieldError;
use crate::http::assets::send_gzipped;
use crate::http::Problem;

/// The document's fixed parts: info, tags and the shared error schemas (paths come from the routes).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "outagewatch",
        description = "Crowdsourced outage reports in, durable per-minute counts and incidents out.\n\n\
            Errors are `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`, and \
            for validation `errors`, one `{field, message}` per invalid field or parameter. \
            Reads carry an `ETag` and `Cache-Control: public, max-age=15`, answer `304` to a matching \
            `If-None-Match`, and answer CSV for `format=csv` or `Accept: text/csv`."
    ),
    tags(
        (name = "reports", description = "Reporting an outage."),
        (name = "reads", description = "Counts, regions, services and places for dashboards."),
        (name = "incidents", description = "Surges the detector found."),
        (name = "live", description = "Server-Sent Events of incident changes and minute counts."),
        (name = "pages", description = "For people and pages: an Atom feed and a status badge."),
        (name = "operations", description = "Metrics and probes."),
        (name = "docs", description = "This description and its docs page."),
        (name = "admin", description = "Changing the catalog and incidents, and re-detection: \
            bearer token (`admin.tokens`) required; 401 without one, 403 with a wrong one."),
    ),
    components(schemas(Problem, FieldError))
)]
struct ApiDoc;

/// The document before any route is registered, with the version and licence from Cargo.
pub(super) fn base_document() -> OpenApi {
    let mut document = <ApiDoc as utoipa::OpenApi>::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut license = License::new(env!("CARGO_PKG_LICENSE"));
    license.identifier = Some(env!("CARGO_PKG_LICENSE").to_owned());
    document.info.license = Some(license);
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An admin token from `admin.tokens` (configured as its SHA-256 or as a secret).",
                ))
                .build(),
        ),
    );
    document
}

/// A string that is one of `names`.
pub(super) fn enum_schema<'a>(names: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
}

/// A string parameter that takes one of `names`, `default` when absent.
pub(super) fn choice_schema<'a>(
    names: impl IntoIterator<Item = &'a str>,
    default: &str,
) -> RefOr<Schema> {
    enum_schema(names).default(Some(default.into())).into()
}

/// The OpenAPI document this router was built with.
#[derive(Clone)]
pub(super) struct Document(pub(super) Arc<OpenApi>);

/// `GET /api/openapi.json`
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    summary = "This OpenAPI document",
    tag = "docs",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1).", body = serde_json::Value,
            headers(
                ("ETag" = String, description = "A hash of the body; send it back in `If-None-Match`."),
                ("Cache-Control" = String, description = "`public, max-age=15`."),
            )),
        (status = 304, description = "The document has not changed since the `ETag` sent in `If-None-Match`."),
    )
)]
pub async fn get_openapi(Extension(document): Extension<Document>) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(&*document.0).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The docs page's own policy, which the security layer (`super::security`) keeps instead of
/// its default: everything from this origin and nothing inline, but Swagger UI's icons are
/// `data:` images in its stylesheet, and the page has no form.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How an asset is embedded.
enum Stored {
    Plain(&'static [u8]),
    /// Gzipped by `build.rs`: the Swagger UI files are 1.9 MB raw and a quarter of that gzipped.
    Gzip(&'static [u8]),
}

/// An embedded file of the docs page (Swagger UI is vendored under `assets/vendor/`, Apache-2.0).
struct Asset {
    /// The name under `/api/docs/`; vendored files carry their version, so they never change.
    name: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    stored: Stored,
}

/// Vendored files are cached for a year; our small initializer for an hour, so a new release
/// takes effect soon.
const ASSETS: [Asset; 3] = [
    Asset {
        name: "swagger-ui-bundle-5.35.0.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: "public, max-age=31536000, immutable",
        stored: Stored::Gzip(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/swagger-ui-bundle.js.gz"
        ))),
    },
    Asset {
        name: "swagger-ui-5.35.0.css",
        content_type: "text/css; charset=utf-8",
        cache_control: "public, max-age=31536000, immutable",
        stored: Stored::Gzip(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/swagger-ui.css.gz"
        ))),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: "public, max-age=3600",
        stored: Stored::Plain(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/docs/init.js"
        ))),
    },
];

const PAGE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/docs/index.html"
));

/// `GET /api/docs`
#[utoipa::path(
    get,
    path = "/api/docs",
    summary = "The API docs page",
    tag = "docs",
    responses(
        (status = 200, description = "The docs page: Swagger UI over this document, from assets \
            embedded in the binary (no CDN).", body = String, content_type = "text/html",
            headers(("Content-Security-Policy" = String, description = "Same origin only, nothing inline."))),
    )
)]
pub async fn get_docs_page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// The `file` path parameter of the docs assets: one of their names.
pub(super) struct AssetName;

impl PartialSchema for AssetName {
    fn schema() -> RefOr<Schema> {
        enum_schema(ASSETS.iter().map(|a| a.name)).into()
    }
}

/// `GET /api/docs/{file}`
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    summary = "A script or stylesheet of the docs page",
    tag = "docs",
    params(("file" = inline(AssetName), Path, description = "A script or stylesheet of the docs page.")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript"),
            (String = "text/css"),
        ), headers(("Cache-Control" = String, description = "A year (`immutable`) for the versioned \
            Swagger UI files, an hour for the initializer."))),
        (status = 404, description = "No such file.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/not-found", "title": "Not found", "status": 404, "detail": "not found"})),
    )
)]
pub async fn get_docs_asset(
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == file)
        .ok_or(ApiError::NotFound)?;
    match asset.stored {
        Stored::Plain(bytes) => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(asset.cache_control),
                ),
            ],
            bytes,
        )
            .into_response()),
        Stored::Gzip(bytes) => {
            send_gzipped(&headers, bytes, asset.content_type, asset.cache_control)
        }
    }
}
