//! The load: clients on loopback addresses of their own sending batches of reports through
//! the proxy (and the surges the detector must see), retrying with the same ids until each
//! batch is acknowledged; and what the database holds of it afterwards.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outagewatch::domain::report::Problem;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::watch;
use uuid::Uuid;

use crate::topology::client_at;

/// Load client `index`'s address: 127.N.M.1, alone in its /24 (the network caps count per /24).
fn load_client_address(index: usize) -> Ipv4Addr {
    let network = 256 + index;
    Ipv4Addr::new(127, (network / 256) as u8, (network % 256) as u8, 1)
}

/// The load's size: the short form's unless `scripts/scale-out` sets larger ones.
#[derive(Debug)]
pub struct Plan {
    /// Load clients, each on its own loopback address in its own /24.
    pub clients: usize,
    /// Requests a second each client sends, retries included: under the default limit of 60 a
    /// minute per address even when one replica is left, so no client is ever refused for its
    /// own pace (the proxy's address would be, at the clients' summed rate).
    pub requests_per_second: f64,
    /// Reports per request.
    pub batch: usize,
    /// The detector's `model.open_after_minutes`: the short form opens an incident on its first
    /// surging minute; the long form keeps the default 3, so the second surge has two minutes
    /// counted by the old leader and its third by the new one.
    pub open_after_minutes: i64,
    /// How long the load goes on after the new leader opened the second surge's incident.
    pub tail_seconds: u64,
}

impl Plan {
    pub fn from_env() -> Plan {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(value) => value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
                Err(_) => default,
            }
        }
        let plan = Plan {
            clients: var("SCALE_OUT_CLIENTS", 12),
            requests_per_second: var("SCALE_OUT_REQUESTS_PER_SECOND", 0.8),
            batch: var("SCALE_OUT_BATCH", 5),
            open_after_minutes: var("SCALE_OUT_OPEN_AFTER_MINUTES", 1),
            tail_seconds: var("SCALE_OUT_TAIL_SECONDS", 0),
        };
        assert!(
            plan.requests_per_second <= 0.9,
            "{plan:?}: more than 0.9 requests a second per client meets the rate limit"
        );
        // A batch holds at most 1,000 reports, two of them the surges'.
        assert!(plan.batch <= 998, "{plan:?}: at most 998 reports a request");
        plan
    }
}

/// Switches that add a surge's report to every request.
#[derive(Default)]
pub struct Surges {
    /// X in Pakistan.
    pub a: AtomicBool,
    /// YouTube in Britain.
    pub b: AtomicBool,
}

/// What one load client sent and had acknowledged.
#[derive(Default)]
pub struct Sent {
    pub acknowledged: Vec<Uuid>,
    pub requests: u64,
    /// Answers other than 2xx by status, and connections that failed ("no answer"): each request
    /// was sent again with the same ids.
    pub retried: BTreeMap<String, u64>,
    /// Requests given up after retrying for [`GIVE_UP_AFTER`].
    pub abandoned: u64,
}

/// How long a load client retries one request before giving it up (a failure of the test).
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

const ORDINARY_SERVICES: [&str; 7] = [
    "netflix",
    "gmail",
    "discord",
    "tiktok",
    "whatsapp",
    "instagram",
    "facebook",
];
const COUNTRIES: [&str; 10] = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "NG", "MX", "ID"];

/// One load client through the proxy at `url` until `stop`: batches of ordinary reports (services
/// without history, so they open nothing) plus a report of each surge switched on, each request
/// from a new reporter (user agent); a request that fails is sent again with the same ids.
pub async fn load_client(
    index: usize,
    plan: Arc<Plan>,
    url: String,
    surges: Arc<Surges>,
    stop: watch::Receiver<bool>,
) -> Sent {
    let client = client_at(load_client_address(index));
    let period = Duration::from_secs_f64(1.0 / plan.requests_per_second);
    // Spread over one period, so that the clients do not send in step.
    let mut next = Instant::now() + period.mul_f64(index as f64 / plan.clients as f64);
    let mut sent = Sent::default();
    let mut batch_number = 0;
    while !*stop.borrow() {
        let mut reports: Vec<Value> = (0..plan.batch)
            .map(|j| {
                let k = index * 31 + batch_number * 7 + j;
                json!({
                    "service": ORDINARY_SERVICES[k % ORDINARY_SERVICES.len()],
                    "country": COUNTRIES[k / ORDINARY_SERVICES.len() % COUNTRIES.len()],
                    "problem": Problem::ALL[k % Problem::ALL.len()].as_str(),
                })
            })
            .collect();
        if surges.a.load(Ordering::SeqCst) {
            reports.push(json!({"service": "x", "country": "PK", "problem": "app"}));
        }
        if surges.b.load(Ordering::SeqCst) {
            reports.push(json!({"service": "youtube", "country": "GB", "problem": "login"}));
        }
        let ids: Vec<Uuid> = reports.iter().map(|_| Uuid::now_v7()).collect();
        for (report, id) in reports.iter_mut().zip(&ids) {
            report["id"] = json!(id);
        }
        let body = json!({ "reports": reports });
        let agent = format!("scale-out client {index} batch {batch_number}");
        let first_try = Instant::now();
        loop {
            tokio::time::sleep_until(next.into()).await;
            next = (next + period).max(Instant::now());
            sent.requests += 1;
            let answer = client
                .post(&url)
                .header("user-agent", &agent)
                .json(&body)
                .send()
                .await;
            let (failure, retry_after) = match answer {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .map(Duration::from_secs);
                    // Read to the end, so the connection is used again.
                    let whole = response.bytes().await.is_ok();
                    if status.is_success() && whole {
                        sent.acknowledged.extend(&ids);
                        break;
                    }
                    (status.as_u16().to_string(), retry_after)
                }
                Err(_) => ("no answer".to_owned(), None),
            };
            *sent.retried.entry(failure).or_default() += 1;
            if first_try.elapsed() > GIVE_UP_AFTER {
                sent.abandoned += 1;
                break;
            }
            if let Some(wait) = retry_after {
                next = next.max(Instant::now() + wait);
            }
        }
        batch_number += 1;
    }
    sent
}

/// What the database holds against what the clients had acknowledged.
#[derive(Debug)]
pub struct Stored {
    /// Rows in `reports`, and distinct ids among them.
    pub rows: i64,
    pub distinct_ids: i64,
    /// Acknowledged ids with no row.
    pub lost: i64,
    /// Rows whose id no client had acknowledged (the seeded history's).
    pub not_acknowledged: i64,
    /// Counted reports, and the minute counts' country totals (equal when nothing was counted
    /// twice or lost).
    pub counted: i64,
    pub rolled_up: i64,
}

/// What the database at `url` holds against the `acknowledged` ids (loaded into a temporary
/// table, so that millions of them compare in one query).
pub async fn stored(url: &str, acknowledged: &[Uuid]) -> Stored {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("create temporary table acknowledged (id uuid primary key)")
        .execute(&mut db)
        .await
        .unwrap();
    for chunk in acknowledged.chunks(100_000) {
        sqlx::query("insert into acknowledged select unnest($1::uuid[])")
            .bind(chunk)
            .execute(&mut db)
            .await
            .unwrap();
    }
    sqlx::query("analyze acknowledged")
        .execute(&mut db)
        .await
        .unwrap();
    let (rows, distinct_ids, lost, not_acknowledged, counted, rolled_up) = sqlx::query_as(
        "select (select count(*) from reports),
                (select count(distinct id) from reports),
                (select count(*) from acknowledged a
                  where not exists (select 1 from reports r where r.id = a.id)),
                (select count(*) from reports r
                  where not exists (select 1 from acknowledged a where a.id = r.id)),
                (select count(*) from reports where counted),
                (select coalesce(sum(count), 0)::int8 from rollups where city = '')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    Stored {
        rows,
        distinct_ids,
        lost,
        not_acknowledged,
        counted,
        rolled_up,
    }
}
