//! outagewatch: crowdsourced outage reports in, durable per-minute counts out.
//!
//! People report "X is down for me, in Lahore, Pakistan" (JSON API or the web form); each report
//! is validated against the service catalog and the city gazetteer, fingerprinted (a keyed
//! hash, never the raw address), queued, and group-committed with its dedup claim and minute
//! rollups in one transaction before it is acknowledged. A detector turns the minute counts
//! into incidents, which the API, the pages, a live event stream and webhooks serve.
//!
//! The parts, one folder each (`docs/architecture.md` draws the arrows between them):
//! - [`domain`]: the pure domain: [`domain::report`] (a report, parsed), [`domain::geo`]
//!   (countries and the city gazetteer), [`domain::incidents`] (naming and summarising
//!   incidents), [`domain::series`], [`domain::buckets`], [`domain::counting`] (how a batch
//!   of reports counts) and [`domain::retention`] (which days are past their age). No I/O,
//!   no clock.
//! - [`detect`]: the pure surge-detection core (windows, baselines, surprise test, incident
//!   state machine, the engine that steps every series each minute; the same model scores a
//!   count CSV offline).
//! - [`store`]: six role traits over Postgres and SQLite, a folder per backend.
//! - [`ingest`]: the queue and the group-commit writer; [`ingest::import`] loads history.
//! - [`detector`]: the runner around [`detect`]: a live tick per minute, the leader loop,
//!   `redetect`, the rebuild after an upgrade.
//! - [`read`]: the typed read side (queries as types, plain answers, one `ReadError`): counts,
//!   regions, services, incidents, and the admin API's few edits; [`read::Reads`] gives each
//!   request's store call its deadline, and its queries to a fresh read replica
//!   ([`read::replica`], `database.read_url`). The API, the pages and the CLI read through it.
//! - [`api`] (the JSON API: HTTP ⇄ typed queries, the admin API, the OpenAPI document) and
//!   [`web`] (the pages people use) know nothing of each other; [`http`] is what both share
//!   (problem+json, client admission and rate limits, proof of work, the ingest path of
//!   reports, security headers and the layers every answer gets). `app` merges their routers.
//! - [`runtime`]: the accept loop, the clock, live events across replicas, webhooks, metrics.
//! - [`app`] wires them and shuts them down in order; [`config`] is every setting. The
//!   `outagewatch` binary is a table of contents (src/main.rs) over src/cli/.
//!
//! A report, by file:
//! 1. `POST /api/v1/reports` → `http/client.rs` admits the client (rate limit) →
//!    `api/reports.rs` (`create_reports`): the body is parsed into `domain/report.rs` types, the
//!    city checked against `domain/geo/`; `http/submit.rs` fingerprints the sender
//!    (`ingest/fingerprint.rs`) and submits the batch (the report form's path too).
//! 2. `ingest/mod.rs` queues it; `ingest/writer.rs` batches it and calls the store's
//!    `insert_reports` (`store/postgres/reports.rs`, which first makes any missing day
//!    partition in `store/postgres/partitions.rs`, or `store/sqlite/reports.rs`), which applies
//!    `domain/counting.rs` (dedup candidates, network quotas, rollup increments) and commits
//!    the report and its minute counts in one transaction (the quarter and hour tiers follow
//!    in the same statement or transaction, or as Postgres' upkeep settles the minute); only
//!    then is it acknowledged.
//! 3. Each minute `detector/task.rs` (the leader) calls `detector/live.rs`'s `tick(now)`: it
//!    reads the minute rollups (`store/*/detection.rs`), steps `detect/engine.rs` (a catch-up
//!    or replay of many minutes on several threads, `detect/shards.rs`), and
//!    `detector/detection.rs` names what opened, grew or resolved (`domain/incidents.rs`).
//! 4. The incidents, their webhook deliveries (`runtime/webhooks/mod.rs`) and the watermark
//!    are written in one transaction; the changes go out as live events
//!    (`runtime/events.rs` → `api/events.rs`, Server-Sent Events), and
//!    `runtime/webhooks/deliverer.rs` POSTs the queued deliveries.
//! 5. Reads come back through `read/` (counts, regions, services, incidents, each under
//!    `read::Reads`'s deadline; the store answers from the rollup tiers, `store/read_sql.rs`)
//!    to `api/counts.rs`, `api/incidents.rs`, `api/feeds.rs` and the
//!    pages in `web/status.rs`.
//!
//! Beside the service, not in it: the workspace's tool crates, crates/loadgen (the load
//! generator), crates/scenario (deterministic report scenarios for the detection tests; it uses
//! this library's gazetteer and problem kinds) and crates/tools (the `outagewatch-tools` binary:
//! `loadgen`, `simulate`). The service binary links none of them.
//!
//! Dependency rule: arrows point inward. `domain` and `detect` do no I/O and never read the
//! clock (only `runtime/clock.rs` does); `store` knows the domain but not HTTP and reads no
//! clock; `app` wires everything. `tests/architecture.rs` holds the tree to these rules.

pub mod api;
pub mod app;
pub mod config;
pub mod detect;
pub mod detector;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod read;
pub mod runtime;
pub mod store;
pub mod web;
