//! Usage events: one CloudEvent per settled run (`id` = the run id, so a
//! redelivery is deduplicated downstream), delivered at least once to an
//! HTTP sink in OpenMeter's ingest format (`application/cloudevents-batch+json`)
//! or appended to a file (one event per line) for local use.
//!
//! Events wait in a bounded buffer. While the sink is down a batch is tried
//! again with backoff; what does not fit in the buffer meanwhile is dropped,
//! counted (`cmp_gateway_usage_events_total{result="dropped"}`) and logged.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// The CloudEvents type of a settled run.
pub const RUN_SETTLED: &str = "dev.gsv.cmp.run.settled";
/// The most events sent in one request.
const BATCH: usize = 100;

/// How a run ended, which decides what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The runtime answered in full: the plan's price.
    Success,
    /// The runtime failed or was unreachable: free.
    RuntimeError,
    /// The plan's timeout passed: free (the caller got no answer).
    Timeout,
    /// The caller went away after the runtime started answering: the plan's price.
    ClientDisconnected,
    /// The caller went away before the runtime answered (the run is cancelled): free.
    Cancelled,
}

impl Outcome {
    /// The credits a run with this ending costs, at `price` a run.
    pub fn charge(self, price: i64) -> i64 {
        match self {
            Outcome::Success | Outcome::ClientDisconnected => price,
            Outcome::RuntimeError | Outcome::Timeout | Outcome::Cancelled => 0,
        }
    }
}

/// A settled run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettledRun {
    /// The run id (the `X-Request-Id` answered).
    #[serde(skip)]
    pub id: String,
    /// The Organization.
    pub organization: String,
    /// The Project.
    pub project: String,
    /// The Instance's name.
    pub instance: String,
    /// The Offering.
    pub offering: String,
    /// The Offering version.
    pub version: String,
    /// The plan.
    pub plan: String,
    /// Credits charged.
    pub credits: i64,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was settled.
    #[serde(skip)]
    pub at: k8s_openapi::jiff::Timestamp,
}

/// A settled run as a CloudEvent (structured mode, JSON).
#[derive(Serialize)]
struct CloudEvent<'r> {
    specversion: &'static str,
    id: &'r str,
    source: &'r str,
    #[serde(rename = "type")]
    type_: &'static str,
    subject: String,
    time: String,
    datacontenttype: &'static str,
    data: &'r SettledRun,
}

impl SettledRun {
    fn event<'r>(&'r self, source: &'r str) -> CloudEvent<'r> {
        CloudEvent {
            specversion: "1.0",
            id: &self.id,
            source,
            type_: RUN_SETTLED,
            subject: format!("{}/{}", cmp_crds::names::control_namespace(&self.organization), self.instance),
            time: self.at.to_string(),
            datacontenttype: "application/json",
            data: self,
        }
    }

    /// The run as a CloudEvent.
    pub fn cloud_event(&self, source: &str) -> Value {
        serde_json::to_value(self.event(source)).unwrap_or_default()
    }
}

/// Where events go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Nowhere (events are only counted).
    Discard,
    /// Appended to a file, one JSON event per line.
    File(PathBuf),
    /// POSTed in batches to an HTTP endpoint.
    Http(String),
}

/// The sending side of the event buffer: runs are queued as they are, and
/// turned into CloudEvents by the delivery task, off the run path.
#[derive(Clone)]
pub struct Usage {
    events: mpsc::Sender<SettledRun>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Usage {
    /// A buffer of `capacity` events and the task that delivers them to `sink` (to be spawned; it
    /// ends once every sender is gone and the buffer is delivered or given up).
    pub fn new(
        sink: Sink,
        source: String,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (events, receiver) = mpsc::channel(capacity.max(1));
        let usage = Self { events, dropped: Arc::default(), metrics: metrics.clone() };
        (usage, deliver(sink, source, receiver, metrics))
    }

    /// Queues the event of a settled run; drops it (counted, logged) when the buffer is full.
    pub fn emit(&self, run: SettledRun) {
        if let Err(refused) = self.events.try_send(run) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.usage_events("dropped", 1);
            if dropped.is_power_of_two() {
                let run = match refused {
                    mpsc::error::TrySendError::Full(run) | mpsc::error::TrySendError::Closed(run) => run.id,
                };
                tracing::error!(%run, dropped, "the usage event buffer is full (the sink is down?): events are being dropped");
            }
        }
    }
}

async fn deliver(sink: Sink, source: String, mut receiver: mpsc::Receiver<SettledRun>, metrics: Arc<Metrics>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut backoff = Duration::from_millis(200);
        loop {
            match send(&sink, &source, &http, &batch).await {
                Ok(()) => {
                    metrics.usage_events("delivered", batch.len());
                    break;
                }
                Err(error) => {
                    metrics.usage_events("retried", batch.len());
                    tracing::warn!(%error, events = batch.len(), retry_in_ms = backoff.as_millis() as u64, "usage events not delivered; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if receiver.is_closed() && backoff >= Duration::from_secs(30) {
                        tracing::error!(
                            events = batch.len() + receiver.len(),
                            "shutting down with usage events the sink never took"
                        );
                        metrics.usage_events("dropped", batch.len() + receiver.len());
                        return;
                    }
                }
            }
        }
        batch.clear();
    }
}

async fn send(sink: &Sink, source: &str, http: &reqwest::Client, batch: &[SettledRun]) -> Result<(), String> {
    match sink {
        Sink::Discard => Ok(()),
        Sink::File(path) => {
            let mut lines = Vec::new();
            for run in batch {
                serde_json::to_writer(&mut lines, &run.event(source)).map_err(|e| e.to_string())?;
                lines.push(b'\n');
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(&lines))
                .map_err(|e| format!("appending to {}: {e}", path.display()))
        }
        Sink::Http(url) => {
            let events: Vec<CloudEvent<'_>> = batch.iter().map(|run| run.event(source)).collect();
            let body = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
            let response = http
                .post(url)
                .header("content-type", "application/cloudevents-batch+json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("POST {url} answered {}", response.status()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_has_its_price() {
        let charged: Vec<i64> = [
            Outcome::Success,
            Outcome::RuntimeError,
            Outcome::Timeout,
            Outcome::ClientDisconnected,
            Outcome::Cancelled,
        ]
        .map(|o| o.charge(3))
        .into();
        assert_eq!(charged, [3, 0, 0, 3, 0]);
    }

    #[test]
    fn a_settled_run_is_a_cloud_event_named_by_its_run_id() {
        let run = SettledRun {
            id: "run-1".into(),
            organization: "acme".into(),
            project: "support".into(),
            instance: "bot".into(),
            offering: "echo".into(),
            version: "1".into(),
            plan: "free".into(),
            credits: 1,
            duration_ms: 12,
            outcome: Outcome::Success,
            at: k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("a time"),
        };
        let event = run.cloud_event("cmp-gateway/r1");
        assert_eq!(event["time"], "2027-01-15T08:00:00Z");
        assert_eq!(event["id"], "run-1");
        assert_eq!(event["type"], RUN_SETTLED);
        assert_eq!(event["subject"], "cmp-acme/bot");
        assert_eq!(event["data"]["outcome"], "success");
        assert_eq!(event["data"]["durationMs"], serde_json::Value::Null, "fields are snake_case: duration_ms");
        assert_eq!(event["data"]["duration_ms"], 12);
    }
}
