//! What one connection saw (answers by status, ids by fate, a latency histogram), merged across connections into the run's summary.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use uuid::Uuid;

use crate::plan::Plan;
use crate::{Answer, LoadgenSummary};

/// Largest latency the histogram tells apart, in microseconds; longer ones saturate.
const LATENCY_CEILING_MICROS: u64 = 60_000_000;

/// Latency histogram in microseconds with three significant digits.
pub(crate) struct Latencies(pub(crate) Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, LATENCY_CEILING_MICROS, 3)
                .expect("constant histogram bounds are valid"),
        )
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot overflow the value range.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    pub(crate) fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.max())
    }
}

/// What one connection task saw; merged into the summary at the end.
pub(crate) struct ConnStats {
    pub(crate) sent: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) transport_errors: u64,
    pub(crate) acknowledged: Vec<Uuid>,
    pub(crate) rejected: Vec<Uuid>,
    pub(crate) unresolved: Vec<Uuid>,
    pub(crate) measured_acknowledged: u64,
    pub(crate) measured_answers: u64,
    pub(crate) last_measured_answer: Option<Instant>,
    pub(crate) latencies: Latencies,
    pub(crate) max_latency_by_status: BTreeMap<u16, Duration>,
    pub(crate) answers: Vec<Answer>,
}

impl ConnStats {
    /// Notes one answer (status 0: a transport error) of a request sent at `sent`.
    pub(crate) fn note(&mut self, plan: &Plan, start: Instant, sent: Instant, status: u16) {
        let latency = sent.elapsed();
        let slowest = self.max_latency_by_status.entry(status).or_default();
        *slowest = (*slowest).max(latency);
        if plan.record_answers {
            self.answers.push(Answer {
                sent_after: sent.saturating_duration_since(start),
                latency,
                status,
            });
        }
    }

    pub(crate) fn new() -> Self {
        Self {
            sent: 0,
            by_status: BTreeMap::new(),
            transport_errors: 0,
            acknowledged: Vec::new(),
            rejected: Vec::new(),
            unresolved: Vec::new(),
            measured_acknowledged: 0,
            measured_answers: 0,
            last_measured_answer: None,
            latencies: Latencies::new(),
            max_latency_by_status: BTreeMap::new(),
            answers: Vec::new(),
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        for (status, count) in other.by_status {
            *self.by_status.entry(status).or_insert(0) += count;
        }
        self.transport_errors += other.transport_errors;
        self.acknowledged.extend(other.acknowledged);
        self.rejected.extend(other.rejected);
        self.unresolved.extend(other.unresolved);
        self.measured_acknowledged += other.measured_acknowledged;
        self.measured_answers += other.measured_answers;
        self.last_measured_answer = self.last_measured_answer.max(other.last_measured_answer);
        self.latencies.merge(&other.latencies);
        for (status, latency) in other.max_latency_by_status {
            let slowest = self.max_latency_by_status.entry(status).or_default();
            *slowest = (*slowest).max(latency);
        }
        self.answers.extend(other.answers);
    }

    pub(crate) fn into_summary(self, measure_start: Instant, duration: Duration) -> LoadgenSummary {
        // Answers to requests sent just before the end arrive after it; stretch the window
        // to cover them so the rate is not inflated.
        let elapsed = self
            .last_measured_answer
            .map_or(duration, |t| t.saturating_duration_since(measure_start))
            .max(duration);
        LoadgenSummary {
            sent: self.sent,
            elapsed,
            by_status: self.by_status,
            transport_errors: self.transport_errors,
            acknowledged_ids: self.acknowledged,
            rejected_ids: self.rejected,
            unresolved_ids: self.unresolved,
            latency_p50: self.latencies.quantile(0.50),
            latency_p90: self.latencies.quantile(0.90),
            latency_p99: self.latencies.quantile(0.99),
            latency_max: self.latencies.max(),
            acknowledged_per_second: self.measured_acknowledged as f64 / elapsed.as_secs_f64(),
            answered_per_second: self.measured_answers as f64 / elapsed.as_secs_f64(),
            max_latency_by_status: self.max_latency_by_status,
            answers: self.answers,
        }
    }
}
