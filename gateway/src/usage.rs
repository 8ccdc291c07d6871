//! Usage events: one CloudEvent per settled run (`id` = the run id, so a
//! redelivery is deduplicated downstream) and one per tool call (the audit
//! log of the connector gateway), delivered at least once to an
//! HTTP sink in OpenMeter's ingest format (`application/cloudevents-batch+json`)
//! or appended to a file (one event per line) for local use.
//!
//! Events wait in a bounded buffer and leave in batches (up to 100, or what
//! came within 20 ms). While the sink is down a batch is tried
//! again with backoff; what does not fit in the buffer meanwhile is dropped,
//! counted (`cmp_gateway_usage_events_total{result="dropped"}`) and logged.
//! A tool call is different: its slot is reserved before the call is made
//! ([`Usage::reserve`]), and a call whose audit record cannot be buffered is
//! refused, so audit fails closed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

pub use cmp_crds::usage::{Outcome, RUN_SETTLED, Record, SettledRun, TOOL_CALLED, ToolCall, ToolOutcome};

use crate::metrics::Metrics;

/// The most events sent in one request.
const BATCH: usize = 100;
/// How long a batch that is not full waits for more events: at low rates one write (or POST) per
/// this long, not one per event. Not when shutting down.
const LINGER: Duration = Duration::from_millis(20);

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
    events: mpsc::Sender<Record>,
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
        metrics.usage_backlog(0, receiver.max_capacity());
        let usage = Self { events, dropped: Arc::default(), metrics: metrics.clone() };
        (usage, deliver(sink, source, receiver, metrics))
    }

    /// Queues the event of a settled run; drops it (counted, logged) when the buffer is full.
    pub fn emit(&self, run: SettledRun) {
        self.queue(Record::Run(run));
    }

    /// Queues a record; drops it (counted, logged) when the buffer is full.
    pub fn queue(&self, record: Record) {
        if let Err(refused) = self.events.try_send(record) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.usage_events("dropped", 1);
            if dropped.is_power_of_two() {
                let record = match refused {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                };
                tracing::error!(record = %record.id(), dropped, "the usage event buffer is full (the sink is down?): events are being dropped");
            }
        }
    }

    /// A slot in the buffer for one record, or `None` when the buffer is full:
    /// the caller must not do what it cannot record.
    pub fn reserve(&self) -> Option<mpsc::OwnedPermit<Record>> {
        self.events.clone().try_reserve_owned().ok()
    }
}

async fn deliver(sink: Sink, source: String, mut receiver: mpsc::Receiver<Record>, metrics: Arc<Metrics>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH && !receiver.is_closed() {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                let Ok(record) = receiver.try_recv() else { break };
                batch.push(record);
            }
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            metrics.usage_backlog(batch.len() + receiver.len(), receiver.max_capacity());
            match send(&sink, &source, &http, &batch).await {
                Ok(()) => {
                    metrics.usage_events("delivered", batch.len());
                    metrics.usage_backlog(receiver.len(), receiver.max_capacity());
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

async fn send(sink: &Sink, source: &str, http: &reqwest::Client, batch: &[Record]) -> Result<(), String> {
    match sink {
        Sink::Discard => Ok(()),
        Sink::File(path) => {
            let mut lines = Vec::new();
            for record in batch {
                serde_json::to_writer(&mut lines, &record.cloud_event(source)).map_err(|e| e.to_string())?;
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
            let events: Vec<serde_json::Value> = batch.iter().map(|record| record.cloud_event(source)).collect();
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
