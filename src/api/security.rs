//! Security headers on every answer, and the strict set every HTML page gets: a same-origin content security policy, no framing, no sniffing, no referrer.
//!
//! The layer is global, so pages added later (the report form, status pages) are covered
//! without opting in; a page that needs a looser policy (the docs page's `data:` images) sets
//! its own `Content-Security-Policy`, which the layer leaves as it is.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy of a page that sets none: everything from this origin, nothing inline, no
/// plugins, forms post only here, and no other site may frame it.
pub const PAGE_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// What every HTML answer carries (besides its content security policy).
const PAGE_HEADERS: [(HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    ),
];

/// Adds `X-Content-Type-Options: nosniff` to every answer and the page headers to HTML ones.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    apply(response.headers_mut());
    response
}

fn apply(headers: &mut HeaderMap) {
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if !is_html {
        return;
    }
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(PAGE_POLICY));
    for (name, value) in PAGE_HEADERS {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers
    }

    #[test]
    fn an_html_answer_gets_the_strict_page_headers() {
        let mut headers = with_type("text/html; charset=utf-8");
        apply(&mut headers);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], PAGE_POLICY);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    }

    #[test]
    fn a_page_policy_of_its_own_is_kept_and_json_gets_only_nosniff() {
        let mut page = with_type("text/html");
        page.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src data:"),
        );
        apply(&mut page);
        assert_eq!(
            page[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; img-src data:"
        );
        let mut json = with_type("application/json");
        apply(&mut json);
        assert_eq!(json.len(), 2);
        assert_eq!(json[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
