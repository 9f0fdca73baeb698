//! Measures how many series·steps per second the detector core sustains on one core: `cargo run --release --example detect_bench`.
//!
//! Usage: `cargo run --release --example detect_bench -- [SERIES] [MINUTES]` (default 10,000 series × 2,880 minutes); counts are a
//! cheap deterministic pseudo-random daily rhythm with an occasional surge, so the surprise
//! test and the incident state machine both do real work.

use std::time::Instant;

use outagewatch::detect::{DetectorConfig, SeriesDetector};

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let minutes: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_880);
    let config = DetectorConfig::default();
    let mut detectors: Vec<SeriesDetector> = (0..series)
        .map(|_| SeriesDetector::new(&config, 60))
        .collect();
    let start_at: i64 = 1_740_960_000;
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut events = 0usize;
    let started = Instant::now();
    for minute in 0..minutes {
        let at = start_at + minute * 60;
        let hour = (minute / 60) % 24;
        let rhythm = if (8..22).contains(&hour) { 3.0 } else { 1.0 };
        for (i, detector) in detectors.iter_mut().enumerate() {
            // xorshift64: fast, deterministic, good enough for load.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let size = 1.0 + (i % 50) as f64;
            let noise = (state % 1_000) as f64 / 1_000.0;
            let surge = if minute % 997 == (i as i64 % 997) && minute > 1_440 {
                20.0
            } else {
                1.0
            };
            let count = (size * rhythm * surge * (0.5 + noise)).floor();
            if detector.step(at, count, None).event.is_some() {
                events += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let steps = series as f64 * minutes as f64;
    println!(
        "{series} series x {minutes} steps in {seconds:.2} s: {:.0} series-steps/s ({events} events); \
         100,000 series take {:.2} s per minute",
        steps / seconds,
        100_000.0 * seconds / steps
    );
}
