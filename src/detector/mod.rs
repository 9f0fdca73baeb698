//! The detector runner: reads the minute rollups after its watermark, steps the engine, names and stores incidents, and announces their changes.
//!
//! One code path serves the live runner (`serve`, every minute, as the one leader among the
//! replicas) and `outagewatch redetect` (a range, from scratch): [`Detection::step_range`].
//! Incident ids derive from the series and the start, so re-running over the same rollups
//! writes the same records. The live runner keeps a watermark (the last minute processed) and
//! a snapshot of the engine in the store; on start it restores the snapshot and replays the
//! minutes after it, so a restart changes no outcome. A snapshot of another model version
//! (an upgrade) is rebuilt instead, from the rollups of `history_days` before the watermark.
//!
//! Reading order: [`detection`] (the engine and its incidents, over a range of rollups) →
//! [`live`] (a [`LiveDetector`] whose `tick(now)` does one minute's work) → [`task`] (the
//! leader loop around it, the only code here that reads the clock, and the [`DetectorTask`]
//! an admin's redetect pauses) → [`mod@redetect`] (a range recomputed from scratch) → `rebuild`
//! (the state rebuilt after an upgrade).

pub mod detection;
pub mod live;
mod rebuild;
pub mod redetect;
pub mod task;

use crate::store::StoreError;

pub use detection::{Changes, Detection, IncidentChange};
pub use live::{complete_until, LiveContext, LiveDetector, Tick};
pub use redetect::{redetect, RedetectSummary};
pub use task::{run, DetectorTask};

use crate::domain::buckets::QUARTER_SECONDS;

/// Minutes of rollups read per query (and, live, written per transaction while catching up).
const CHUNK_MINUTES: i64 = 60;

/// Why detection stopped.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine's state could not be serialized into a snapshot.
    #[error("the detector state cannot be serialized: {0}")]
    Snapshot(serde_json::Error),
    #[error("another process holds the detector lock (a running `serve`); stop it first")]
    NotLeader,
    #[error("--from must be before --to")]
    EmptyRange,
    /// The replay before `from` would start before the minute counts retention keeps.
    #[error("{0}")]
    BeforeKeptMinutes(String),
    /// A reader or writer task of `redetect` panicked.
    #[error("a redetect task failed: {0}")]
    Task(tokio::task::JoinError),
}
