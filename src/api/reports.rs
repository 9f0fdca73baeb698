//! `POST /api/v1/reports`: one report or a batch, acknowledged only once committed.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, JsonBody};
use super::{ApiError, AppState};
use crate::domain::counting::Outcome;
use crate::domain::report::{Catalog, FieldError, Problem as ProblemKind, Report, ReportFields};
use crate::http::ClientAddr;
use crate::http::Problem;

/// Most reports in one batch body.
pub const MAX_BATCH: usize = 1000;

/// The answer for one report.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "019ad3c2-5f1e-7c3a-9d41-2b7e6a0c8f15", "counted": true, "replay": false}))]
pub(super) struct ReportReceipt {
    /// The report's id: the one sent, or a new UUIDv7.
    id: Uuid,
    /// False when the same reporter already reported this service in the current 15-minute
    /// window, or the sender's network has used up its count for this minute: stored, not counted.
    counted: bool,
    /// The id was already stored: nothing new was written and `counted` is the original outcome.
    replay: bool,
}

/// The answer for a batch: one receipt per report, in the order sent.
#[derive(Serialize, ToSchema)]
pub(super) struct ReceiptBatch {
    reports: Vec<ReportReceipt>,
}

/// The answer: one receipt for one report, a batch of them for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum Receipts {
    One(ReportReceipt),
    Batch(ReceiptBatch),
}

/// One report as a client sends it.
// Read by hand (`from_object`) rather than by serde's derive, which stops at the first fault:
// every key at fault is kept in `faults`, so that the answer names them all.
#[derive(Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"service": "x", "country": "PK", "city": "Lahore", "problem": "app"}))]
pub(super) struct ReportBody {
    /// A slug from the service catalog, e.g. `x`, `youtube`, `whatsapp`.
    #[schema(value_type = String, required)]
    service: Option<String>,
    /// ISO 3166-1 alpha-2, any case (`pk` is `PK`).
    #[schema(value_type = String, required)]
    country: Option<String>,
    /// A city of at least 15,000 people in that country, any case or spelling the gazetteer
    /// knows (`Bombay` is `Mumbai`); left out (or null) for a country-level report.
    city: Option<String>,
    /// What is broken.
    #[schema(schema_with = problem_kind, required)]
    problem: Option<String>,
    /// A UUID of your choosing; send it again on retry and nothing is stored twice.
    #[schema(value_type = Option<Uuid>)]
    id: Option<String>,
    /// Keys no report has and values that are not text, in the order sent.
    #[serde(skip)]
    faults: Vec<FieldError>,
}

/// A batch of reports, answered with one receipt per report.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// 1 to 1000 reports (`MAX_BATCH`).
    // `None` stands for an item that is not a JSON object.
    #[schema(value_type = Vec<ReportBody>, min_items = 1, max_items = 1000)]
    reports: Vec<Option<ReportBody>>,
    /// What is wrong with the batch as a whole (another key, a wrong count), if anything.
    #[serde(skip)]
    fault: Option<FieldError>,
}

/// A request body: one report, or a batch.
#[derive(ToSchema)]
#[serde(untagged)]
pub(super) enum SubmissionBody {
    One(ReportBody),
    Batch(BatchBody),
}

impl<'de> Deserialize<'de> for SubmissionBody {
    /// Reads the body whole as JSON first, so that JSON that is not well-formed is refused as
    /// such wherever it breaks, then sorts it into this shape keeping every fault.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(SubmissionBody::from_json)
    }
}

// Well-formed JSON always reads as a `SubmissionBody`; its faults are answered by `parse`.
impl JsonBody for SubmissionBody {}

impl SubmissionBody {
    /// A batch when the object holds `reports`, otherwise one report.
    fn from_json(value: Value) -> SubmissionBody {
        let Value::Object(mut object) = value else {
            // `ApiJson` refuses such a body before this is read; said here too for completeness.
            return SubmissionBody::One(ReportBody {
                faults: vec![FieldError::new("body", "the body must be a JSON object")],
                ..ReportBody::default()
            });
        };
        let other = object.keys().find(|k| k.as_str() != "reports").cloned();
        match object.remove("reports") {
            Some(reports) => SubmissionBody::Batch(BatchBody::from_json(reports, other)),
            None => SubmissionBody::One(ReportBody::from_object(object)),
        }
    }

    /// Validates every report, naming every field at fault (`reports[2].city` in a batch).
    fn parse(self, catalog: &Catalog) -> Result<Submission, ApiError> {
        match self {
            SubmissionBody::One(report) => report
                .parse(catalog)
                .map(Submission::One)
                .map_err(ApiError::Invalid),
            SubmissionBody::Batch(batch) => batch.parse(catalog).map(Submission::Batch),
        }
    }
}

impl BatchBody {
    /// The batch in `reports`; `other` is the first key of the body besides `reports`.
    fn from_json(reports: Value, other: Option<String>) -> BatchBody {
        let refused = |fault| BatchBody {
            reports: Vec::new(),
            fault: Some(fault),
        };
        if let Some(other) = other {
            return refused(FieldError::new(
                other,
                "a batch body holds only \"reports\"",
            ));
        }
        let Value::Array(items) = reports else {
            return refused(FieldError::new(
                "reports",
                "reports must be an array of reports",
            ));
        };
        if items.is_empty() || items.len() > MAX_BATCH {
            return refused(FieldError::new(
                "reports",
                format!(
                    "a batch holds 1 to {MAX_BATCH} reports, not {}",
                    items.len()
                ),
            ));
        }
        let reports = items
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => Some(ReportBody::from_object(object)),
                _ => None,
            })
            .collect();
        BatchBody {
            reports,
            fault: None,
        }
    }

    /// Every report, or every fault of every report, each named under `reports[i]`.
    fn parse(self, catalog: &Catalog) -> Result<Vec<Report>, ApiError> {
        if let Some(fault) = self.fault {
            return Err(ApiError::Invalid(vec![fault]));
        }
        let mut errors = Vec::new();
        let mut parsed = Vec::with_capacity(self.reports.len());
        for (i, item) in self.reports.iter().enumerate() {
            let prefix = format!("reports[{i}]");
            let Some(report) = item else {
                errors.push(FieldError::new(prefix, "each report must be a JSON object"));
                continue;
            };
            match report.parse(catalog) {
                Ok(report) => parsed.push(report),
                Err(field_errors) => {
                    errors.extend(field_errors.into_iter().map(|e| e.within(&prefix)))
                }
            }
        }
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(ApiError::Invalid(errors))
        }
    }
}

impl ReportBody {
    /// Reads the known text fields of one report object; any other key, or a non-string
    /// value, is a fault.
    fn from_object(object: Map<String, Value>) -> ReportBody {
        let mut body = ReportBody::default();
        for (key, value) in object {
            let slot = match key.as_str() {
                "service" => &mut body.service,
                "country" => &mut body.country,
                "city" => &mut body.city,
                "problem" => &mut body.problem,
                "id" => &mut body.id,
                other => {
                    body.faults.push(FieldError::new(
                        other,
                        "unknown field; a report has service, country, city, problem and id",
                    ));
                    continue;
                }
            };
            match value {
                Value::String(text) => *slot = Some(text),
                // An explicit null is the same as leaving an optional field out.
                Value::Null if matches!(key.as_str(), "city" | "id") => {}
                _ => body.faults.push(FieldError::new(
                    key.as_str(),
                    format!("{key} must be a string"),
                )),
            }
        }
        body
    }

    /// The report, or its faults, or else every field the domain refuses.
    fn parse(&self, catalog: &Catalog) -> Result<Report, Vec<FieldError>> {
        if !self.faults.is_empty() {
            return Err(self.faults.clone());
        }
        let fields = ReportFields {
            service: self.service.as_deref(),
            country: self.country.as_deref(),
            city: self.city.as_deref(),
            problem: self.problem.as_deref(),
            id: self.id.as_deref(),
        };
        Report::parse(&fields, catalog)
    }
}

/// The `problem` field's schema: the wire names of every problem kind the parser accepts.
fn problem_kind() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ProblemKind::ALL.iter().map(|p| p.as_str())))
        .into()
}

impl From<Outcome> for ReportReceipt {
    fn from(o: Outcome) -> ReportReceipt {
        ReportReceipt {
            id: o.id,
            counted: o.counted,
            replay: o.replay,
        }
    }
}

/// A request body: one report or `{"reports": [...]}`.
enum Submission {
    One(Report),
    Batch(Vec<Report>),
}

/// `POST /api/v1/reports`: 201 once stored (200 when every id was already stored).
#[utoipa::path(
    post,
    path = "/api/v1/reports",
    summary = "Report an outage (one report or a batch)",
    tag = "reports",
    request_body(
        description = "One report, or `{\"reports\": [...]}` with 1 to 1000 of them; at most 64 KiB \
            (`http.max_body_bytes`).",
        content((SubmissionBody = "application/json", examples(
            ("one" = (summary = "One report", value = json!(
                {"service": "x", "country": "PK", "city": "Lahore", "problem": "app"}))),
            ("with_id" = (summary = "One report with a client id (safe to retry)", value = json!(
                {"service": "x", "country": "PK", "problem": "app", "id": "0b5e5c2a-7d3e-4c1a-9f55-2f8f2d1c9a10"}))),
            ("batch" = (summary = "A batch", value = json!({"reports": [
                {"service": "x", "country": "US", "problem": "login"},
                {"service": "x", "country": "GB", "city": "London", "problem": "app"}]}))),
        )))
    ),
    responses(
        (status = 201, description = "Stored: the transaction holding the reports has committed. \
            One report gets one receipt; a batch gets `{\"reports\": [...]}`.", content(
            (Receipts = "application/json", examples(
                ("one" = (summary = "One report", value = json!(
                    {"id": "019ad3c2-5f1e-7c3a-9d41-2b7e6a0c8f15", "counted": true, "replay": false}))),
                ("batch" = (summary = "A batch: the second report's reporter had already reported x in this window",
                    value = json!({"reports": [
                    {"id": "019ad3c2-5f1e-7c3a-9d41-2b7e6a0c8f15", "counted": true, "replay": false},
                    {"id": "019ad3c2-5f1e-7c3a-9d41-2b7e6a0c8f16", "counted": false, "replay": false}]}))),
            )),
        )),
        (status = 200, description = "Every id was already stored: nothing written; `counted` is the \
            original outcome and `replay` is true.", body = Receipts, example = json!(
                {"id": "0b5e5c2a-7d3e-4c1a-9f55-2f8f2d1c9a10", "counted": true, "replay": true})),
        (status = 400, description = "The body is not well-formed JSON.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/malformed-json",
            "title": "Malformed JSON", "status": 400, "detail": "malformed JSON: EOF while parsing an object at line 1 column 1"})),
        (status = 413, description = "The body is larger than the limit.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/payload-too-large",
            "title": "Body too large", "status": 413, "detail": "the body is larger than 65536 bytes"})),
        (status = 415, description = "`Content-Type` is not `application/json`.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/unsupported-media-type",
            "title": "Unsupported content type", "status": 415, "detail": "expected Content-Type: application/json"})),
        (status = 422, description = "A field is invalid; `errors` names each one (`reports[3].city` in \
            a batch). Nothing of the body is stored.", body = Problem,
            content_type = "application/problem+json", example = json!({"type": "/problems/validation",
            "title": "Invalid report", "status": 422,
            "detail": "city: \"Rawalpindy\" is not a known city in Pakistan",
            "errors": [{"field": "city", "message": "\"Rawalpindy\" is not a known city in Pakistan",
                "suggestions": ["Rawalpindi"]}]})),
        (status = 429, description = "Over the per-client rate limit.", body = Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")),
            example = json!({"type": "/problems/rate-limited", "title": "Too many reports", "status": 429,
            "detail": "too many reports from this address; retry in 2 s"})),
        (status = 503, description = "The queue is full, or the store is unreachable or slow; `ids` \
            lists the ids to retry with (a retry with the same ids answers 200 if they were stored).",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")),
            example = json!({"type": "/problems/unavailable", "title": "Service unavailable", "status": 503,
            "detail": "too many reports are waiting to be stored; retry shortly",
            "ids": ["019ad3c2-5f1e-7c3a-9d41-2b7e6a0c8f15"]})),
    )
)]
pub async fn create_reports(
    state: State<AppState>,
    client: Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<ApiJson<SubmissionBody>, ApiError>,
) -> Result<Response, ApiError> {
    let answer = store_reports(state, client, headers, body).await;
    if let Err(error) = &answer {
        crate::runtime::metrics::METRICS.rejection(error.reason());
    }
    answer
}

async fn store_reports(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<ApiJson<SubmissionBody>, ApiError>,
) -> Result<Response, ApiError> {
    let ApiJson(body) = body?;
    let (reports, single) = match body.parse(&state.catalog.current())? {
        Submission::One(report) => (vec![report], true),
        Submission::Batch(reports) => (reports, false),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let outcomes = state.submitter.submit(client, user_agent, reports).await?;
    let status = if outcomes.iter().all(|o| o.replay) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let receipts = match (single, outcomes.first()) {
        (true, Some(&outcome)) => Receipts::One(ReportReceipt::from(outcome)),
        _ => Receipts::Batch(ReceiptBatch {
            reports: outcomes.into_iter().map(ReportReceipt::from).collect(),
        }),
    };
    Ok((status, Json(receipts)).into_response())
}
