//! The admin API under `/api/v1/admin`: add, rename or disable services, annotate or resolve an incident, trigger a redetect; bearer tokens held as SHA-256 hashes and compared in constant time, every call logged (who, what) without the token.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use super::contract::{AdminProblems, BodyProblems, IncidentAnswers};
use super::extract::{ApiJson, JsonBody};
use super::{ApiError, AppState};
use crate::config::AdminSettings;
use crate::detector::DetectError;
use crate::domain::incidents::Incident;
use crate::domain::report::FieldError;
use crate::http::Problem;
use crate::read::edits::{IncidentAction, ServiceRecord};
use crate::read::{ReadError, Reads};

/// How long a redetect call waits for its result before answering 202 (it goes on, and logs it).
const REDETECT_WAIT: Duration = Duration::from_secs(5);

/// Longest service name and note accepted.
const MAX_NAME_CHARS: usize = 100;
const MAX_NOTE_CHARS: usize = 2000;

/// The configured admin tokens: names and SHA-256 hashes only.
pub struct AdminTokens(Vec<(String, [u8; 32])>);

/// The admin a request was authorized as (the token's name).
#[derive(Clone, Debug)]
pub struct Admin(pub String);

impl AdminTokens {
    /// Hashes the configured tokens; the plain ones are dropped after this.
    pub fn new(settings: &AdminSettings) -> AdminTokens {
        let tokens = settings
            .tokens
            .iter()
            .filter_map(|token| {
                let hash = match (&token.sha256, &token.token) {
                    (Some(hex), _) => parse_hash(hex)?,
                    (None, Some(secret)) => Sha256::digest(secret.expose_secret()).into(),
                    (None, None) => return None,
                };
                Some((token.name.clone(), hash))
            })
            .collect();
        AdminTokens(tokens)
    }

    /// The admin holding `token`. Every configured hash is compared, each in constant time,
    /// so the time taken says nothing about which (if any) matched.
    fn holder(&self, token: &str) -> Option<&str> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (name, hash) in &self.0 {
            if bool::from(presented.ct_eq(hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Middleware of the admin routes: 401 without a bearer token, 403 with one that is not an
/// admin's; logs every call with the admin's name, the route and the status, never the token.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let action = format!("{} {route}", request.method());
    let target = request.uri().path().to_owned();
    let token = bearer_token(request.headers());
    let Some(token) = token else {
        tracing::warn!(%action, %target, "admin call without a token refused");
        return ApiError::Unauthorized.into_response();
    };
    let Some(name) = state.admin.holder(token).map(str::to_owned) else {
        tracing::warn!(%action, %target, "admin call with a wrong token refused");
        return ApiError::Forbidden.into_response();
    };
    request.extensions_mut().insert(Admin(name.clone()));
    let response = next.run(request).await;
    tracing::info!(admin = %name, %action, %target, status = response.status().as_u16(), "admin call");
    response
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A service as the admin API shows it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"slug": "bluesky", "name": "Bluesky", "enabled": true}))]
pub(super) struct AdminService {
    slug: String,
    name: String,
    /// A disabled service takes no reports and is left out of the public catalog.
    enabled: bool,
}

impl From<ServiceRecord> for AdminService {
    fn from(record: ServiceRecord) -> AdminService {
        AdminService {
            slug: record.slug,
            name: record.name,
            enabled: record.enabled,
        }
    }
}

/// Every stored service.
#[derive(Serialize, ToSchema)]
pub(super) struct AdminServices {
    services: Vec<AdminService>,
}

/// A service's name and state.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Bluesky", "enabled": true}))]
pub(super) struct ServiceBody {
    /// The name people know the service by (1 to 100 characters).
    // The pattern is `checked_text`'s rule: not blank, no control characters but \t, \n, \r.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    name: String,
    /// False disables it; true (the default) enables it.
    #[serde(default = "enabled_by_default")]
    #[schema(default = true)]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// An admin's note on an incident.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"note": "Confirmed by the provider: a DDoS on their edge."}))]
pub(super) struct NoteBody {
    /// Free text, 1 to 2000 characters; stored and shown as sent.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    note: String,
}

/// The range to recompute; both ends optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z"}))]
pub(super) struct RedetectBody {
    /// Start (RFC 3339); default: the first stored minute.
    from: Option<DateTime<Utc>>,
    /// End, exclusive; default: the last complete minute.
    to: Option<DateTime<Utc>>,
}

/// What a redetect did, or that it is still running.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "done", "from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z",
    "minutes": 51840, "series": 32, "incidents": 33, "open": 0}))]
pub(super) struct RedetectAnswer {
    /// `done`, or `running` (it goes on in the background; its summary is logged).
    status: &'static str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Minutes replayed (history included).
    minutes: Option<i64>,
    series: Option<usize>,
    /// Incidents that started in the range, and how many of them are open.
    incidents: Option<usize>,
    open: Option<usize>,
}

// Admin bodies: 400 for broken JSON, 422 (on `body`) naming what is wrong with well-formed JSON.
impl JsonBody for ServiceBody {}
impl JsonBody for NoteBody {}
impl JsonBody for RedetectBody {}

/// Free text from an admin: trimmed length within bounds, and no control characters other
/// than newlines and tabs (which Postgres text cannot always hold, and no page should show).
fn checked_text(field: &str, text: &str, max_chars: usize) -> Result<(), ApiError> {
    let chars = text.chars().count();
    let problem = if text.trim().is_empty() {
        Some(format!("{field} must not be empty"))
    } else if chars > max_chars {
        Some(format!("{field} must be at most {max_chars} characters"))
    } else if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        Some(format!("{field} must not contain control characters"))
    } else {
        None
    };
    match problem {
        Some(message) => Err(ApiError::Invalid(vec![FieldError::new(field, message)])),
        None => Ok(()),
    }
}

/// A service slug: 1 to 40 lower-case letters, digits, `-` or `_`.
fn checked_slug(slug: &str) -> Result<(), ApiError> {
    let valid = (1..=40).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::InvalidParameters(vec![FieldError::new(
            "slug",
            "a slug is 1 to 40 lower-case letters, digits, '-' or '_'",
        )]))
    }
}

/// `GET /api/v1/admin/services`
#[utoipa::path(
    get,
    path = "/api/v1/admin/services",
    summary = "Every stored service, enabled or not",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        AdminProblems,
        (status = 200, description = "The stored catalog, in catalog order.", body = AdminServices,
            example = json!({"services": [{"slug": "x", "name": "X (Twitter)", "enabled": true}]})),
    )
)]
pub async fn list_services(State(state): State<AppState>) -> Result<Json<AdminServices>, ApiError> {
    let records = state
        .reads
        .stored_services()
        .await
        .map_err(ApiError::from_read)?;
    Ok(Json(AdminServices {
        services: records.into_iter().map(AdminService::from).collect(),
    }))
}

/// `PUT /api/v1/admin/services/{slug}`
#[utoipa::path(
    put,
    path = "/api/v1/admin/services/{slug}",
    summary = "Add, rename, disable or enable a service",
    tag = "admin",
    security(("admin_token" = [])),
    params(("slug" = String, Path, description = "The service's slug: 1 to 40 lower-case letters, digits, '-' or '_'.",
        pattern = "^[a-z0-9_-]{1,40}$", example = "bluesky")),
    request_body(content = ServiceBody, content_type = "application/json"),
    responses(
        AdminProblems, BodyProblems,
        (status = 201, description = "Added.", body = AdminService,
            example = json!({"slug": "bluesky", "name": "Bluesky", "enabled": true})),
        (status = 200, description = "Updated.", body = AdminService,
            example = json!({"slug": "bluesky", "name": "Bluesky", "enabled": false})),
        (status = 400, description = "Malformed JSON or a bad slug.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/invalid-parameter", "title": "Invalid parameter", "status": 400,
                "detail": "slug: a slug is 1 to 40 lower-case letters, digits, '-' or '_'",
                "errors": [{"field": "slug", "message": "a slug is 1 to 40 lower-case letters, digits, '-' or '_'"}]})),
        (status = 422, description = "A field is invalid.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/validation", "title": "Invalid report", "status": 422,
                "detail": "name: name must not be empty", "errors": [{"field": "name", "message": "name must not be empty"}]})),
    )
)]
pub async fn put_service(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<ServiceBody>,
) -> Result<Response, ApiError> {
    let Path(slug) = slug.map_err(|_| ApiError::NotFound)?;
    checked_slug(&slug)?;
    checked_text("name", &body.name, MAX_NAME_CHARS)?;
    let record = ServiceRecord {
        slug,
        name: body.name,
        enabled: body.enabled,
    };
    let created = state
        .reads
        .put_service(&record, crate::runtime::clock::now())
        .await
        .map_err(ApiError::from_read)?;
    state
        .reads
        .reload_catalog(&state.catalog)
        .await
        .map_err(ApiError::from_read)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AdminService::from(record))).into_response())
}

/// `PUT /api/v1/admin/incidents/{id}/note`
#[utoipa::path(
    put,
    path = "/api/v1/admin/incidents/{id}/note",
    summary = "Set an incident's note",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "The incident's id.")),
    request_body(content = NoteBody, content_type = "application/json"),
    responses(
        AdminProblems, BodyProblems, IncidentAnswers,
        (status = 422, description = "The note is empty, too long or holds control characters.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/validation",
                "title": "Invalid report", "status": 422, "detail": "note: note must not be empty",
                "errors": [{"field": "note", "message": "note must not be empty"}]})),
    )
)]
pub async fn put_incident_note(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<NoteBody>,
) -> Result<Json<Incident>, ApiError> {
    let id = incident_id(id)?;
    checked_text("note", &body.note, MAX_NOTE_CHARS)?;
    act(
        &state.reads,
        id,
        &IncidentAction::Annotate { note: &body.note },
    )
    .await
}

/// `POST /api/v1/admin/incidents/{id}/resolve`
#[utoipa::path(
    post,
    path = "/api/v1/admin/incidents/{id}/resolve",
    summary = "Resolve an incident by hand",
    description = "Resolves the incident now (an already resolved one keeps its end). The detector \
        no longer changes it, and a redetect of its range keeps it.",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "The incident's id.")),
    responses(AdminProblems, IncidentAnswers)
)]
pub async fn resolve_incident(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Incident>, ApiError> {
    let id = incident_id(id)?;
    act(&state.reads, id, &IncidentAction::Resolve { by: &admin.0 }).await
}

fn incident_id(id: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(text) = id.map_err(|_| ApiError::NotFound)?;
    Uuid::try_parse(&text).map_err(|_| {
        ApiError::InvalidParameters(vec![FieldError::new(
            "id",
            format!("\"{text}\" is not a UUID"),
        )])
    })
}

async fn act(
    reads: &Reads,
    id: Uuid,
    action: &IncidentAction<'_>,
) -> Result<Json<Incident>, ApiError> {
    reads
        .act_on_incident(id, action, crate::runtime::clock::now())
        .await
        .map_err(ApiError::from_read)?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/v1/admin/redetect`
#[utoipa::path(
    post,
    path = "/api/v1/admin/redetect",
    summary = "Recompute the incidents of a range",
    description = "Runs `outagewatch redetect` in this process with the live detector paused: the \
        incidents that started in the range are recomputed from the stored counts and replace the \
        stored ones (noted and hand-resolved ones are kept). Answers 200 with the summary when done \
        within 5 s, else 202 (it goes on; the summary is logged).",
    tag = "admin",
    security(("admin_token" = [])),
    request_body(content = RedetectBody, content_type = "application/json"),
    responses(
        AdminProblems, BodyProblems,
        (status = 200, description = "Done.", body = RedetectAnswer, example = json!({"status": "done",
            "from": "2025-03-10T00:00:00Z", "to": "2025-03-11T00:00:00Z", "minutes": 51840, "series": 32,
            "incidents": 33, "open": 0})),
        (status = 202, description = "Still running.", body = RedetectAnswer, example = json!({"status": "running",
            "from": null, "to": null, "minutes": null, "series": null, "incidents": null, "open": null})),
        (status = 400, description = "Malformed JSON.", body = Problem, content_type = "application/problem+json",
            example = json!({"type": "/problems/malformed-json", "title": "Malformed JSON", "status": 400,
                "detail": "malformed JSON: EOF while parsing an object at line 1 column 1"})),
        (status = 409, description = "Another replica runs the detector: call it there, or stop it.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/conflict", "title": "Conflict",
                "status": 409, "detail": "another process holds the detector lock (a running `serve`); stop it first"})),
        (status = 422, description = "`from` is not before `to`, a field is not a time, or the replay before \
            `from` (`detector.history_days`) would start before the minute counts kept (`retention.minute_rollups_days`).", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/validation",
                "title": "Invalid report", "status": 422, "detail": "from: --from must be before --to",
                "errors": [{"field": "from", "message": "--from must be before --to"}]})),
    )
)]
pub async fn redetect(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RedetectBody>,
) -> Result<Response, ApiError> {
    if let (Some(from), Some(to)) = (body.from, body.to) {
        if from >= to {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "from",
                "from must be before to",
            )]));
        }
    }
    let detector = state.detector.clone();
    let job = tokio::spawn(async move {
        let result = detector
            .redetect(body.from, body.to, crate::runtime::clock::now())
            .await;
        match &result {
            Ok(summary) => tracing::info!(?summary, "admin redetect done"),
            Err(error) => tracing::warn!(%error, "admin redetect failed"),
        }
        result
    });
    let summary = match tokio::time::timeout(REDETECT_WAIT, job).await {
        Err(_) => {
            let running = RedetectAnswer {
                status: "running",
                from: None,
                to: None,
                minutes: None,
                series: None,
                incidents: None,
                open: None,
            };
            return Ok((StatusCode::ACCEPTED, Json(running)).into_response());
        }
        Ok(Err(join)) => return Err(ApiError::Internal(format!("redetect task: {join}"))),
        Ok(Ok(Err(DetectError::NotLeader))) => {
            return Err(ApiError::Conflict(DetectError::NotLeader.to_string()))
        }
        Ok(Ok(Err(DetectError::EmptyRange))) => {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "from",
                "from must be before to (or before the last complete minute)",
            )]))
        }
        Ok(Ok(Err(DetectError::BeforeKeptMinutes(reason)))) => {
            return Err(ApiError::Invalid(vec![FieldError::new("from", reason)]))
        }
        Ok(Ok(Err(DetectError::Store(error)))) => {
            return Err(ApiError::from_read(ReadError::from(error)))
        }
        Ok(Ok(Err(other))) => return Err(ApiError::Internal(other.to_string())),
        Ok(Ok(Ok(summary))) => summary,
    };
    let done = RedetectAnswer {
        status: "done",
        from: summary.from,
        to: summary.to,
        minutes: Some(summary.minutes),
        series: Some(summary.series),
        incidents: Some(summary.incidents),
        open: Some(summary.open),
    };
    Ok((StatusCode::OK, Json(done)).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn tokens() -> AdminTokens {
        // sha256("correct horse battery staple")
        let settings = Settings::from_toml(&[r#"
[[admin.tokens]]
name = "ops"
sha256 = "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a"
[[admin.tokens]]
name = "oncall"
token = "a plain token of enough length"
"#])
        .unwrap();
        AdminTokens::new(&settings.admin)
    }

    #[test]
    fn a_token_is_matched_by_its_hash_whichever_way_it_was_configured() {
        let tokens = tokens();
        assert_eq!(tokens.holder("correct horse battery staple"), Some("ops"));
        assert_eq!(
            tokens.holder("a plain token of enough length"),
            Some("oncall")
        );
        assert_eq!(tokens.holder("correct horse battery stapl"), None);
        assert_eq!(tokens.holder(""), None);
    }

    #[test]
    fn only_a_bearer_authorization_carries_a_token() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer   abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn text_with_sql_is_fine_but_empty_long_or_control_text_is_not() {
        assert!(checked_text("note", "'; drop table incidents; --", 100).is_ok());
        assert!(checked_text("note", "line one\nline two\ttab", 100).is_ok());
        assert!(checked_text("note", "   ", 100).is_err());
        assert!(checked_text("note", "nul\0byte", 100).is_err());
        assert!(checked_text("note", &"é".repeat(101), 100).is_err());
        assert!(checked_slug("bluesky-2").is_ok());
        assert!(checked_slug("Bluesky").is_err());
        assert!(checked_slug("x'; --").is_err());
    }
}
