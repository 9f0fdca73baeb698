//! Embedded files sent as they are stored, gzipped, to a client that accepts gzip, and
//! decompressed for one that does not (the docs page's assets and the pages' assets).

use std::borrow::Cow;
use std::io::Read;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Whether `Accept-Encoding` allows gzip (by name or `*`, with a non-zero weight).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// An embedded gzipped file as it is to a client that accepts gzip, decompressed to one that
/// does not (the docs assets and the pages' assets).
pub fn send_gzipped(
    headers: &HeaderMap,
    gzipped: &'static [u8],
    content_type: &'static str,
    cache_control: &'static str,
) -> Result<Response, ApiError> {
    let accepted = accepts_gzip(headers);
    let body: Cow<'static, [u8]> = if accepted {
        Cow::Borrowed(gzipped)
    } else {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(gzipped)
            .read_to_end(&mut plain)
            .map_err(|e| ApiError::Internal(format!("embedded {content_type} file: {e}")))?;
        Cow::Owned(plain)
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            ),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
        ],
        body,
    )
        .into_response();
    if accepted {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn gzip_is_accepted_by_name_or_star_unless_weighted_zero() {
        assert!(accepts_gzip(&accept("gzip, deflate, br")));
        assert!(accepts_gzip(&accept("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&accept("*")));
        assert!(!accepts_gzip(&accept("gzip;q=0")));
        assert!(!accepts_gzip(&accept("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
