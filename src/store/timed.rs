//! A store whose every call gives up after a fixed time, for request handlers: a stalled database (stopped, or alive but silent) turns into a fast `Unavailable` instead of a hung request.
//!
//! The pool's acquire timeout covers only waiting for a connection; a query on a connection
//! whose server has stopped answering (SIGSTOP, a lost packet path) waits for ever, and a
//! server-side `statement_timeout` cannot fire in a server that is not running. Dropping the
//! call's future is safe: sqlx tests a connection that comes back mid-query before reusing it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{
    Attempt, CatalogStore, Checkpoint, CoordinationStore, CountBucket, Delivery, DetectionStore,
    DetectionWrite, Expectation, IncidentAction, IncidentQuery, Leadership, Listener, MinuteCount,
    NewReport, OutboxStore, Outcome, ProblemCount, QuarterExpectation, ReadStore, RegionCount,
    RegionExpectation, ReportStore, Rollup, SeriesKey, ServiceRecord, Store, StoreError,
    StoredReport, TimeRange,
};
use crate::domain::incidents::{CityCount, Incident};

/// Wraps `inner` so that each call fails with [`StoreError::Unavailable`] after `timeout`.
pub fn with_timeout(inner: Arc<dyn Store>, timeout: Duration) -> Arc<dyn Store> {
    Arc::new(TimedStore { inner, timeout })
}

struct TimedStore {
    inner: Arc<dyn Store>,
    timeout: Duration,
}

impl TimedStore {
    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, call).await
    }
}

/// `call`'s answer, or `Unavailable` once `timeout` has passed without one.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the database did not answer within {} ms",
                timeout.as_millis()
            )))
        })
}

#[async_trait]
impl ReportStore for TimedStore {
    async fn reporter_secret(
        &self,
        day: NaiveDate,
        candidate: [u8; 32],
    ) -> Result<[u8; 32], StoreError> {
        self.within(self.inner.reporter_secret(day, candidate))
            .await
    }

    async fn insert_reports(
        &self,
        reports: &[NewReport],
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.within(self.inner.insert_reports(reports, now)).await
    }

    async fn settle_rollups(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.within(self.inner.settle_rollups(before)).await
    }

    async fn report(&self, id: Uuid) -> Result<Option<StoredReport>, StoreError> {
        self.within(self.inner.report(id)).await
    }

    async fn stored_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        self.within(self.inner.stored_ids(ids)).await
    }

    async fn report_count(&self) -> Result<u64, StoreError> {
        self.within(self.inner.report_count()).await
    }

    async fn forget_network_counts(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        self.within(self.inner.forget_network_counts(before)).await
    }
}

#[async_trait]
impl ReadStore for TimedStore {
    async fn rollups(
        &self,
        service: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        self.within(self.inner.rollups(service, from, to)).await
    }

    async fn top_cities(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        limit: u32,
    ) -> Result<Vec<CityCount>, StoreError> {
        self.within(self.inner.top_cities(series, range, limit))
            .await
    }

    async fn problem_counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<ProblemCount>, StoreError> {
        self.within(self.inner.problem_counts(series, range)).await
    }

    async fn counts(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bucket_seconds: i64,
    ) -> Result<Vec<CountBucket>, StoreError> {
        self.within(self.inner.counts(series, range, bucket_seconds))
            .await
    }

    async fn region_counts(
        &self,
        service: &str,
        country: Option<&str>,
        cities: bool,
        range: TimeRange,
    ) -> Result<Vec<RegionCount>, StoreError> {
        self.within(self.inner.region_counts(service, country, cities, range))
            .await
    }

    async fn region_expectations(
        &self,
        service: &str,
        regions: &[(String, String)],
        range: TimeRange,
    ) -> Result<Vec<RegionExpectation>, StoreError> {
        self.within(self.inner.region_expectations(service, regions, range))
            .await
    }

    async fn expectations(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<QuarterExpectation>, StoreError> {
        self.within(self.inner.expectations(series, range)).await
    }

    async fn incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        self.within(self.inner.incidents(query)).await
    }

    async fn incident(&self, id: Uuid) -> Result<Option<Incident>, StoreError> {
        self.within(self.inner.incident(id)).await
    }
}

#[async_trait]
impl DetectionStore for TimedStore {
    async fn first_rollup_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.within(self.inner.first_rollup_minute()).await
    }

    async fn minute_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteCount>, StoreError> {
        self.within(self.inner.minute_counts(from, to)).await
    }

    // Redetect's bulk work is not request work either: no request-sized timeout.
    async fn clear_expectations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.clear_expectations(from, to).await
    }

    async fn insert_recomputed_expectations(
        &self,
        expectations: &[Expectation],
    ) -> Result<(), StoreError> {
        self.inner
            .insert_recomputed_expectations(expectations)
            .await
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.within(self.inner.checkpoint()).await
    }

    async fn write_detection(&self, write: &DetectionWrite<'_>) -> Result<(), StoreError> {
        self.within(self.inner.write_detection(write)).await
    }
}

#[async_trait]
impl OutboxStore for TimedStore {
    async fn claim_webhook_deliveries(
        &self,
        endpoints: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.within(
            self.inner
                .claim_webhook_deliveries(endpoints, now, lease_until, limit),
        )
        .await
    }

    async fn record_webhook_attempt(
        &self,
        event_id: Uuid,
        endpoint: &str,
        at: DateTime<Utc>,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        self.within(
            self.inner
                .record_webhook_attempt(event_id, endpoint, at, attempt),
        )
        .await
    }

    async fn expire_webhook_deliveries(
        &self,
        give_up_before: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.within(
            self.inner
                .expire_webhook_deliveries(give_up_before, forget_before, now),
        )
        .await
    }

    async fn webhook_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.within(self.inner.webhook_deliveries(limit)).await
    }

    async fn pending_webhook_deliveries(&self) -> Result<u64, StoreError> {
        self.within(self.inner.pending_webhook_deliveries()).await
    }
}

#[async_trait]
impl CatalogStore for TimedStore {
    async fn seed_services(
        &self,
        services: &[(String, String)],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.within(self.inner.seed_services(services, at)).await
    }

    async fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.within(self.inner.services()).await
    }

    async fn put_service(
        &self,
        service: &ServiceRecord,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.within(self.inner.put_service(service, at)).await
    }

    async fn act_on_incident(
        &self,
        id: Uuid,
        action: &IncidentAction<'_>,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        self.within(self.inner.act_on_incident(id, action, at))
            .await
    }
}

#[async_trait]
impl CoordinationStore for TimedStore {
    // Migrations and the long-lived connections (listener, detector lock) are not request work.
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.within(self.inner.ping()).await
    }

    async fn notify(&self, payload: &str) -> Result<bool, StoreError> {
        self.within(self.inner.notify(payload)).await
    }

    async fn listen(&self) -> Result<Option<Box<dyn Listener>>, StoreError> {
        self.inner.listen().await
    }

    async fn try_lead_detector(&self) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        self.inner.try_lead_detector().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_is_unavailable_after_the_timeout() {
        let started = tokio::time::Instant::now();
        let error = within(
            Duration::from_millis(1500),
            std::future::pending::<Result<(), StoreError>>(),
        )
        .await
        .expect_err("times out");
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        assert_eq!(
            error.to_string(),
            "store unavailable: the database did not answer within 1500 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_is_passed_through() {
        let answer = within(Duration::from_millis(10), async { Ok::<_, StoreError>(7) }).await;
        assert_eq!(answer.expect("answered"), 7);
    }
}
