//! The domain's pure rules that the store and ingest share: series, time buckets, and how a batch of
//! reports counts (dedup candidates, network quotas, rollup increments, outcomes). No I/O, no
//! clock: time is an argument.

pub mod buckets;
pub mod counting;
pub mod geo;
pub mod incidents;
pub mod report;
pub mod retention;
pub mod series;
