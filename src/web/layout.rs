//! The frame every page shares (document head, navigation, footer) and the error pages, so a failure a person meets is a page, not a problem document.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::assets;
use crate::http::ApiError;

/// What a page needs besides the site's own stylesheet and script.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Extras {
    None,
    /// uPlot, for a chart.
    Chart,
}

/// A whole page: `title` names it in the tab, `page` tells the script which page it is on.
pub(super) fn page(title: &str, page: &str, extras: Extras, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · outagewatch" }
                link rel="icon" type="image/svg+xml" href=(assets::FAVICON.path());
                link rel="stylesheet" href=(assets::SITE_CSS.path());
                @if extras == Extras::Chart {
                    link rel="stylesheet" href=(assets::UPLOT_CSS.path());
                    script src=(assets::UPLOT_JS.path()) defer {}
                }
                script src=(assets::SITE_JS.path()) defer {}
            }
            body data-page=(page) {
                a.skip href="#main" { "Skip to content" }
                header.site {
                    nav aria-label="Site" {
                        a.brand href="/" { "outagewatch" }
                        a href="/" { "Report a problem" }
                        a href="/status" { "All services" }
                    }
                }
                main #main tabindex="-1" { (main) }
                footer.site {
                    p {
                        "Counts are reports people sent us, one per person per service every 15 minutes. "
                        a href="/api/docs" { "The data is open" } "."
                    }
                }
            }
        }
    }
}

/// An HTML answer with a status; the security headers come from the pages' middleware.
pub(super) fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Pages show live numbers: revalidate every time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// An [`ApiError`] met while building a page, answered as a page with the same status.
#[derive(Debug)]
pub(super) struct PageError(pub(super) ApiError);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, text, retry_after) = match &self.0 {
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing at this address. It may have been mistyped, or what it showed is gone.".to_owned(),
                None,
            ),
            ApiError::RateLimited {
                retry_after_seconds,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many reports from your connection",
                format!("Please try again in {} seconds.", retry_after_seconds),
                Some(*retry_after_seconds),
            ),
            ApiError::Unavailable {
                retry_after_seconds,
                ..
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "We're busy right now",
                "We couldn't do that just now. Please try again in a moment.".to_owned(),
                Some(*retry_after_seconds),
            ),
            ApiError::InvalidParameters(_) | ApiError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "That address isn't right",
                "Part of this address is not something we know. Start again from the list of services.".to_owned(),
                None,
            ),
            other => {
                tracing::error!(error = %other, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side",
                    "It has been logged. Please try again later.".to_owned(),
                    None,
                )
            }
        };
        let markup = page(
            heading,
            "error",
            Extras::None,
            html! {
                h1 { (heading) }
                p { (text) }
                p { a href="/status" { "See the status of all services" } }
            },
        );
        let mut response = respond(status, markup);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A time as pages show it: `2025-03-10 09:46 UTC`, in a `<time>` element.
pub(super) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) }
    }
}

/// A count with thousands separators: `40,000`.
pub(super) fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if n < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_in_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(40_000), "40,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-2_500), "-2,500");
    }
}
