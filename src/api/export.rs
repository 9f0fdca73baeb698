//! CSV for every read: `format=csv` or `Accept: text/csv` turns a JSON answer's list (buckets,
//! regions, services, places, incidents) into CSV rows, one column per field.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::PartialSchema;

use super::ApiError;
use crate::domain::report::FieldError;

/// Largest JSON answer converted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The representations a read answers in, by `format` name.
const FORMATS: [&str; 2] = ["json", "csv"];

/// The `format` parameter's schema: [`FORMATS`].
pub(super) struct FormatChoice;

impl PartialSchema for FormatChoice {
    fn schema() -> RefOr<Schema> {
        super::docs::choice_schema(FORMATS, FORMATS[0])
    }
}

/// Which representation the client asked for: `format` wins over `Accept`.
fn wants_csv(request: &Request) -> Result<bool, ApiError> {
    // Decoded as the handlers' own parameters are (`%63sv` is `csv`; the last one given wins).
    let params = super::extract::query_parameters(request.uri().query().unwrap_or_default())?;
    match params.get("format").map(String::as_str) {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(ApiError::InvalidParameters(vec![FieldError::new(
            "format",
            "format must be json or csv",
        )])),
        None => Ok(request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv"))),
    }
}

/// The URI without its `format` parameter (the handlers do not know it), however its name is
/// encoded; the other parameters are kept as sent.
fn without_format(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let is_format =
        |pair: &str| super::extract::query_parameters(pair).is_ok_and(|p| p.contains_key("format"));
    let kept: Vec<&str> = query.split('&').filter(|pair| !is_format(pair)).collect();
    let path = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    path.parse().ok()
}

/// One cell: strings as they are, numbers and booleans as JSON writes them, null empty,
/// objects as `key=value` pairs and lists joined by "; ".
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join("; "),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The fields that hold an answer's list.
const LISTS: [&str; 5] = ["buckets", "regions", "services", "places", "incidents"];

/// The rows of an answer: its list, or the answer itself as one row (an empty list gives
/// no rows, and so an empty CSV).
fn rows(answer: &Value) -> Vec<&Map<String, Value>> {
    if let Value::Object(fields) = answer {
        for (name, value) in fields {
            if let (true, Value::Array(items)) = (LISTS.contains(&name.as_str()), value) {
                let objects: Vec<&Map<String, Value>> =
                    items.iter().filter_map(Value::as_object).collect();
                if objects.len() == items.len() {
                    return objects;
                }
            }
        }
        return vec![fields];
    }
    Vec::new()
}

/// Renders JSON as CSV with a header row (columns from the first row, in its field order).
pub fn to_csv(answer: &Value) -> Result<Vec<u8>, csv::Error> {
    let rows = rows(answer);
    let mut writer = csv::Writer::from_writer(Vec::new());
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&String> = first.keys().collect();
    writer.write_record(columns.iter().map(|c| c.as_str()))?;
    for row in &rows {
        writer.write_record(
            columns
                .iter()
                .map(|c| row.get(*c).map(cell).unwrap_or_default()),
        )?;
    }
    writer.flush()?;
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// Renders JSON as an aligned text table (the CLI's default), columns as in [`to_csv`].
pub fn to_table(answer: &Value) -> String {
    let rows = rows(answer);
    let Some(first) = rows.first() else {
        return "(none)\n".to_owned();
    };
    let columns: Vec<&String> = first.keys().collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(*c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.as_str()).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Converts successful JSON answers to CSV when asked to.
pub async fn csv_on_request(mut request: Request, next: Next) -> Response {
    let csv = match wants_csv(&request) {
        Ok(csv) => csv,
        Err(error) => return error.into_response(),
    };
    if let Some(uri) = without_format(request.uri()) {
        *request.uri_mut() = uri;
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    if !csv || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let converted = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|answer| to_csv(&answer).ok()),
        Err(_) => None,
    };
    let Some(csv) = converted else {
        return ApiError::Internal("cannot render the answer as CSV".into()).into_response();
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(csv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_becomes_rows_with_nested_values_flattened() {
        let answer = json!({"service": "x", "incidents": [
            {"id": "a", "peak_count": 136.0, "resolved_at": null,
             "top_cities": [{"city": "Lahore", "count": 50}, {"city": "Karachi, Sindh", "count": 7}],
             "problems": {"app": 0.75}},
        ], "next_cursor": null});
        let text = String::from_utf8(to_csv(&answer).expect("renders")).expect("utf-8");
        assert_eq!(
            text,
            "id,peak_count,resolved_at,top_cities,problems\n\
             a,136.0,,\"city=Lahore count=50; city=Karachi, Sindh count=7\",app=0.75\n"
        );
    }

    #[test]
    fn a_table_aligns_its_columns() {
        let answer = json!({"buckets": [
            {"start": "10:00", "count": 2, "expected": 1.5},
            {"start": "10:15", "count": 120, "expected": null},
        ]});
        assert_eq!(
            to_table(&answer),
            "start  count  expected\n10:00  2      1.5\n10:15  120\n"
        );
        assert_eq!(to_table(&json!({"incidents": []})), "(none)\n");
    }

    #[test]
    fn a_single_object_is_one_row_and_format_is_removed_from_the_query() {
        let one = json!({"id": "a", "top_cities": [{"city": "Lahore", "count": 50}]});
        let text = String::from_utf8(to_csv(&one).expect("renders")).expect("utf-8");
        assert_eq!(text, "id,top_cities\na,city=Lahore count=50\n");
        let uri: Uri = "/api/v1/counts?service=x&format=csv&interval=1h"
            .parse()
            .expect("valid uri");
        assert_eq!(
            without_format(&uri).expect("still valid").to_string(),
            "/api/v1/counts?service=x&interval=1h"
        );
    }

    #[test]
    fn a_percent_encoded_format_is_read_and_removed_like_a_plain_one() {
        let request = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request")
        };
        let wants = |uri: &str| wants_csv(&request(uri)).expect("a known format");
        assert!(wants("/api/v1/counts?service=x&format=%63sv"));
        assert!(wants("/api/v1/counts?service=x&%66ormat=csv"));
        assert!(!wants("/api/v1/counts?format=%6Ason"));
        assert!(wants_csv(&request("/api/v1/counts?format=%78ml")).is_err());
        let uri: Uri = "/api/v1/counts?q=S%C3%A3o+Paulo&%66ormat=%63sv&interval=1h"
            .parse()
            .expect("valid uri");
        assert_eq!(
            without_format(&uri).expect("still valid").to_string(),
            "/api/v1/counts?q=S%C3%A3o+Paulo&interval=1h"
        );
    }
}
