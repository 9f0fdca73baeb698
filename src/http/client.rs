//! Who is asking: the client address (socket peer, or X-Forwarded-For from trusted proxies only) and its rate limit.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::ApiError;

/// The address a request is attributed to; only ever hashed, never stored or logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How client addresses are read and limited.
pub struct ClientPolicy {
    trusted_proxies: Vec<IpNet>,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Most addresses the limiter tracks at once.
    max_clients: usize,
    /// When a full table was last swept, so a full table costs one sweep a second, not one a request.
    last_full_sweep: Mutex<Option<Instant>>,
}

/// Why a request is not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address is over its rate; retry after this many seconds.
    RateLimited(u64),
    /// The limiter tracks `max_clients` addresses already, none of them idle.
    TooManyClients,
}

/// How often a full limiter table may be swept.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl ClientPolicy {
    /// A policy trusting `trusted_proxies`' X-Forwarded-For and allowing `per_minute` requests
    /// per address (bursts of `burst`, 0 = the per-minute figure) for at most `max_clients`
    /// addresses at once; `per_minute = 0` turns limiting off.
    pub fn new(
        trusted_proxies: Vec<IpNet>,
        per_minute: u32,
        burst: u32,
        max_clients: usize,
    ) -> ClientPolicy {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        ClientPolicy {
            trusted_proxies,
            limiter,
            max_clients,
            last_full_sweep: Mutex::new(None),
        }
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the rightmost
    /// X-Forwarded-For entry that is not itself a trusted proxy (entries further left are
    /// whatever the client chose to send, so they are never believed).
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for entry in forwarded.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(addr) if self.is_trusted(addr) => continue,
                Ok(addr) => return addr,
                // A garbled hop cannot be attributed further: stop at the last proxy we trust.
                Err(_) => return peer,
            }
        }
        peer
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }

    /// Takes one request from the address's bucket (an IPv6 address shares its /64's, since a
    /// host is handed a whole /64).
    pub fn admit(&self, addr: IpAddr) -> Result<(), Refusal> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= self.max_clients && !self.room_after_sweep(limiter) {
            return Err(Refusal::TooManyClients);
        }
        limiter
            .check_key(&limiter_key(canonical(addr)))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Refusal::RateLimited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            })
    }

    /// Sweeps a full table (at most once a second) and tells whether it has room now.
    fn room_after_sweep(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>) -> bool {
        if let Ok(mut last) = self.last_full_sweep.lock() {
            if last.is_none_or(|at| at.elapsed() >= FULL_SWEEP_EVERY) {
                *last = Some(Instant::now());
                limiter.retain_recent();
            }
        }
        limiter.len() < self.max_clients
    }

    /// How many addresses the limiter tracks now.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    /// Forgets addresses whose buckets are full again, so the limiter's memory tracks active clients only.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The limiter's key: an IPv4 address, or an IPv6 address's /64.
fn limiter_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// Resolves a request's client address and takes one request from its rate-limit bucket:
/// what every report route (the JSON API and the web form) does first.
fn admit_request(policy: &ClientPolicy, request: &Request) -> Result<ClientAddr, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let client = policy.client_addr(peer, request.headers());
    if let Err(refusal) = policy.admit(client) {
        let error = match refusal {
            Refusal::RateLimited(retry_after_seconds) => ApiError::RateLimited {
                retry_after_seconds: retry_after_seconds.max(1),
            },
            Refusal::TooManyClients => ApiError::Unavailable {
                detail: "too many clients are reporting at once; retry shortly".into(),
                retry_after_seconds: 1,
                ids: Vec::new(),
            },
        };
        crate::runtime::metrics::METRICS.rejection(error.reason());
        return Err(error);
    }
    Ok(ClientAddr(canonical(client)))
}

/// Middleware for report routes: resolves the client address, applies the rate limit, and
/// hands the address to the handler as an extension.
pub async fn admit_client(
    State(policy): State<Arc<ClientPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    admit_then(&policy, request, next, IntoResponse::into_response).await
}

/// Runs `next` for an admitted request, with its [`ClientAddr`] as an extension; answers a
/// refused one with `refuse` (a problem document for the API, a page for the form).
pub async fn admit_then(
    policy: &ClientPolicy,
    mut request: Request,
    next: Next,
    refuse: impl FnOnce(ApiError) -> Response,
) -> Response {
    match admit_request(policy, &request) {
        Ok(client) => {
            request.extensions_mut().insert(client);
            next.run(request).await
        }
        Err(refused) => refuse(refused),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", xff.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_ignored_without_trusted_proxies() {
        let policy = ClientPolicy::new(vec![], 0, 0, 10);
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(policy.client_addr(peer, &headers("203.0.113.1")), peer);
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_entry_is_the_client() {
        let policy = ClientPolicy::new(vec!["10.0.0.0/8".parse().unwrap()], 0, 0, 10);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let client = policy.client_addr(peer, &headers("6.6.6.6, 203.0.113.1, 10.9.9.9"));
        assert_eq!(client, "203.0.113.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_forwarded_header_from_an_untrusted_peer_is_not_believed() {
        let policy = ClientPolicy::new(vec!["10.0.0.0/8".parse().unwrap()], 0, 0, 10);
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(policy.client_addr(peer, &headers("10.0.0.1")), peer);
    }

    #[test]
    fn the_limit_allows_the_burst_then_refuses_with_a_wait() {
        let policy = ClientPolicy::new(vec![], 60, 3, 10);
        let addr: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(
            (0..3)
                .map(|_| policy.admit(addr).is_ok())
                .collect::<Vec<_>>(),
            [true, true, true]
        );
        assert_eq!(policy.admit(addr), Err(Refusal::RateLimited(1)));
        assert!(policy.admit("203.0.113.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn an_ipv6_host_cannot_escape_its_limit_by_changing_addresses_within_its_64() {
        let policy = ClientPolicy::new(vec![], 60, 2, 10);
        let first: Vec<bool> = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]
            .iter()
            .map(|a| policy.admit(a.parse().unwrap()).is_ok())
            .collect();
        assert_eq!(first, [true, true, false]);
        assert!(policy.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(policy.tracked_clients(), 2);
    }

    #[test]
    fn a_full_table_refuses_new_requests_and_never_grows_past_its_bound() {
        let policy = ClientPolicy::new(vec![], 60, 60, 3);
        let outcomes: Vec<Result<(), Refusal>> = (1..=5)
            .map(|i| policy.admit(IpAddr::from([203, 0, 113, i])))
            .collect();
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err(Refusal::TooManyClients),
                Err(Refusal::TooManyClients)
            ]
        );
        assert_eq!(policy.tracked_clients(), 3);
    }
}
