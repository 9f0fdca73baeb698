//! A streaming read replica (`database.read_url`): whether it is fresh enough to read from, and
//! the age of the data a request read there, which the API sends as `X-Data-Age`.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::{Replication, Store};

/// How long a measurement of the replica's lag is trusted before it is taken again.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a measurement may take: past it the replica counts as unreachable.
const MEASURE_WITHIN: Duration = Duration::from_millis(250);

tokio::task_local! {
    /// The oldest data a request's reads were answered from (seconds behind the primary), set
    /// only when a replica answered.
    static DATA_AGE: Cell<Option<f64>>;
}

/// Runs `work` (a request's handling) noting the age of the replica data it read, if any.
pub async fn noting_data_age<F: Future>(work: F) -> (F::Output, Option<f64>) {
    DATA_AGE
        .scope(Cell::new(None), async {
            let output = work.await;
            (output, DATA_AGE.with(Cell::get))
        })
        .await
}

/// Notes that the current request read data `age` seconds behind the primary.
pub(super) fn note_data_age(age: f64) {
    // Outside a request (the CLI, the detector) nobody asks.
    let _ = DATA_AGE.try_with(|noted| noted.set(Some(noted.get().map_or(age, |n| n.max(age)))));
}

/// The replica beside the primary, and its lag as last measured.
pub struct Replica {
    store: Arc<dyn Store>,
    max_lag: f64,
    /// When the lag was last measured, and the age it allowed: `None` when the replica could
    /// not say (down, not a standby, nothing replayed) or lagged past `max_lag`, so reads go
    /// to the primary.
    measured: Mutex<Option<(Instant, Option<f64>)>>,
    /// A read is measuring the lag now; the others go by the last measurement meanwhile.
    measuring: AtomicBool,
}

/// Clears [`Replica::measuring`] however the measuring read ends (a cancelled request too).
struct Measuring<'a>(&'a AtomicBool);

impl Drop for Measuring<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Replica {
    pub fn new(store: Arc<dyn Store>, max_lag: Duration) -> Replica {
        Replica {
            store,
            max_lag: max_lag.as_secs_f64(),
            measured: Mutex::new(None),
            measuring: AtomicBool::new(false),
        }
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn remember(&self, age: Option<f64>) {
        *self.measured.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), age));
    }

    /// The replica's data age if it may be read now, else `None`. A measurement is trusted
    /// for [`CHECK_EVERY`]; then one read measures again (within [`MEASURE_WITHIN`], so a
    /// replica that is down costs that read a quarter second at most) while the others go by
    /// the last one.
    pub(super) async fn fresh_age(&self, primary: &dyn Store) -> Option<f64> {
        let last = *self.measured.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, age)) = last {
            if at.elapsed() < CHECK_EVERY {
                return age;
            }
        }
        if self.measuring.swap(true, Ordering::AcqRel) {
            return last.and_then(|(_, age)| age);
        }
        let _measuring = Measuring(&self.measuring);
        let lag = tokio::time::timeout(MEASURE_WITHIN, async {
            let primary = primary.replication().await.ok()?;
            let replica = self.store.replication().await.ok()?;
            lag_seconds(primary, replica)
        })
        .await
        .ok()
        .flatten();
        let age = lag.filter(|lag| *lag <= self.max_lag);
        if age.is_none() {
            tracing::debug!(
                ?lag,
                max_lag = self.max_lag,
                "reading from the primary: the replica is behind or unreachable"
            );
        }
        self.remember(age);
        age
    }

    /// Sends reads to the primary until the next measurement (a read on the replica failed).
    pub(super) fn forget(&self) {
        self.remember(None);
    }
}

/// How far `replica` is behind `primary` in seconds: 0 when it has replayed everything the
/// primary had written when asked (however long ago that was), else the time since it
/// replayed its last transaction. `None` when they are not a primary and its standby, or the
/// standby has replayed nothing yet.
pub fn lag_seconds(primary: Replication, replica: Replication) -> Option<f64> {
    match (primary, replica) {
        (
            Replication::Primary { written },
            Replication::Standby {
                replayed,
                since_last_replay,
            },
        ) => {
            if replayed >= written {
                Some(0.0)
            } else {
                since_last_replay.map(|seconds| seconds.max(0.0))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_that_replayed_everything_is_fresh_however_idle_the_primary() {
        let primary = Replication::Primary { written: 500 };
        let standby = |replayed, since_last_replay| Replication::Standby {
            replayed,
            since_last_replay,
        };
        assert_eq!(lag_seconds(primary, standby(500, Some(3600.0))), Some(0.0));
        assert_eq!(lag_seconds(primary, standby(400, Some(2.5))), Some(2.5));
        assert_eq!(lag_seconds(primary, standby(400, None)), None);
        assert_eq!(
            lag_seconds(primary, Replication::Primary { written: 500 }),
            None
        );
        assert_eq!(
            lag_seconds(Replication::Alone, standby(500, Some(1.0))),
            None
        );
    }

    #[tokio::test]
    async fn a_request_notes_the_oldest_replica_data_it_read() {
        let ((), age) = noting_data_age(async {
            note_data_age(0.5);
            note_data_age(2.0);
            note_data_age(1.0);
        })
        .await;
        assert_eq!(age, Some(2.0));
        let ((), age) = noting_data_age(async {}).await;
        assert_eq!(age, None);
        // Outside a request it is a no-op.
        note_data_age(1.0);
    }
}
