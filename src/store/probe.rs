//! What the durable store reports to Prometheus.

/// What the store reports to Prometheus (registered by [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct StoreProbe {
    /// Writes queued for the writer thread and not yet taken.
    pub queue_depth: prometheus::IntGauge,
    /// Time to write and commit one batch (one fsync).
    pub commit_seconds: prometheus::Histogram,
    /// Writes per committed batch: how many commits group commit saves.
    pub batch_size: prometheus::Histogram,
}

impl StoreProbe {
    pub fn new() -> prometheus::Result<Self> {
        use prometheus::{Histogram, HistogramOpts, IntGauge};
        Ok(StoreProbe {
            queue_depth: IntGauge::new(
                "gepa_store_queue_depth",
                "Writes queued for the store's writer and not yet taken.",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gepa_store_commit_seconds",
                    "Time to write and commit one batch of store writes.",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0,
                ]),
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "gepa_store_batch_writes",
                    "Writes committed together in one store transaction.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                ]),
            )?,
        })
    }

    /// The collectors, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.queue_depth.clone()),
            Box::new(self.commit_seconds.clone()),
            Box::new(self.batch_size.clone()),
        ]
    }
}
