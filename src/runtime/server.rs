//! The HTTP/1 server in front of the router: an accept loop with a connection cap, a header-read (and keep-alive idle) timeout, and graceful shutdown.
//!
//! `axum::serve` offers none of these limits, so slow or idle clients could hold connections
//! (and file descriptors) without end. Here every connection holds a permit of a semaphore
//! sized `http.max_connections`; one that arrives when none is left gets a single `503` with
//! `Retry-After` and `Connection: close`, from a second pool of as many permits (beyond which it
//! is closed at once), so a flood of connections costs bounded memory. hyper closes a
//! connection that has not sent a request's headers `header_read_timeout` after it opened or
//! after its previous answer (slowloris, or an idle keep-alive connection).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::api::ApiError;

/// Pause after an accept error that is not the peer's doing (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The server's limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing their connections.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets the open
/// connections finish their requests (idle ones close at once), and returns once they are all
/// closed or `shutdown_grace` has passed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Refusals are short (one request read, one answer written), so as many again as the
    // cap is plenty; beyond that a connection is closed without an answer.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_peer_error(&error) {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(stream, &builder, &refusals);
            continue;
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                // Handlers read the socket's peer as axum's `serve` would hand it to them.
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends only its own connection.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "connections still open after the shutdown grace period are closed"
        );
    }
}

/// Answers a connection over the cap with one 503 and closes it, if a refusal permit is free.
fn refuse(stream: TcpStream, builder: &http1::Builder, refusals: &Arc<Semaphore>) {
    crate::runtime::metrics::METRICS.rejection("too-many-connections");
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let connection = builder.serve_connection(
        TokioIo::new(stream),
        hyper::service::service_fn(|_request: Request<Incoming>| async {
            Ok::<_, Infallible>(overloaded())
        }),
    );
    tokio::spawn(async move {
        let _ = connection.await;
        drop(permit);
    });
}

/// The answer to a connection over the cap.
fn overloaded() -> Response {
    let mut response = ApiError::Unavailable {
        detail: "the server has too many open connections; retry shortly".into(),
        retry_after_seconds: 1,
        ids: Vec::new(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Binds the listening socket with a backlog that absorbs a burst of connects (the default
/// 1024 drops SYNs when a thousand clients connect at once).
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: u32 = 4096;

/// Accept errors that concern one connection only (the peer gave up), not the listener.
fn is_peer_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
