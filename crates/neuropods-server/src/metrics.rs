//! Prometheus metrics, served at `GET /metrics` in Prometheus' text format:
//! per model and protocol, requests, failures (client or server fault) and
//! request latency; per model, time spent running the model and, for
//! batched models, batch sizes and time spent queued for a batch; per
//! protocol, the client connections the server closed, and why.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which protocol a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// REST over HTTP.
    Http,
    /// gRPC.
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    model: String,
    protocol: &'static str,
    /// "client" (4xx, INVALID_ARGUMENT/NOT_FOUND) or "server" (5xx).
    fault: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    protocol: &'static str,
    /// "idle_cap", "idle_timeout", "header_timeout" or "body_timeout".
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 50 us to about 26 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

/// Rows or requests per batch, 1 to 16384.
fn rows_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    latency: Histograms<RequestLabels>,
    batch_rows: Histograms<ModelLabels>,
    batch_requests: Histograms<ModelLabels>,
    queue_time: Histograms<ModelLabels>,
    run_time: Histograms<ModelLabels>,
    connections_closed: Family<ClosedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("neuropods");
        let requests = Family::default();
        let failures = Family::default();
        let latency = Histograms::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let batch_rows = Histograms::new_with_constructor(rows_histogram as fn() -> Histogram);
        let batch_requests = Histograms::new_with_constructor(rows_histogram as fn() -> Histogram);
        let queue_time = Histograms::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let run_time = Histograms::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "inference_requests",
            "Inference requests received",
            requests.clone(),
        );
        registry.register(
            "inference_failures",
            "Inference requests that failed, by fault (client or server)",
            failures.clone(),
        );
        registry.register(
            "inference_request_duration_seconds",
            "Time from receiving an inference request to having its response",
            latency.clone(),
        );
        registry.register(
            "batch_size_rows",
            "Rows (first-dim entries) per batch",
            batch_rows.clone(),
        );
        registry.register(
            "batch_size_requests",
            "Requests per batch",
            batch_requests.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a request waited before its batch started",
            queue_time.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time the model took to run one batch or one unbatched request",
            run_time.clone(),
        );
        let connections_closed = Family::default();
        registry.register(
            "connections_closed",
            "Client connections the server closed, by why (idle_cap, idle_timeout, \
             header_timeout, body_timeout)",
            connections_closed.clone(),
        );
        Metrics {
            connections_closed,
            registry,
            requests,
            failures,
            latency,
            batch_rows,
            batch_requests,
            queue_time,
            run_time,
        }
    }
}

impl Metrics {
    /// Counts one inference request to a served model and its outcome.
    pub fn request(
        &self,
        model: &str,
        protocol: Protocol,
        took: Duration,
        failure: Option<&'static str>,
    ) {
        let labels = RequestLabels {
            model: model.to_string(),
            protocol: protocol.label(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(fault) = failure {
            self.failures
                .get_or_create(&FailureLabels {
                    model: labels.model,
                    protocol: labels.protocol,
                    fault,
                })
                .inc();
        }
    }

    /// Records one model run: how long it ran and, for a batch, how many
    /// rows it took and how long each of its requests had waited for it.
    pub fn run(&self, model: &str, batch: Option<(usize, &[Duration])>, took: Duration) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        if let Some((rows, waits)) = batch {
            self.batch_rows.get_or_create(&labels).observe(rows as f64);
            self.batch_requests
                .get_or_create(&labels)
                .observe(waits.len() as f64);
            let queue = self.queue_time.get_or_create(&labels);
            for wait in waits {
                queue.observe(wait.as_secs_f64());
            }
        }
        self.run_time
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts a client connection the server closed, and why.
    pub fn connection_closed(&self, protocol: &'static str, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ClosedLabels { protocol, reason })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
