//! Proof of work for the report form under surge, compatible with ALTCHA: an HMAC-signed SHA-256 puzzle with an expiry, verified here (no third-party service) and accepted once.
//!
//! A challenge is `challenge = hex(sha256(salt + number))` for a secret `number` in
//! `0..=max_number`, signed `signature = hex(hmac_sha256(key, challenge))`; the salt carries
//! `?expires=<unix seconds>`. The browser (the ALTCHA widget) finds `number` by trying them in
//! turn and sends back base64 JSON `{algorithm, challenge, number, salt, signature}`. A valid
//! solution is remembered until it expires, so it is accepted once; at most `max_remembered`
//! are kept, so memory is bounded, and while that many are live new solutions are refused.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::config::{ProofOfWorkMode, ProofOfWorkSettings};

const ALGORITHM: &str = "SHA-256";

/// A challenge as the ALTCHA widget reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"algorithm": "SHA-256",
    "challenge": "4d5b4fa6e1a51c6f2d2ee7ebbd87f1de6d1b0e0a1b2e2f4fa3c6b0cb1d1f7e2a",
    "maxnumber": 100000, "salt": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8?expires=1741600300",
    "signature": "0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9eafb"}))]
pub struct Challenge {
    /// Always `SHA-256`.
    pub algorithm: String,
    /// hex(sha256(salt + number)).
    pub challenge: String,
    /// The largest number to try.
    pub maxnumber: u64,
    /// Random hex, then `?expires=` and the unix time after which a solution is refused.
    pub salt: String,
    /// hex(hmac_sha256(key, challenge)).
    pub signature: String,
}

/// A solution as the widget sends it (base64 JSON).
#[derive(Debug, Deserialize)]
struct Solution {
    algorithm: String,
    challenge: String,
    number: u64,
    salt: String,
    signature: String,
}

/// Why a solution is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("the proof of work is not base64 JSON of an ALTCHA solution")]
    Malformed,
    #[error("the proof of work does not solve a challenge of this service")]
    Invalid,
    #[error("the challenge has expired; solve a new one")]
    Expired,
    #[error("the challenge has been used already; solve a new one")]
    Replayed,
    #[error("too many challenges are in use; retry shortly")]
    Busy,
}

/// Issues and checks challenges; shared by every request of the process.
pub struct ProofOfWork {
    mode: ProofOfWorkMode,
    key: Vec<u8>,
    max_number: u64,
    expires_seconds: i64,
    surge_requests_per_minute: u64,
    max_remembered: usize,
    used: Mutex<Used>,
    /// (minute, report requests seen in it), for `surge` mode.
    traffic: Mutex<(i64, u64)>,
}

/// Accepted challenges until they expire, oldest first.
#[derive(Default)]
struct Used {
    order: VecDeque<(i64, [u8; 32])>,
    set: HashSet<[u8; 32]>,
}

impl ProofOfWork {
    /// From the settings; without a configured secret the key is random (one process only).
    pub fn new(settings: &ProofOfWorkSettings) -> ProofOfWork {
        let key = match &settings.secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                if getrandom::fill(&mut key).is_err() {
                    tracing::error!("no randomness for the proof-of-work key");
                }
                key
            }
        };
        ProofOfWork {
            mode: settings.mode,
            key,
            max_number: settings.max_number,
            expires_seconds: i64::try_from(settings.expires_seconds).unwrap_or(i64::MAX),
            surge_requests_per_minute: settings.surge_requests_per_minute,
            max_remembered: settings.max_remembered,
            used: Mutex::new(Used::default()),
            traffic: Mutex::new((0, 0)),
        }
    }

    /// A new challenge, valid until `expires_seconds` after `now`.
    pub fn challenge(&self, now: DateTime<Utc>) -> Challenge {
        let mut random = [0u8; 24];
        if getrandom::fill(&mut random).is_err() {
            tracing::error!("no randomness for a proof-of-work challenge");
        }
        let number_bytes: [u8; 8] = random[16..].try_into().unwrap_or_default();
        let number = u64::from_le_bytes(number_bytes) % (self.max_number.saturating_add(1).max(1));
        let expires = now.timestamp().saturating_add(self.expires_seconds);
        let salt = format!("{}?expires={expires}", hex(&random[..16]));
        let challenge = hex(&puzzle(&salt, number));
        Challenge {
            algorithm: ALGORITHM.into(),
            signature: hex(&self.sign(&challenge)),
            challenge,
            maxnumber: self.max_number,
            salt,
        }
    }

    /// Checks a solution (the widget's base64 payload) at `now` and accepts it once.
    pub fn verify(&self, payload: &str, now: DateTime<Utc>) -> Result<(), PowError> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|_| PowError::Malformed)?;
        let solution: Solution = serde_json::from_slice(&json).map_err(|_| PowError::Malformed)?;
        if solution.algorithm != ALGORITHM {
            return Err(PowError::Invalid);
        }
        let signature = unhex(&solution.signature).ok_or(PowError::Invalid)?;
        let expected = self.sign(&solution.challenge);
        if !bool::from(signature.as_slice().ct_eq(expected.as_slice())) {
            return Err(PowError::Invalid);
        }
        let challenge: [u8; 32] = unhex(&solution.challenge)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(PowError::Invalid)?;
        if puzzle(&solution.salt, solution.number) != challenge {
            return Err(PowError::Invalid);
        }
        let expires = expiry_of(&solution.salt).ok_or(PowError::Invalid)?;
        if expires < now.timestamp() {
            return Err(PowError::Expired);
        }
        self.remember(challenge, expires, now.timestamp())
    }

    fn remember(&self, challenge: [u8; 32], expires: i64, now: i64) -> Result<(), PowError> {
        let mut used = self.used.lock().map_err(|_| PowError::Busy)?;
        while used.order.front().is_some_and(|(at, _)| *at < now) {
            if let Some((_, old)) = used.order.pop_front() {
                used.set.remove(&old);
            }
        }
        if used.set.contains(&challenge) {
            return Err(PowError::Replayed);
        }
        if used.set.len() >= self.max_remembered {
            return Err(PowError::Busy);
        }
        used.set.insert(challenge);
        // Expiries arrive in issue order but a solution may come back late: keep the queue
        // sorted by expiry so pruning from the front stays exact.
        let at = used.order.partition_point(|(e, _)| *e <= expires);
        used.order.insert(at, (expires, challenge));
        Ok(())
    }

    /// Counts one report request (for `surge` mode).
    pub fn note_request(&self, now: DateTime<Utc>) {
        let minute = now.timestamp().div_euclid(60);
        if let Ok(mut traffic) = self.traffic.lock() {
            if traffic.0 != minute {
                *traffic = (minute, 0);
            }
            traffic.1 += 1;
        }
    }

    /// Whether the form must carry a solved challenge now.
    pub fn required(&self, now: DateTime<Utc>) -> bool {
        match self.mode {
            ProofOfWorkMode::Off => false,
            ProofOfWorkMode::Always => true,
            ProofOfWorkMode::Surge => {
                let minute = now.timestamp().div_euclid(60);
                self.traffic.lock().is_ok_and(|traffic| {
                    // This minute's count, or the last minute's while this one is young.
                    (traffic.0 == minute || traffic.0 == minute - 1)
                        && traffic.1 > self.surge_requests_per_minute
                })
            }
        }
    }

    fn sign(&self, challenge: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(&[0]).expect("any key"));
        mac.update(challenge.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// sha256(salt + decimal number): what the browser searches for.
fn puzzle(salt: &str, number: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(number.to_string().as_bytes());
    hasher.finalize().into()
}

/// The `expires` parameter of a salt (`<random>?expires=<unix seconds>`).
fn expiry_of(salt: &str) -> Option<i64> {
    let (_, query) = salt.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("expires="))
        .and_then(|value| value.parse().ok())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Solves a challenge as the widget does (tries every number): for tests and tools.
pub fn solve(challenge: &Challenge) -> Option<String> {
    let target = unhex(&challenge.challenge)?;
    let number =
        (0..=challenge.maxnumber).find(|&n| puzzle(&challenge.salt, n)[..] == target[..])?;
    let payload = serde_json::json!({
        "algorithm": challenge.algorithm,
        "challenge": challenge.challenge,
        "number": number,
        "salt": challenge.salt,
        "signature": challenge.signature,
    });
    Some(base64::engine::general_purpose::STANDARD.encode(payload.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn pow(extra: &str) -> ProofOfWork {
        let settings = Settings::from_toml(&[&format!(
            "[proof_of_work]\nmode = \"surge\"\nsecret = \"test secret key\"\nmax_number = 2000\n\
             expires_seconds = 60\nsurge_requests_per_minute = 2\n{extra}"
        )])
        .unwrap();
        ProofOfWork::new(&settings.proof_of_work)
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_solved_challenge_is_accepted_once() {
        let pow = pow("");
        let challenge = pow.challenge(at(0));
        assert_eq!(challenge.algorithm, "SHA-256");
        assert_eq!(challenge.maxnumber, 2000);
        assert!(challenge.salt.ends_with("?expires=1741600060"));
        let solution = solve(&challenge).unwrap();
        assert_eq!(pow.verify(&solution, at(10)), Ok(()));
        assert_eq!(pow.verify(&solution, at(11)), Err(PowError::Replayed));
    }

    #[test]
    fn expired_forged_and_garbled_solutions_are_refused() {
        let pow = pow("");
        let challenge = pow.challenge(at(0));
        let solution = solve(&challenge).unwrap();
        assert_eq!(pow.verify(&solution, at(61)), Err(PowError::Expired));
        // Another key's challenge: the signature does not match.
        let other = ProofOfWork::new(&ProofOfWorkSettings {
            secret: Some("another key".to_owned().into()),
            ..Settings::from_toml(&[]).unwrap().proof_of_work
        });
        let foreign = solve(&ProofOfWork::challenge(&other, at(0))).unwrap();
        assert_eq!(pow.verify(&foreign, at(1)), Err(PowError::Invalid));
        // A wrong number for a genuine challenge.
        let json = base64::engine::general_purpose::STANDARD
            .decode(&solution)
            .unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["number"] = serde_json::json!(value["number"].as_u64().unwrap() + 1);
        let wrong = base64::engine::general_purpose::STANDARD.encode(value.to_string());
        assert_eq!(pow.verify(&wrong, at(1)), Err(PowError::Invalid));
        assert_eq!(pow.verify("not base64!", at(1)), Err(PowError::Malformed));
    }

    #[test]
    fn remembered_solutions_are_bounded_and_forgotten_when_they_expire() {
        let pow = pow("max_remembered = 2\n");
        let solutions: Vec<String> = (0..3)
            .map(|_| solve(&pow.challenge(at(0))).unwrap())
            .collect();
        assert_eq!(pow.verify(&solutions[0], at(1)), Ok(()));
        assert_eq!(pow.verify(&solutions[1], at(1)), Ok(()));
        assert_eq!(pow.verify(&solutions[2], at(1)), Err(PowError::Busy));
        // Once the first two have expired they are forgotten; the third is still valid at 60.
        let late = solve(&pow.challenge(at(30))).unwrap();
        assert_eq!(pow.verify(&late, at(61)), Ok(()));
    }

    #[test]
    fn surge_mode_requires_a_challenge_only_above_the_request_rate() {
        let pow = pow("");
        assert!(!pow.required(at(0)));
        for _ in 0..3 {
            pow.note_request(at(1));
        }
        assert!(pow.required(at(2)));
        assert!(pow.required(at(61)));
        assert!(!pow.required(at(130)));
    }
}
