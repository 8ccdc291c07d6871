//! The gateway's own metrics (prefix `cmp_gateway_`). Labels are codes and
//! outcomes only: never a key, a run or a tenant.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

// Labels are static strings: counting a run allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
    result: &'static str,
}

/// Counters and histograms of runs, leases and usage events.
pub struct Metrics {
    runs: Family<CodeLabels, Counter>,
    duration: Histogram,
    lease_writes: Family<WriteLabels, Counter>,
    credits_charged: Counter,
    usage_events: Family<ResultLabels, Counter>,
    usage_backlog: Gauge,
    usage_capacity: Gauge,
    tool_calls: Family<ResultLabels, Counter>,
    connector_probes: Family<ResultLabels, Counter>,
    connector_refusals: Family<CodeLabels, Counter>,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lease_writes: Family::default(),
            credits_charged: Counter::default(),
            usage_events: Family::default(),
            usage_backlog: Gauge::default(),
            usage_capacity: Gauge::default(),
            tool_calls: Family::default(),
            connector_probes: Family::default(),
            connector_refusals: Family::default(),
        };
        registry.register(
            "runs",
            "Run requests by the code answered (ok, or an error code such as insufficient_credits)",
            metrics.runs.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time from a run request to its last byte, in seconds",
            metrics.duration.clone(),
        );
        registry.register(
            "lease_writes",
            "Writes of this replica's Wallet meters by kind (lease: takes or grows a lease; flush: records spending; return: hands the lease back) and result (written, conflict: another writer moved first and the Wallet is read again, failed)",
            metrics.lease_writes.clone(),
        );
        registry.register("credits_charged", "Credits charged for settled runs", metrics.credits_charged.clone());
        registry.register(
            "usage_events",
            "Usage events by result: delivered, retried, or dropped (the buffer was full)",
            metrics.usage_events.clone(),
        );
        registry.register(
            "usage_backlog",
            "Usage events buffered and not yet taken by the sink (including a batch being retried)",
            metrics.usage_backlog.clone(),
        );
        registry.register(
            "usage_buffer_capacity",
            "How many usage events the buffer holds before new ones are dropped (--usage-buffer)",
            metrics.usage_capacity.clone(),
        );
        registry.register(
            "tool_calls",
            "Messages through the connector gateway by result: success, tool_error, upstream_error, timeout, refused, served (not a tool call)",
            metrics.tool_calls.clone(),
        );
        registry.register(
            "connector_probes",
            "Probes of connector bindings' MCP servers (initialize and tools/list with the binding's credential) by result: answered, failed",
            metrics.connector_probes.clone(),
        );
        registry.register(
            "connector_security_refusals",
            "Connector gateway refusals that are security events, by reason (invalid_run_token, unknown_session, unknown_binding, tool_not_allowed, destination_refused)",
            metrics.connector_refusals.clone(),
        );
        metrics.start_at_zero();
        metrics
    }

    /// Creates every series whose labels are known in advance at zero, so a
    /// fresh replica exports them and `rate()` and `increase()` see the first
    /// event (a series born at 1 hides it); the alert rules read them.
    fn start_at_zero(&self) {
        for code in std::iter::once("ok").chain(cmp_crds::refusals::Code::ALL.iter().map(|c| c.as_str())) {
            let _ = self.runs.get_or_create(&CodeLabels { code });
        }
        for kind in ["lease", "flush", "return"] {
            for result in ["written", "conflict", "failed"] {
                let _ = self.lease_writes.get_or_create(&WriteLabels { kind, result });
            }
        }
        for result in ["delivered", "retried", "dropped"] {
            let _ = self.usage_events.get_or_create(&ResultLabels { result });
        }
        for result in ["success", "tool_error", "upstream_error", "timeout", "refused", "served"] {
            let _ = self.tool_calls.get_or_create(&ResultLabels { result });
        }
        for result in ["answered", "failed"] {
            let _ = self.connector_probes.get_or_create(&ResultLabels { result });
        }
        for code in
            ["invalid_run_token", "unknown_session", "unknown_binding", "tool_not_allowed", "destination_refused"]
        {
            let _ = self.connector_refusals.get_or_create(&CodeLabels { code });
        }
    }

    /// Counts a message through the connector gateway with `result`.
    pub fn tool_call(&self, result: &'static str) {
        self.tool_calls.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a probe of a binding's MCP server with `result`.
    pub fn connector_probe(&self, result: &'static str) {
        self.connector_probes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a connector gateway refusal that is a security event.
    pub fn connector_security_refusal(&self, code: &'static str) {
        self.connector_refusals.get_or_create(&CodeLabels { code }).inc();
    }

    /// Counts a run request answered with `code` (`ok` or an error code).
    pub fn run(&self, code: &'static str) {
        self.runs.get_or_create(&CodeLabels { code }).inc();
    }

    /// How many run requests were answered with `code` so far.
    #[cfg(test)]
    pub(crate) fn runs_answered(&self, code: &'static str) -> u64 {
        self.runs.get_or_create(&CodeLabels { code }).get()
    }

    /// Records how long a run took.
    pub fn duration(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// Counts a meter write of `kind` with `result`.
    pub fn lease_write(&self, kind: &'static str, result: &'static str) {
        self.lease_writes.get_or_create(&WriteLabels { kind, result }).inc();
    }

    /// Counts credits charged.
    pub fn charged(&self, credits: i64) {
        self.credits_charged.inc_by(u64::try_from(credits).unwrap_or(0));
    }

    /// Records how many usage events wait for the sink, of a buffer of `capacity`.
    pub fn usage_backlog(&self, waiting: usize, capacity: usize) {
        self.usage_backlog.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.usage_capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// Counts `n` usage events with `result`.
    pub fn usage_events(&self, result: &'static str, n: usize) {
        self.usage_events.get_or_create(&ResultLabels { result }).inc_by(n as u64);
    }
}
