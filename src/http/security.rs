//! The security headers of every answer (JSON API, pages, docs page, errors), set by one layer around the whole router.
//!
//! One place, so an answer cannot carry another layer's opinion and a route added later is
//! covered without opting in. The common headers overwrite whatever a handler set; the one a
//! route may choose is `Content-Security-Policy`: the docs page sets its own (Swagger UI's icons
//! are `data:` images, `src/api/docs.rs`), which the layer keeps.

use axum::http::{header, HeaderName, HeaderValue};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of an answer that sets none: everything from this origin, nothing inline, no
/// plugins, forms post only here, and no other site may frame it. uPlot styles the pages' chart
/// through the CSSOM, which this policy allows.
pub const PAGE_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// `same-origin`: the pages link to one another (form, thanks, status, incident) and the form
/// posts here, so those requests keep their `Referer` and a real `Origin` (under `no-referrer`
/// a browser sends `Origin: null` with a form POST), while no other origin gets either.
pub const REFERRER_POLICY: &str = "same-origin";

/// Wraps every route and the fallback of `router` in the security headers.
pub fn with_security_headers<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // One stacked layer rather than a `Router::layer` per header: each of those boxes every route again.
    router.layer(
        ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            ))
            .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(always(header::X_FRAME_OPTIONS, "DENY"))
            .layer(always(header::REFERRER_POLICY, REFERRER_POLICY))
            .layer(always(
                HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ))
            .layer(always(
                HeaderName::from_static("permissions-policy"),
                "camera=(), microphone=(), geolocation=(), interest-cohort=()",
            )),
    )
}

/// A header every answer carries with this value, whatever its handler set.
fn always(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn headers_of(router: Router, path: &str) -> HeaderMap {
        let request = Request::get(path).body(Body::empty()).unwrap();
        router.oneshot(request).await.unwrap().headers().clone()
    }

    fn router() -> Router {
        let routes = Router::new()
            .route(
                "/json",
                get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{}") }),
            )
            .route(
                "/page",
                get(|| async {
                    (
                        [
                            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                            (
                                header::CONTENT_SECURITY_POLICY,
                                "default-src 'self'; img-src data:",
                            ),
                            (header::REFERRER_POLICY, "unsafe-url"),
                        ],
                        "<!DOCTYPE html>",
                    )
                }),
            );
        with_security_headers(routes)
    }

    #[tokio::test]
    async fn json_and_an_unknown_path_get_the_same_headers_as_a_page() {
        for path in ["/json", "/nothing/here"] {
            let headers = headers_of(router(), path).await;
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                PAGE_POLICY,
                "{path}"
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
            assert_eq!(headers[header::REFERRER_POLICY], "same-origin", "{path}");
            assert_eq!(
                headers["cross-origin-opener-policy"], "same-origin",
                "{path}"
            );
            assert_eq!(
                headers["permissions-policy"],
                "camera=(), microphone=(), geolocation=(), interest-cohort=()",
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_route_keeps_its_own_content_security_policy_but_not_its_own_referrer_policy() {
        let headers = headers_of(router(), "/page").await;
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; img-src data:"
        );
        assert_eq!(
            headers.get_all(header::REFERRER_POLICY).iter().count(),
            1,
            "{headers:?}"
        );
        assert_eq!(headers[header::REFERRER_POLICY], "same-origin");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
}
