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

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Declares [`Metrics`], a field a metric, and `Metrics::new`, which registers each metric under
/// its `name` with its doc comment as the help text, in the order listed: the order `/metrics`
/// shows them in. One entry says all there is to say about a metric.
macro_rules! metrics {
    ($($(#[doc = $doc:literal])+ #[name = $name:literal] $field:ident: $kind:ty = $make:expr;)+) => {
        /// Every metric of the process.
        pub struct Metrics {
            registry: Registry,
            $($(#[doc = $doc])+ pub $field: $kind,)+
        }

        impl Metrics {
            fn new() -> Metrics {
                let mut registry = Registry::default();
                $(
                    let $field: $kind = $make;
                    registry.register($name, help(&[$($doc),+]), $field.clone());
                )+
                Metrics { registry, $($field),+ }
            }
        }
    };
}

/// A doc comment's lines as one line of help text, without its full stop: the encoder adds one.
fn help(doc: &[&str]) -> String {
    let text = doc
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ");
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

metrics! {
    /// Reports stored, by outcome.
    #[name = "outagewatch_reports"]
    reports: Family<OutcomeLabels, Counter> = Family::default();
    /// Report requests refused, by problem type.
    #[name = "outagewatch_reports_rejected"]
    rejected: Family<ReasonLabels, Counter> = Family::default();
    /// Reports per committed batch.
    #[name = "outagewatch_batch_reports"]
    batch_reports: Histogram = Histogram::new(exponential_buckets(1.0, 2.0, 14));
    /// Time to commit one batch.
    #[name = "outagewatch_batch_commit_seconds"]
    commit_seconds: Histogram = latency_histogram();
    /// HTTP answers by route, method and status.
    #[name = "outagewatch_http_request_duration_seconds"]
    http_seconds: Family<HttpLabels, Histogram, HistogramMaker> =
        Family::new_with_constructor(latency_histogram as HistogramMaker);
    /// Submissions waiting for a batch writer.
    #[name = "outagewatch_ingest_queue_depth"]
    queue_depth: Gauge = Gauge::default();
    /// Client addresses the rate limiter tracks now (bounded by rate_limit.max_clients).
    #[name = "outagewatch_rate_limit_clients"]
    rate_limit_clients: Gauge = Gauge::default();
    /// Incidents open now.
    #[name = "outagewatch_open_incidents"]
    open_incidents: Gauge = Gauge::default();
    /// How far the detector's last processed minute is behind now.
    #[name = "outagewatch_detector_lag_seconds"]
    detector_lag_seconds: Gauge = Gauge::default();
    /// Webhook delivery attempts by outcome: delivered, retried (failed, tried again later)
    /// or failed (given up).
    #[name = "outagewatch_webhook_deliveries"]
    webhook_deliveries: Family<OutcomeLabels, Counter> = Family::default();
    /// Webhook deliveries queued and not yet delivered or given up (as last seen by this
    /// process).
    #[name = "outagewatch_webhook_deliveries_pending"]
    webhook_pending: Gauge = Gauge::default();
}

impl Metrics {
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
