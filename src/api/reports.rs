//! `POST /api/v1/reports`: one report or a batch, acknowledged only once committed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::client::ClientAddr;
use super::{ApiError, AppState};
use crate::clock;
use crate::ingest::NewReport;
use crate::report::{FieldError, Report, ReportFields};
use crate::store::Outcome;

/// Most reports in one batch body.
pub const MAX_BATCH: usize = 1000;

/// The answer for one report.
#[derive(Serialize)]
struct ReportReceipt {
    id: Uuid,
    counted: bool,
    /// The id was already stored: nothing new was written and `counted` is the original outcome.
    replay: bool,
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
pub async fn create_reports(
    state: State<AppState>,
    client: Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let answer = store_reports(state, client, headers, body).await;
    if let Err(error) = &answer {
        crate::metrics::METRICS.rejection(error.reason());
    }
    answer
}

async fn store_reports(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = super::json_body(&headers, body, state.max_body_bytes).await?;
    let submission = parse_submission(&bytes, &state)?;
    let now = clock::now();
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let fingerprint = state
        .fingerprinter
        .fingerprint(client.0, user_agent, now)
        .await
        .map_err(ApiError::from_store)?;
    let window_start = state.ingest.dedup_window_start(now);
    let stamp = |report: Report| NewReport {
        id: report.id.unwrap_or_else(Uuid::now_v7),
        client_id: report.id.is_some(),
        received_at: now,
        service: report.service,
        country: report.country,
        city: report.city.map(|c| c.name),
        problem: report.problem,
        fingerprint,
        dedup_window_start: window_start,
    };
    let (batch, single) = match submission {
        Submission::One(report) => (vec![stamp(report)], true),
        Submission::Batch(reports) => (reports.into_iter().map(stamp).collect(), false),
    };
    let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
    let outcomes = state
        .ingest
        .submit(batch)
        .await
        .map_err(|e| ApiError::from_ingest(e, ids))?;
    let status = if outcomes.iter().all(|o| o.replay) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let response = match (single, outcomes.first()) {
        (true, Some(&outcome)) => (status, Json(ReportReceipt::from(outcome))).into_response(),
        _ => {
            let receipts: Vec<ReportReceipt> =
                outcomes.into_iter().map(ReportReceipt::from).collect();
            (status, Json(serde_json::json!({ "reports": receipts }))).into_response()
        }
    };
    Ok(response)
}

/// Parses and validates a body, naming every field at fault (`reports[2].city` in a batch).
fn parse_submission(bytes: &[u8], state: &AppState) -> Result<Submission, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "body",
            "the body must be a JSON object",
        )]));
    };
    let Some(reports) = object.get("reports") else {
        return report_fields(&object)
            .and_then(|fields| Report::parse(&fields, &state.catalog))
            .map(Submission::One)
            .map_err(ApiError::Invalid);
    };
    if let Some(other) = object.keys().find(|k| k.as_str() != "reports") {
        return Err(ApiError::Invalid(vec![FieldError::new(
            other.as_str(),
            "a batch body holds only \"reports\"",
        )]));
    }
    let Value::Array(items) = reports else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "reports",
            "reports must be an array of reports",
        )]));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "reports",
            format!(
                "a batch holds 1 to {MAX_BATCH} reports, not {}",
                items.len()
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("reports[{i}]");
        let Value::Object(object) = item else {
            errors.push(FieldError::new(prefix, "each report must be a JSON object"));
            continue;
        };
        let result =
            report_fields(object).and_then(|fields| Report::parse(&fields, &state.catalog));
        match result {
            Ok(report) => parsed.push(report),
            Err(field_errors) => errors.extend(field_errors.into_iter().map(|e| e.within(&prefix))),
        }
    }
    if errors.is_empty() {
        Ok(Submission::Batch(parsed))
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Reads the known text fields of one report object; any other key, or a non-string value, is an error.
fn report_fields(object: &Map<String, Value>) -> Result<ReportFields<'_>, Vec<FieldError>> {
    let mut fields = ReportFields::default();
    let mut errors = Vec::new();
    for (key, value) in object {
        let slot = match key.as_str() {
            "service" => &mut fields.service,
            "country" => &mut fields.country,
            "city" => &mut fields.city,
            "problem" => &mut fields.problem,
            "id" => &mut fields.id,
            other => {
                errors.push(FieldError::new(
                    other,
                    "unknown field; a report has service, country, city, problem and id",
                ));
                continue;
            }
        };
        match value {
            Value::String(text) => *slot = Some(text.as_str()),
            // An explicit null is the same as leaving an optional field out.
            Value::Null if matches!(key.as_str(), "city" | "id") => {}
            _ => errors.push(FieldError::new(
                key.as_str(),
                format!("{key} must be a string"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(errors)
    }
}
