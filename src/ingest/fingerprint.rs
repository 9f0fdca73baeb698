//! Reporter and network fingerprints: keyed BLAKE3 hashes of client address and user agent, and of the address's /24 (IPv4) or /48 (IPv6), under a secret that rotates daily.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::{Fingerprint, Store, StoreError};

/// Hashes reporters under the day's secret, which lives in the store so every replica agrees.
pub struct Fingerprinter {
    store: Arc<dyn Store>,
    /// Fetching the day's secret is request work: it gives up after this long.
    deadline: Duration,
    current: RwLock<Option<(NaiveDate, [u8; 32])>>,
}

impl Fingerprinter {
    /// A fingerprinter that fetches (or creates) each day's secret on first use, giving up
    /// with `Unavailable` after `deadline`.
    pub fn new(store: Arc<dyn Store>, deadline: Duration) -> Fingerprinter {
        Fingerprinter {
            store,
            deadline,
            current: RwLock::new(None),
        }
    }

    /// The fingerprint of a reporter at `now`; the raw address goes no further than this hash.
    pub async fn fingerprint(
        &self,
        address: IpAddr,
        user_agent: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Fingerprint, StoreError> {
        let key = self.key_for(now.date_naive()).await?;
        Ok(fingerprint_with(&key, address, user_agent))
    }

    /// The fingerprint of the network `address` is in at `now`: the same keyed hash over its
    /// /24 or /48 prefix, so the prefix itself is never stored.
    pub async fn network(
        &self,
        address: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Fingerprint, StoreError> {
        let key = self.key_for(now.date_naive()).await?;
        Ok(network_fingerprint_with(&key, address))
    }

    async fn key_for(&self, day: NaiveDate) -> Result<[u8; 32], StoreError> {
        if let Ok(guard) = self.current.read() {
            if let Some((cached_day, key)) = *guard {
                if cached_day == day {
                    return Ok(key);
                }
            }
        }
        let mut candidate = [0u8; 32];
        getrandom::fill(&mut candidate).map_err(|e| {
            StoreError::Unavailable(format!("no randomness for the reporter secret: {e}"))
        })?;
        let key = tokio::time::timeout(self.deadline, self.store.reporter_secret(day, candidate))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the database did not answer within {} ms",
                    self.deadline.as_millis()
                ))
            })??;
        if let Ok(mut guard) = self.current.write() {
            *guard = Some((day, key));
        }
        Ok(key)
    }
}

/// The keyed hash itself: address bytes, a separator, then the user agent.
pub fn fingerprint_with(key: &[u8; 32], address: IpAddr, user_agent: &[u8]) -> Fingerprint {
    let mut hasher = blake3::Hasher::new_keyed(key);
    match address {
        IpAddr::V4(v4) => hasher.update(&v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => hasher.update(&v6.octets()),
    };
    hasher.update(&[0xff]);
    hasher.update(user_agent);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Fingerprint(out)
}

/// The keyed hash of an address's network: its first 24 bits (IPv4, also when IPv4-mapped) or
/// 48 bits (IPv6), with a tag of its own so it never equals a reporter fingerprint.
pub fn network_fingerprint_with(key: &[u8; 32], address: IpAddr) -> Fingerprint {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"network\0");
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            hasher.update(&[6]).update(&v6.octets()[..6]);
        }
        IpAddr::V6(v6) => {
            let v4 = v6
                .to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            hasher.update(&[4]).update(&v4.octets()[..3]);
        }
        IpAddr::V4(v4) => {
            hasher.update(&[4]).update(&v4.octets()[..3]);
        }
    };
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Fingerprint(out)
}

/// The fingerprint of an imported row's opaque `reporter` string; stable across runs so a
/// re-import dedups the same way.
pub fn fingerprint_of_reporter(reporter: &str) -> Fingerprint {
    let hash = blake3::derive_key("outagewatch 2026 imported reporter", reporter.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    Fingerprint(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_reporter_under_the_same_key_has_the_same_fingerprint() {
        let key = [7u8; 32];
        let a = fingerprint_with(
            &key,
            "203.0.113.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            b"Firefox",
        );
        let b = fingerprint_with(
            &key,
            "203.0.113.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            b"Firefox",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn a_new_key_or_another_agent_changes_the_fingerprint() {
        let address = IpAddr::from([203, 0, 113, 9]);
        let base = fingerprint_with(&[7u8; 32], address, b"Firefox");
        assert_ne!(base, fingerprint_with(&[8u8; 32], address, b"Firefox"));
        assert_ne!(base, fingerprint_with(&[7u8; 32], address, b"Chrome"));
        assert_ne!(
            base,
            fingerprint_with(&[7u8; 32], IpAddr::from([203, 0, 113, 10]), b"Firefox")
        );
    }

    #[test]
    fn addresses_share_a_network_fingerprint_exactly_within_their_24_or_48() {
        let key = [7u8; 32];
        let net = |text: &str| network_fingerprint_with(&key, text.parse().unwrap());
        assert_eq!(net("203.0.113.9"), net("203.0.113.250"));
        assert_eq!(net("203.0.113.9"), net("::ffff:203.0.113.77"));
        assert_ne!(net("203.0.113.9"), net("203.0.114.9"));
        assert_eq!(net("2001:db8:7:1::1"), net("2001:db8:7:ffff::2"));
        assert_ne!(net("2001:db8:7::1"), net("2001:db8:8::1"));
        assert_ne!(
            network_fingerprint_with(&[8u8; 32], "203.0.113.9".parse().unwrap()),
            net("203.0.113.9")
        );
        let address: IpAddr = "203.0.113.9".parse().unwrap();
        assert_ne!(net("203.0.113.9"), fingerprint_with(&key, address, b""));
    }

    #[test]
    fn the_fingerprint_is_not_the_address() {
        let fingerprint = fingerprint_with(&[0u8; 32], IpAddr::from([10, 0, 0, 1]), b"");
        assert!(!fingerprint.0.windows(4).any(|w| w == [10, 0, 0, 1]));
    }
}
