//! Times `Store::insert_reports` alone at several batch sizes: `cargo run --release --example store_batch -- URL`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::DateTime;
use outagewatch::domain::geo::CountryCode;
use outagewatch::domain::report::{Catalog, Problem};
use outagewatch::store::{self, ConnectOptions, Fingerprint, NewReport};
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("database URL");
    let options = ConnectOptions {
        max_connections: 4,
        read_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = store::connect(&url, &options).await.unwrap();
    store.migrate().await.unwrap();
    let catalog = Catalog::new([("x", "X")]);
    let now = outagewatch::runtime::clock::now();
    let window =
        DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(900), 0).unwrap();
    let mut n = 0u64;
    for size in std::env::args()
        .skip(2)
        .map(|s| s.parse::<usize>().unwrap())
    {
        let rounds = (20_000 / size).clamp(5, 2000);
        let mut in_store = Duration::ZERO;
        let started = Instant::now();
        for _ in 0..rounds {
            let batch: Vec<NewReport> = (0..size)
                .map(|_| {
                    n += 1;
                    NewReport {
                        id: Uuid::new_v4(),
                        client_id: true,
                        received_at: now,
                        service: catalog.services()[0].slug.clone(),
                        country: CountryCode::parse("PK").unwrap(),
                        city: Some("Lahore"),
                        problem: Problem::App,
                        fingerprint: Fingerprint((n as u128).to_le_bytes()),
                        dedup_window_start: window,
                        network: None,
                    }
                })
                .collect();
            let t = Instant::now();
            store
                .insert_reports(&batch, outagewatch::runtime::clock::now())
                .await
                .unwrap();
            in_store += t.elapsed();
        }
        println!("in store: {:?} per batch", in_store / rounds as u32);
        let per_batch = started.elapsed() / rounds as u32;
        println!(
            "batch {size:5}: {per_batch:>10.2?} per batch, {:>7.1} µs per report, {:>8.0} reports/s",
            per_batch.as_secs_f64() * 1e6 / size as f64,
            size as f64 / per_batch.as_secs_f64()
        );
    }
}
