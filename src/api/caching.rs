//! Polling done right for the read endpoints: a strong `ETag` over the body, `304 Not Modified`
//! for a matching `If-None-Match`, a short `Cache-Control`, and a few seconds of shared answer
//! cache so many dashboards polling one view cost one query per interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Read answers are fresh for this long; dashboards poll about as often.
const CACHE_CONTROL: &str = "public, max-age=15";

/// Largest body the middleware hashes; larger answers pass through without an ETag.
const MAX_TAGGED_BODY: usize = 16 * 1024 * 1024;

/// Whether an `If-None-Match` header value lists `tag` (or is `*`); weak tags compare equal.
fn matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

/// Tags successful GET/HEAD answers and answers 304 when the client already has them.
pub async fn etag(request: Request, next: Next) -> Response {
    let cacheable = matches!(*request.method(), Method::GET | Method::HEAD);
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    if !cacheable || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The read cache tags an answer once when it computes it; only uncached answers are
    // read and hashed here.
    let known = parts
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (tag, body) = match known {
        Some(tag) => (tag, body),
        None => {
            let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED_BODY).await else {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the answer could not be read",
                )
                    .into_response();
            };
            let tag = tag_of(&bytes);
            if let Ok(value) = HeaderValue::from_str(&tag) {
                parts.headers.insert(header::ETAG, value);
            }
            (tag, Body::from(bytes))
        }
    };
    parts.headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    if if_none_match.is_some_and(|v| matches(&v, &tag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, body)
}

/// The strong entity tag of an answer body: the first 128 bits of its BLAKE3 hash, quoted.
fn tag_of(body: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(body).to_hex()[..32])
}

/// Recent answers of the read endpoints, by request target, `Accept` and `Accept-Encoding`.
///
/// Read answers are already declared fresh for `max-age` to clients and proxies; the cache
/// holds each for `ttl` (shorter). While one request computes an answer, the others asking
/// for the same one wait for it instead of querying the store too; once an answer is older
/// than `ttl` (but not twice that), requests still get it at once while one of them
/// refreshes it in the background, so no poller waits on a recomputation.
pub struct ReadCache {
    answers: Option<quick_cache::sync::Cache<String, Arc<Answer>, AnswerWeight>>,
    ttl: Duration,
}

/// One buffered answer, when it was computed, and whether a refresh is under way.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    computed: Instant,
    refreshing: AtomicBool,
}

/// Weighs answers by their size, so the cache's capacity is in bytes.
#[derive(Clone)]
struct AnswerWeight;

impl quick_cache::Weighter<String, Arc<Answer>> for AnswerWeight {
    fn weight(&self, key: &String, answer: &Arc<Answer>) -> u64 {
        (key.len() + answer.body.len() + 256) as u64
    }
}

/// Errors (a 503 while the store is down, say) are shared at most this long.
const MAX_ERROR_TTL: Duration = Duration::from_secs(1);

/// What a cached answer is good for.
#[derive(Debug, PartialEq)]
enum Age {
    /// Younger than the ttl: serve it.
    Fresh,
    /// Older, but younger than twice the ttl: serve it and refresh it in the background.
    Stale,
    /// Too old to serve.
    Expired,
}

impl ReadCache {
    /// A cache keeping answers for `ttl` within `capacity_bytes`; a zero `ttl` turns it off.
    pub fn new(ttl: Duration, capacity_bytes: u64) -> ReadCache {
        let answers = (!ttl.is_zero() && capacity_bytes > 0).then(|| {
            let estimated_items = (capacity_bytes / 16_384).clamp(16, 65_536) as usize;
            quick_cache::sync::Cache::with_weighter(estimated_items, capacity_bytes, AnswerWeight)
        });
        ReadCache { answers, ttl }
    }

    fn age(&self, answer: &Answer) -> Age {
        let age = answer.computed.elapsed();
        if answer.status != StatusCode::OK {
            // An error is never served stale: the next request should try again.
            return if age < self.ttl.min(MAX_ERROR_TTL) {
                Age::Fresh
            } else {
                Age::Expired
            };
        }
        if age < self.ttl {
            Age::Fresh
        } else if age < 2 * self.ttl {
            Age::Stale
        } else {
            Age::Expired
        }
    }
}

impl Answer {
    /// Runs the rest of the stack and buffers its answer.
    async fn compute(request: Request, next: Next) -> Result<Answer, Response> {
        let (parts, body) = next.run(request).await.into_parts();
        let body = axum::body::to_bytes(body, MAX_TAGGED_BODY)
            .await
            .map_err(|_| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the answer could not be read",
                )
                    .into_response()
            })?;
        let mut headers = parts.headers;
        if parts.status == StatusCode::OK {
            if let Ok(tag) = HeaderValue::from_str(&tag_of(&body)) {
                headers.insert(header::ETAG, tag);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers,
            body,
            computed: Instant::now(),
            refreshing: AtomicBool::new(false),
        })
    }

    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Answers a GET from the cache when a fresh (or refreshing) answer is there, else computes
/// and keeps it.
pub async fn cached(State(cache): State<Arc<ReadCache>>, request: Request, next: Next) -> Response {
    let Some(answers) = cache.answers.as_ref() else {
        return next.run(request).await;
    };
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    // The answer depends on the format asked for (JSON or CSV) and, outside the compression
    // layer, on the encoding: a gzipped answer is kept gzipped and sent as it is.
    let key = {
        let header_text = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        format!(
            "{target}\n{}\n{}",
            header_text(header::ACCEPT),
            header_text(header::ACCEPT_ENCODING)
        )
    };
    let guard = loop {
        match answers.get_value_or_guard_async(&key).await {
            Ok(answer) => match cache.age(&answer) {
                Age::Fresh => return answer.response(),
                Age::Stale => {
                    if !answer.refreshing.swap(true, Ordering::AcqRel) {
                        let cache = Arc::clone(&cache);
                        let stale = Arc::clone(&answer);
                        tokio::spawn(async move {
                            match Answer::compute(request, next).await {
                                Ok(fresh) if fresh.status == StatusCode::OK => {
                                    if let Some(answers) = cache.answers.as_ref() {
                                        answers.insert(key, Arc::new(fresh));
                                    }
                                }
                                // Keep serving the stale answer; a later request tries again.
                                _ => stale.refreshing.store(false, Ordering::Release),
                            }
                        });
                    }
                    return answer.response();
                }
                Age::Expired => {
                    answers.remove(&key);
                }
            },
            Err(guard) => break guard,
        }
    };
    match Answer::compute(request, next).await {
        Ok(answer) => {
            let answer = Arc::new(answer);
            let response = answer.response();
            let _ = guard.insert(answer);
            response
        }
        // Dropping the guard lets a waiting request compute its own answer.
        Err(response) => response,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(status: StatusCode, age: Duration) -> Answer {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            computed: Instant::now().checked_sub(age).unwrap(),
            refreshing: AtomicBool::new(false),
        }
    }

    #[test]
    fn answers_are_fresh_for_the_ttl_then_served_stale_while_refreshing_errors_never() {
        let cache = ReadCache::new(Duration::from_secs(5), 1 << 20);
        let ok = |seconds| cache.age(&answer(StatusCode::OK, Duration::from_secs(seconds)));
        assert_eq!(ok(1), Age::Fresh);
        assert_eq!(ok(6), Age::Stale);
        assert_eq!(ok(11), Age::Expired);
        let error = |millis| {
            cache.age(&answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_millis(millis),
            ))
        };
        assert_eq!(error(500), Age::Fresh);
        assert_eq!(error(1_500), Age::Expired);
    }

    #[test]
    fn if_none_match_lists_star_and_weak_tags_match() {
        assert!(matches("\"abc\"", "\"abc\""));
        assert!(matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(matches("*", "\"abc\""));
        assert!(!matches("\"abd\"", "\"abc\""));
        assert!(!matches("abc", "\"abc\""));
    }
}
