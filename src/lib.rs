//! outagewatch: crowdsourced outage reports in, durable per-minute counts out.
//!
//! People report "X is down for me, in Lahore, Pakistan" (JSON API); each report is validated
//! against the service catalog and the city gazetteer, fingerprinted (a keyed hash, never the
//! raw address), queued, and group-committed with its dedup claim and minute rollups in one
//! transaction before it is acknowledged.
//!
//! Reading order: [`report`], [`geo`] and [`domain`] (the pure domain: time buckets and the
//! rules a batch of reports counts by) → [`store`] (the narrow trait over
//! Postgres and SQLite) → [`ingest`] (queue and batch writer) → [`detect`] (the pure
//! surge-detection core: windows, baselines, surprise test, incident state machine, the
//! anomaly score and its record view, and the engine that steps every series each minute; the
//! same model scores a count CSV offline) → [`incidents`] (naming and summarising incidents) →
//! [`detector`] (the runner: `detection` steps the engine over rollups and names incidents,
//! `live` does one minute's work per `tick(now)`, `task` is the leader loop around it (the
//! only clock reader) and what an admin's redetect pauses, `redetect` recomputes a range,
//! `rebuild` restores the state after an upgrade) → [`events`]
//! (live events across replicas) → [`webhooks`] (incident events queued in the store and
//! POSTed to configured endpoints) → [`api`] (HTTP, the admin API, [`pow`] challenges) →
//! [`web`] (the pages people use: the report form and the status pages) → [`server`] (the
//! accept loop and its limits) → [`app`] (wiring and shutdown) →
//! [`import`] (loading history, behind `outagewatch import`) and [`metrics`]. The `outagewatch`
//! binary is the face over all of these: src/main.rs lists its commands, src/cli/ holds their
//! bodies.
//!
//! Beside the service, not in it: the workspace's tool crates, crates/loadgen (the load
//! generator), crates/scenario (deterministic report scenarios for the detection tests; it uses
//! this library's gazetteer and problem kinds) and crates/tools (the `outagewatch-tools` binary:
//! `loadgen`, `simulate`). The service binary links none of them.
//!
//! Dependency rule: arrows point inward. `report`, `geo` and `detect` do no I/O and never read
//! the clock (only [`clock`] does); `store` knows the domain but not HTTP; `api` and `web` know all but
//! `app`; `app` wires everything.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod detect;
pub mod detector;
pub mod domain;
pub mod events;
pub mod geo;
pub mod import;
pub mod incidents;
pub mod ingest;
pub mod metrics;
pub mod pow;
pub mod report;
pub mod server;
pub mod store;
pub mod web;
pub mod webhooks;
