//! The webhook's own metrics (prefix `cmp_webhook_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProblemLabels {
    problem: String,
}

/// Counters of deliveries and of order lines that could not be provisioned.
#[derive(Default)]
pub struct Metrics {
    deliveries: Family<DeliveryLabels, Counter>,
    unprovisioned_lines: Family<ProblemLabels, Counter>,
    state_unknown: Family<EventLabels, Counter>,
    webhook_syncs: Family<ResultLabels, Counter>,
    offering_not_ready_lines: Counter,
    admission_certificate_expiry: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "saleor_deliveries",
            "Saleor deliveries by event and the error code answered (ok when provisioned)",
            metrics.deliveries.clone(),
        );
        registry.register(
            "order_lines_unprovisioned",
            "Paid or placed order lines that could not be provisioned, by problem (unknown_sku, no_sku, ...)",
            metrics.unprovisioned_lines.clone(),
        );
        registry.register(
            "saleor_deliveries_state_unknown",
            "Deliveries answered 503 because their body does not say the event and the order's state (the store still sends an older install's queries), by event",
            metrics.state_unknown.clone(),
        );
        registry.register(
            "store_webhook_syncs",
            "Attempts to bring a store's webhooks of this app up to date with the manifest, by result (updated, no_token, failed; skipped_recent when one was made within the interval)",
            metrics.webhook_syncs.clone(),
        );
        registry.register(
            "order_lines_offering_not_ready",
            "Paid plan lines whose Offering was not Ready: their Instances were created and wait for it",
            metrics.offering_not_ready_lines.clone(),
        );
        registry.register(
            "admission_certificate_expiry_timestamp_seconds",
            "When the admission endpoint's serving certificate (--admission-cert, read at start) expires, in seconds since the Unix epoch; 0 when the endpoint is off",
            metrics.admission_certificate_expiry.clone(),
        );
        // Created at zero so a fresh replica exports them and increase() sees the first line or delivery.
        for event in crate::event::OrderEvent::ALL {
            let _ = metrics
                .deliveries
                .get_or_create(&DeliveryLabels { event: event.header_value().into(), code: "ok".into() });
        }
        for problem in crate::catalog::LineProblem::KINDS {
            let _ = metrics.unprovisioned_lines.get_or_create(&ProblemLabels { problem: problem.to_string() });
        }
        metrics
    }

    /// Records when the admission endpoint's certificate expires.
    pub fn admission_certificate_expiry(&self, unix_seconds: i64) {
        self.admission_certificate_expiry.set(unix_seconds);
    }

    /// Counts a paid plan line whose Offering is not Ready.
    pub fn offering_not_ready_line(&self) {
        self.offering_not_ready_lines.inc();
    }

    /// Counts an attempt to update a store's webhooks, by `result`.
    pub fn webhook_sync(&self, result: &str) {
        self.webhook_syncs.get_or_create(&ResultLabels { result: result.into() }).inc();
    }

    /// Counts a delivery of `event` whose body does not say what the rules read.
    pub fn state_unknown(&self, event: &str) {
        self.state_unknown.get_or_create(&EventLabels { event: event.into() }).inc();
    }

    /// Counts a delivery of `event` answered with `code` (`ok` or an error code).
    pub fn delivery(&self, event: &str, code: &str) {
        self.deliveries.get_or_create(&DeliveryLabels { event: event.into(), code: code.into() }).inc();
    }

    /// Counts an order line that could not be provisioned.
    pub fn unprovisioned_line(&self, problem: &str) {
        self.unprovisioned_lines.get_or_create(&ProblemLabels { problem: problem.into() }).inc();
    }
}
