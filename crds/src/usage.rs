//! The usage event schema, shared by the gateway, which emits the events, and
//! by whatever reads them:
//!
//! - one CloudEvent per settled run, of type [`RUN_SETTLED`], whose `id` is
//!   the run id (so a redelivery is deduplicated downstream) and whose data
//!   names the tenant, the Offering, the plan, the credits charged and how
//!   the run ended;
//! - one CloudEvent per tool call through the connector gateway, of type
//!   [`TOOL_CALLED`], whose `id` is the call id and whose data joins it to its
//!   run: the audit log of every call, refusals included.

use serde::Serialize;
use serde_json::Value;

/// The CloudEvents type of a settled run.
pub const RUN_SETTLED: &str = "dev.gsv.cmp.run.settled";
/// The CloudEvents type of a tool call (or a refused attempt) through the connector gateway.
pub const TOOL_CALLED: &str = "dev.gsv.cmp.tool.called";
/// The CloudEvents type of a document indexed into a knowledge base.
pub const KNOWLEDGE_INGESTED: &str = "dev.gsv.cmp.knowledge.ingested";

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

/// A usage record as a CloudEvent (structured mode, JSON).
#[derive(Serialize)]
pub struct CloudEvent<'r, T: Serialize> {
    specversion: &'static str,
    id: &'r str,
    source: &'r str,
    #[serde(rename = "type")]
    type_: &'static str,
    subject: String,
    time: String,
    datacontenttype: &'static str,
    data: &'r T,
}

fn subject(organization: &str, instance: &str) -> String {
    format!("{}/{instance}", crate::names::control_namespace(organization))
}

impl SettledRun {
    /// The run as a CloudEvent from `source`, to serialize.
    pub fn event<'r>(&'r self, source: &'r str) -> CloudEvent<'r, Self> {
        CloudEvent {
            specversion: "1.0",
            id: &self.id,
            source,
            type_: RUN_SETTLED,
            subject: subject(&self.organization, &self.instance),
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

/// A document indexed into an Instance's knowledge base, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingestion {
    /// The event id (the upload's request id).
    #[serde(skip)]
    pub id: String,
    /// The Organization.
    pub organization: String,
    /// The Project.
    pub project: String,
    /// The Instance's name.
    pub instance: String,
    /// The API key's public id that uploaded it (empty for a token).
    pub key: String,
    /// The document's id.
    pub document: String,
    /// Its size.
    pub bytes: u64,
    /// The chunks indexed.
    pub chunks: u64,
    /// Credits charged.
    pub credits: i64,
    /// The replica that charged it.
    pub replica: String,
    /// When it was indexed.
    #[serde(skip)]
    pub at: k8s_openapi::jiff::Timestamp,
}

impl Ingestion {
    /// The ingestion as a CloudEvent from `source`, to serialize.
    pub fn event<'r>(&'r self, source: &'r str) -> CloudEvent<'r, Self> {
        CloudEvent {
            specversion: "1.0",
            id: &self.id,
            source,
            type_: KNOWLEDGE_INGESTED,
            subject: subject(&self.organization, &self.instance),
            time: self.at.to_string(),
            datacontenttype: "application/json",
            data: self,
        }
    }
}

/// How a tool call ended, which decides what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// The tool answered with a result: the plan's price per tool call.
    Success,
    /// The tool answered with an error (`isError`, or a JSON-RPC error): free.
    ToolError,
    /// The MCP server could not be reached or its answer was unusable: free.
    UpstreamError,
    /// The binding's timeout passed: free.
    Timeout,
    /// The gateway refused the call (a security event; `refusal` says which rule): free.
    Refused,
    /// Not a tool call (initialize, tools/list, ...): free, audited.
    Served,
}

/// One call through the connector gateway, joined to its run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// The call id.
    #[serde(skip)]
    pub id: String,
    /// The run the call was made for.
    pub run: String,
    /// The Organization.
    pub organization: String,
    /// The Project.
    pub project: String,
    /// The Instance's name.
    pub instance: String,
    /// The binding (`spec.connectors[].name`).
    pub binding: String,
    /// The JSON-RPC method, for example "tools/call".
    pub method: String,
    /// The tool, for a tools/call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// The refusal's code, for a refused call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Credits charged.
    pub credits: i64,
    /// How long the call took, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of the request sent to the MCP server.
    pub bytes_sent: u64,
    /// Bytes of the MCP server's answer.
    pub bytes_received: u64,
    /// The replica that served (and charged) the call.
    pub replica: String,
    /// When it ended.
    #[serde(skip)]
    pub at: k8s_openapi::jiff::Timestamp,
}

impl ToolCall {
    /// The call as a CloudEvent from `source`, to serialize.
    pub fn event<'r>(&'r self, source: &'r str) -> CloudEvent<'r, Self> {
        CloudEvent {
            specversion: "1.0",
            id: &self.id,
            source,
            type_: TOOL_CALLED,
            subject: subject(&self.organization, &self.instance),
            time: self.at.to_string(),
            datacontenttype: "application/json",
            data: self,
        }
    }
}

/// A usage record: what the gateway's usage sink carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A settled run.
    Run(SettledRun),
    /// A tool call.
    Tool(ToolCall),
    /// A document added to a knowledge base.
    Ingestion(Ingestion),
}

impl Record {
    /// The record as a CloudEvent.
    pub fn cloud_event(&self, source: &str) -> Value {
        match self {
            Record::Run(run) => serde_json::to_value(run.event(source)),
            Record::Tool(call) => serde_json::to_value(call.event(source)),
            Record::Ingestion(ingestion) => serde_json::to_value(ingestion.event(source)),
        }
        .unwrap_or_default()
    }

    /// The record's id.
    pub fn id(&self) -> &str {
        match self {
            Record::Run(run) => &run.id,
            Record::Tool(call) => &call.id,
            Record::Ingestion(ingestion) => &ingestion.id,
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
