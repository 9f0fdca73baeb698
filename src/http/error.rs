//! `ApiError`: the one error type that becomes a response, as `application/problem+json` (RFC 9457).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::domain::report::FieldError;
use crate::ingest::IngestError;
use crate::read::ReadError;

/// Everything a handler can answer instead of success; each variant is one status code's promise.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 413: the body is larger than the limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: the body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: fields failed validation. Problem types are relative URIs, documented in the README.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// 400: query or path parameters failed validation.
    #[error("{} invalid parameter(s)", .0.len())]
    InvalidParameters(Vec<FieldError>),
    /// 401: an admin route without a bearer token.
    #[error("this route needs an admin bearer token (Authorization: Bearer ...)")]
    Unauthorized,
    /// 403: an admin route with a token that is not an admin's.
    #[error("the token is not an admin token")]
    Forbidden,
    /// 404: nothing at this path.
    #[error("not found")]
    NotFound,
    /// 408: the client did not send its body in time.
    #[error("the body did not arrive within {ms} ms")]
    RequestTimeout { ms: u64 },
    /// 409: the request conflicts with what the service is doing (e.g. another replica
    /// runs the detector).
    #[error("{0}")]
    Conflict(String),
    /// 429: the client is over its rate limit.
    #[error("rate limit exceeded")]
    RateLimited { retry_after_seconds: u64 },
    /// 503: the service cannot take or confirm the reports now; retry (with the same ids) later.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_seconds: u64,
        ids: Vec<Uuid>,
    },
    /// 500: a fault of ours; logged, never described to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The problem document (RFC 9457) with our extension members.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation",
    "title": "Invalid report",
    "status": 422,
    "detail": "city: \"Rawalpindy\" is not a known city in Pakistan",
    "errors": [{"field": "city", "message": "\"Rawalpindy\" is not a known city in Pakistan",
                "suggestions": ["Rawalpindi"]}]
}))]
pub struct Problem<'a> {
    /// The problem type, a relative URI: `/problems/malformed-json`, `/problems/payload-too-large`,
    /// `/problems/unsupported-media-type`, `/problems/validation`, `/problems/invalid-parameter`,
    /// `/problems/unauthorized`, `/problems/forbidden`, `/problems/not-found`,
    /// `/problems/request-timeout`, `/problems/conflict`, `/problems/rate-limited`,
    /// `/problems/unavailable` or `/problems/internal`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// A short summary of the problem type.
    title: &'static str,
    /// The HTTP status code.
    status: u16,
    /// What went wrong this time, for people.
    detail: String,
    /// Each invalid field or parameter (validation and invalid-parameter problems only).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<FieldError>)]
    errors: &'a [FieldError],
    /// The report ids to retry with (unavailable problems of `POST /api/v1/reports` only).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<Uuid>)]
    ids: &'a [Uuid],
}

/// `FieldError` lives in the pure core, which knows nothing of OpenAPI, so its schema is
/// written here, beside the one document that carries it.
impl PartialSchema for FieldError {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some("One field or parameter that failed validation."))
            .property(
                "field",
                text("The field (`reports[3].city` in a batch) or parameter at fault."),
            )
            .required("field")
            .property("message", text("What is wrong with it, for people."))
            .required("message")
            .property(
                "suggestions",
                ArrayBuilder::new()
                    .items(text("A close known value."))
                    .description(Some(
                    "For an unknown city: the closest names in that country; left out otherwise.",
                )),
            )
            .into()
    }
}

impl ToSchema for FieldError {}

impl ApiError {
    /// A read's error: an invalid query names its fields (400); a store that is down or slow is
    /// 503 with `Retry-After`; anything else is a 500 whose cause is logged, not sent.
    pub fn from_read(error: ReadError) -> ApiError {
        match error {
            ReadError::Invalid(errors) => ApiError::InvalidParameters(errors),
            ReadError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::Unavailable {
                    detail: "the store is unavailable; retry later".into(),
                    retry_after_seconds: 5,
                    ids: Vec::new(),
                }
            }
            ReadError::Failed(detail) => ApiError::Internal(detail),
        }
    }

    /// Maps an ingest failure for reports with these ids, which a retry should reuse.
    pub fn from_ingest(error: IngestError, ids: Vec<Uuid>) -> ApiError {
        let (detail, retry_after_seconds) = match &error {
            IngestError::QueueFull => ("too many reports are waiting to be stored; retry shortly", 1),
            IngestError::CommitTimeout => {
                ("the store did not confirm in time; the reports may be stored: retry with the same ids", 1)
            }
            IngestError::Store(_) => ("the store is unavailable; nothing was stored: retry later", 5),
            IngestError::Closed => ("the service is shutting down; retry shortly", 1),
        };
        if !matches!(error, IngestError::QueueFull) {
            tracing::warn!(%error, reports = ids.len(), "reports not acknowledged");
        }
        ApiError::Unavailable {
            detail: detail.into(),
            retry_after_seconds,
            ids,
        }
    }

    /// The problem type without its `/problems/` prefix (a metrics label).
    pub fn reason(&self) -> &'static str {
        let (_, kind, _) = self.parts();
        kind.trim_start_matches("/problems/")
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/malformed-json",
                "Malformed JSON",
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Body too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Unsupported content type",
            ),
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation",
                "Invalid report",
            ),
            ApiError::InvalidParameters(_) => (
                StatusCode::BAD_REQUEST,
                "/problems/invalid-parameter",
                "Invalid parameter",
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthorized",
                "Admin token required",
            ),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "/problems/forbidden", "Forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "/problems/not-found", "Not found"),
            ApiError::RequestTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "/problems/request-timeout",
                "Request body too slow",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "/problems/conflict", "Conflict"),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many reports",
            ),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "something went wrong on our side; it has been logged".to_string()
            }
            ApiError::Invalid(errors) | ApiError::InvalidParameters(errors) => {
                match errors.as_slice() {
                    [one] => format!("{}: {}", one.field, one.message),
                    many => format!("{} fields are invalid", many.len()),
                }
            }
            ApiError::RateLimited {
                retry_after_seconds,
            } => {
                format!("too many reports from this address; retry in {retry_after_seconds} s")
            }
            other => other.to_string(),
        };
        let (errors, ids): (&[FieldError], &[Uuid]) = match &self {
            ApiError::Invalid(errors) | ApiError::InvalidParameters(errors) => (errors, &[]),
            ApiError::Unavailable { ids, .. } => (&[], ids),
            _ => (&[], &[]),
        };
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            errors,
            ids,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited {
            retry_after_seconds,
        }
        | ApiError::Unavailable {
            retry_after_seconds,
            ..
        } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"outagewatch admin\""),
            );
        }
        response
    }
}
