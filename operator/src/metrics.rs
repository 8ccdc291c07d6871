//! Prometheus metrics: reconciles, errors, durations per kind, and the API
//! writes the operator makes (the benchmark reads them).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The reconciled kind.
    pub kind: String,
}

/// Labels of an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The reconciled kind.
    pub kind: String,
    /// The error's reason.
    pub reason: String,
}

/// Labels of an API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The written kind.
    pub kind: String,
    /// `apply`, `apply_status`, `patch_status`, `patch` (the finalizer) or `delete`.
    pub verb: String,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// The operator's metrics (registered in the process's registry, prefix `cmp_operator`).
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: HistogramFamily,
    writes: Family<WriteLabels, Counter>,
    /// The GitOps writer's commits, push retries and clone rebuilds.
    pub gitops: crate::gitops::writer::Counters,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    /// Registers the operator's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, per kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, per kind and reason", errors.clone());
        registry.register("reconcile_duration_seconds", "How long reconciles take, per kind", durations.clone());
        registry.register(
            "api_writes",
            "Writes the operator sent to the API server, per kind and verb",
            writes.clone(),
        );
        let gitops = crate::gitops::writer::Counters::register(registry);
        // Created at zero so a fresh replica exports them and rate() sees the first reconcile or error.
        for kind in ["Organization", "Project", "Offering", "Instance", "Wallet"] {
            let _ = reconciles.get_or_create(&KindLabels { kind: kind.to_string() });
            let _ = durations.get_or_create(&KindLabels { kind: kind.to_string() });
            for reason in crate::error::Error::REASONS {
                let _ = errors.get_or_create(&ErrorLabels { kind: kind.to_string(), reason: reason.to_string() });
            }
        }
        Self { reconciles, errors, durations, writes, gitops }
    }
}

/// Observes one reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: String,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let labels = KindLabels { kind: std::mem::take(&mut self.kind) };
        self.metrics.durations.get_or_create(&labels).observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, kind: &str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
        ReconcileTimer { metrics: self, kind: kind.to_string(), start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &str, reason: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.to_string(), reason: reason.to_string() }).inc();
    }

    /// Counts an API write.
    pub fn write(&self, kind: &str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind: kind.to_string(), verb: verb.to_string() }).inc();
    }
}
