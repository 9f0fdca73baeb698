//! Prometheus metrics (`GET /metrics`, OpenMetrics text): reports by outcome and rejection reason, batch sizes and commit latency, HTTP latency by route, queue depth, open incidents, detector lag and webhook deliveries.
//!
//! Label sets are bounded: outcomes, reasons, routes (the router's patterns, never raw
//! paths), methods and status codes. Counters live in one process-wide registry, as is usual
//! for metrics; gauges that describe the store are read when scraped.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What became of a stored report, or of a webhook delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Reports: `counted`, `duplicate` (stored, not counted) or `replay` (id already stored);
    /// webhook deliveries: `delivered`, `retried` or `failed`.
    pub outcome: String,
}

/// Why reports were refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The problem type without its `/problems/` prefix, e.g. `validation`, `rate-limited`.
    pub reason: String,
}

/// One HTTP answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern, e.g. `/api/v1/incidents/{id}`; `unmatched` for anything else.
    pub route: String,
    pub method: String,
    pub status: String,
}

type HistogramMaker = fn() -> Histogram;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub reports: Family<OutcomeLabels, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub batch_reports: Histogram,
    pub commit_seconds: Histogram,
    pub http_seconds: Family<HttpLabels, Histogram, HistogramMaker>,
    pub queue_depth: Gauge,
    pub open_incidents: Gauge,
    pub detector_lag_seconds: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub webhook_pending: Gauge,
    pub rate_limit_clients: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            reports: Family::default(),
            rejected: Family::default(),
            batch_reports: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: latency_histogram(),
            http_seconds: Family::new_with_constructor(latency_histogram as HistogramMaker),
            queue_depth: Gauge::default(),
            open_incidents: Gauge::default(),
            detector_lag_seconds: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_pending: Gauge::default(),
            rate_limit_clients: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "outagewatch_reports",
            "Reports stored, by outcome",
            metrics.reports.clone(),
        );
        registry.register(
            "outagewatch_reports_rejected",
            "Report requests refused, by problem type",
            metrics.rejected.clone(),
        );
        registry.register(
            "outagewatch_batch_reports",
            "Reports per committed batch",
            metrics.batch_reports.clone(),
        );
        registry.register(
            "outagewatch_batch_commit_seconds",
            "Time to commit one batch",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "outagewatch_http_request_duration_seconds",
            "HTTP answers by route, method and status",
            metrics.http_seconds.clone(),
        );
        registry.register(
            "outagewatch_ingest_queue_depth",
            "Submissions waiting for a batch writer",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "outagewatch_rate_limit_clients",
            "Client addresses the rate limiter tracks now (bounded by rate_limit.max_clients)",
            metrics.rate_limit_clients.clone(),
        );
        registry.register(
            "outagewatch_open_incidents",
            "Incidents open now",
            metrics.open_incidents.clone(),
        );
        registry.register(
            "outagewatch_detector_lag_seconds",
            "How far the detector's last processed minute is behind now",
            metrics.detector_lag_seconds.clone(),
        );
        registry.register(
            "outagewatch_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retried (failed, tried again later) \
             or failed (given up)",
            metrics.webhook_deliveries.clone(),
        );
        registry.register(
            "outagewatch_webhook_deliveries_pending",
            "Webhook deliveries queued and not yet delivered or given up (as last seen by this process)",
            metrics.webhook_pending.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts one stored report.
    pub fn report(&self, outcome: &str) {
        self.reports
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one refused report request.
    pub fn rejection(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts `n` webhook deliveries that ended an attempt with `outcome`.
    pub fn webhook_delivery(&self, outcome: &str, n: u64) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels_and_a_total_suffix() {
        let metrics = Metrics::new();
        metrics.report("counted");
        metrics.report("counted");
        metrics.rejection("validation");
        metrics.batch_reports.observe(3.0);
        metrics.webhook_delivery("retried", 2);
        let text = metrics.encode();
        assert!(
            text.contains("outagewatch_webhook_deliveries_total{outcome=\"retried\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("outagewatch_reports_total{outcome=\"counted\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("outagewatch_reports_rejected_total{reason=\"validation\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("outagewatch_batch_reports_count 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
