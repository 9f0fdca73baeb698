//! One keep-alive connection's loop: send a request, read its whole answer, account for it, and retry what the server could not take, until the run ends.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::plan::Plan;
use crate::stats::ConnStats;

/// How long one TCP connect may take before it counts as a transport error.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take, from sending to the end of its answer's body.
///
/// This also bounds how far past `warmup + duration` a run can go.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before reconnecting after a failed connect, so a dead server is not hammered.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest `Retry-After` honoured; a longer one would stall a connection for most of a run.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// Wait after a 429 or 503 that carries no usable `Retry-After`.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_millis(100);

/// A connection's send times in open-loop mode.
#[derive(Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) next: Instant,
    pub(crate) every: Duration,
}

/// The run's start, the start of its measuring phase, and its end.
#[derive(Clone, Copy)]
pub(crate) struct Times {
    pub(crate) start: Instant,
    pub(crate) measure_start: Instant,
    pub(crate) end: Instant,
}

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One closed-loop connection: send, read the whole answer, account for it, repeat until
/// `end`; reconnects when the connection breaks.
pub(crate) async fn connection_loop(
    plan: Arc<Plan>,
    times: Times,
    mut schedule: Option<Schedule>,
) -> ConnStats {
    let Times {
        start,
        measure_start,
        end,
    } = times;
    let mut stats = ConnStats::new();
    let mut rng = SmallRng::from_entropy();
    let mut buf = BytesMut::new();
    let mut ids = Vec::with_capacity(plan.batch);
    // A request answered 429/503 or lost to a transport error is resent with the same ids
    // and reporter, so the server's idempotency settles whether it was stored.
    let mut pending: Option<(Bytes, HeaderValue)> = None;
    // One timer per connection enforces REQUEST_TIMEOUT; see `within`.
    let mut watchdog = pin!(tokio::time::sleep(REQUEST_TIMEOUT));

    'connect: while Instant::now() < end {
        let connect_deadline = end.min(Instant::now() + CONNECT_TIMEOUT);
        let connecting = Instant::now();
        let stream =
            match tokio::time::timeout_at(connect_deadline, TcpStream::connect(plan.addr)).await {
                Ok(Ok(stream)) => stream,
                // Cut short by the end of the run rather than failed.
                Err(_) if Instant::now() >= end => break,
                Ok(Err(_)) | Err(_) => {
                    stats.transport_errors += 1;
                    stats.note(&plan, start, connecting, 0);
                    let retry_at = end.min(Instant::now() + RECONNECT_BACKOFF);
                    tokio::time::sleep_until(retry_at).await;
                    continue;
                }
            };
        // Small requests back to back: Nagle would add delayed-ACK stalls to every one.
        let _ = stream.set_nodelay(true);
        // One flat write per request is cheaper than a writev of head and body.
        let handshake = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream));
        let Ok((mut sender, conn)) = handshake.await else {
            stats.transport_errors += 1;
            continue;
        };
        let mut conn = pin!(conn);
        let mut conn_done = false;

        loop {
            if Instant::now() >= end {
                break 'connect;
            }
            // A connection closed while idle (e.g. the server's keep-alive limit) lost nothing.
            if drive(conn.as_mut(), &mut conn_done, sender.ready())
                .await
                .is_err()
            {
                continue 'connect;
            }
            if let Some(slot) = schedule.as_mut() {
                // A retry waits for its Retry-After only; a new request waits for its turn.
                if pending.is_none() {
                    let due = slot.next;
                    slot.next = (due + slot.every).max(Instant::now());
                    if due >= end {
                        break 'connect;
                    }
                    drive(conn.as_mut(), &mut conn_done, tokio::time::sleep_until(due)).await;
                    if conn_done {
                        continue 'connect;
                    }
                }
            }
            let reading = !plan.reads.is_empty();
            let (body, user_agent) = match pending.take() {
                Some(retry) => retry,
                None if reading => (Bytes::new(), plan.user_agent(&mut rng)),
                None => {
                    plan.write_body(&mut rng, &mut buf, &mut ids);
                    (buf.split().freeze(), plan.user_agent(&mut rng))
                }
            };
            let mut request = Request::new(Full::new(body.clone()));
            let headers = request.headers_mut();
            headers.insert(HOST, plan.host.clone());
            headers.insert(USER_AGENT, user_agent.clone());
            if reading {
                *request.uri_mut() = plan.reads[rng.gen_range(0..plan.reads.len())].clone();
                if plan.gzip {
                    request
                        .headers_mut()
                        .insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
                }
            } else {
                *request.method_mut() = Method::POST;
                *request.uri_mut() = plan.path.clone();
                request
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }

            let started = Instant::now();
            stats.sent += 1;
            let answer = within(watchdog.as_mut(), started, async {
                let response =
                    drive(conn.as_mut(), &mut conn_done, sender.send_request(request)).await?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(parse_retry_after);
                // The body must be read to the end before the connection takes another
                // request; its content is not needed because we know which ids we sent.
                let mut body = response.into_body();
                while let Some(frame) = drive(conn.as_mut(), &mut conn_done, body.frame()).await {
                    frame?;
                }
                Ok::<_, hyper::Error>((status, retry_after))
            })
            .await;

            let Some(Ok((status, retry_after))) = answer else {
                stats.transport_errors += 1;
                stats.note(&plan, start, started, 0);
                pending = Some((body, user_agent));
                continue 'connect;
            };
            stats.note(&plan, start, started, status);
            let answered = Instant::now();
            *stats.by_status.entry(status).or_insert(0) += 1;
            let measured = started >= measure_start;
            if measured {
                stats.latencies.record(answered - started);
                stats.last_measured_answer = Some(answered);
                stats.measured_answers += 1;
            }
            match status {
                // A read is not retried: its status is the figure.
                _ if reading => {}
                200 | 201 => {
                    stats.acknowledged.extend_from_slice(&ids);
                    if measured {
                        stats.measured_acknowledged += ids.len() as u64;
                    }
                }
                429 | 503 => {
                    pending = Some((body, user_agent));
                    let wait = retry_after
                        .unwrap_or(DEFAULT_RETRY_WAIT)
                        .min(MAX_RETRY_WAIT);
                    let sleep = tokio::time::sleep_until(end.min(answered + wait));
                    drive(conn.as_mut(), &mut conn_done, sleep).await;
                }
                400..=499 => stats.rejected.extend_from_slice(&ids),
                _ => stats.unresolved.extend_from_slice(&ids),
            }
            if conn_done {
                continue 'connect;
            }
        }
    }
    if pending.is_some() {
        stats.unresolved.extend_from_slice(&ids);
    }
    stats
}

/// Polls `fut` while also driving the connection in this same task, which saves a task
/// hand-off per request compared with spawning the connection.
///
/// Once the connection has finished it is not polled again; `fut` then resolves on its own
/// (with the answer hyper already delivered, or with an error).
async fn drive<F: Future>(mut conn: Pin<&mut Conn>, conn_done: &mut bool, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if !*conn_done && conn.as_mut().poll(cx).is_ready() {
            *conn_done = true;
            return fut.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// Runs `fut` until it is done, or `None` once REQUEST_TIMEOUT has passed since `started`.
///
/// A timer per request would cost a timer-wheel insert and removal each time; instead the
/// connection's one `watchdog` stays armed and, when it fires, is re-armed to the current
/// request's deadline unless that has passed: about one timer operation per timeout period.
async fn within<F: Future>(
    mut watchdog: Pin<&mut tokio::time::Sleep>,
    started: Instant,
    fut: F,
) -> Option<F::Output> {
    let deadline = started + REQUEST_TIMEOUT;
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while watchdog.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            watchdog.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Reads a `Retry-After` given in seconds; the HTTP-date form falls back to the default.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let seconds = value.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}
