//! The request a run sends to its runtime. The caller's body passes only the
//! input, the session id and the tweaks; the flow, the runtime and the
//! tenant come from the CRs.
//!
//! - `v2` (lfx, and Langflow with its developer API): `POST /api/v2/workflows`
//!   with `{flow_id, input_value, session_id, tweaks, mode: sync|stream}`.
//! - `v1` (full Langflow): `POST /api/v1/run/{flow}?stream=true|false` with
//!   `{input_value, input_type, output_type, session_id, tweaks}`.
//!
//! Both carry the runtime's own key in `x-api-key`.

use cmp_crds::offering::RuntimeApi;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::authorize::RunTarget;
use crate::refusal::{Code, Refusal};

/// What a caller may send to run an agent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The input (`input` is accepted too).
    #[serde(default, alias = "input")]
    pub input_value: String,
    /// The conversation the run belongs to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Per-component overrides of the flow.
    #[serde(default)]
    pub tweaks: Map<String, Value>,
    /// Stream the answer as it is produced.
    #[serde(default)]
    pub stream: bool,
    /// `v1` only: `chat` or `text`.
    #[serde(default)]
    pub input_type: Option<String>,
    /// `v1` only: `chat`, `any` or `debug`.
    #[serde(default)]
    pub output_type: Option<String>,
}

/// The most bytes of a session id.
const MAX_SESSION_ID: usize = 256;

impl RunRequest {
    /// Parses a body; an empty body is a run with no input.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let request: Self = serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                Code::MalformedRequest,
                format!(
                    "the body must be JSON {{\"input_value\", \"session_id\", \"tweaks\", \"stream\"}} (the flow and the runtime come from the Instance): {e}"
                ),
            )
        })?;
        if request.session_id.as_ref().is_some_and(|s| s.len() > MAX_SESSION_ID) {
            return Err(Refusal::new(
                Code::MalformedRequest,
                format!("session_id is longer than {MAX_SESSION_ID} bytes"),
            ));
        }
        Ok(request)
    }
}

#[derive(Serialize)]
struct V2Body<'r> {
    flow_id: &'r str,
    input_value: &'r str,
    tweaks: &'r Map<String, Value>,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    globals: Option<Globals<'r>>,
}

/// The request-level global variables of a v2 run: the run token, when the Instance has connectors.
#[derive(Serialize)]
struct Globals<'r> {
    #[serde(rename = "CMP_RUN_TOKEN")]
    run_token: &'r str,
}

/// The global variable (and, for `v1`, the `X-LANGFLOW-GLOBAL-VAR-` header) that carries a run's token.
pub const RUN_TOKEN_VARIABLE: &str = "CMP_RUN_TOKEN";

#[derive(Serialize)]
struct V1Body<'r> {
    input_value: &'r str,
    tweaks: &'r Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_type: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_type: Option<&'r str>,
}

/// The runtime URL and JSON body of a run; a `v2` body carries `run_token` in its globals.
pub fn upstream(target: &RunTarget, run: &RunRequest, run_token: Option<&str>) -> (String, Vec<u8>) {
    let base = target.endpoint.trim_end_matches('/');
    let (url, body) = match target.api {
        RuntimeApi::V2 => {
            let body = V2Body {
                flow_id: &target.flow_id,
                input_value: &run.input_value,
                tweaks: &run.tweaks,
                mode: if run.stream { "stream" } else { "sync" },
                session_id: run.session_id.as_deref(),
                globals: run_token.map(|run_token| Globals { run_token }),
            };
            (format!("{base}/api/v2/workflows"), serde_json::to_vec(&body))
        }
        RuntimeApi::V1 => {
            let body = V1Body {
                input_value: &run.input_value,
                tweaks: &run.tweaks,
                session_id: run.session_id.as_deref(),
                input_type: run.input_type.as_deref(),
                output_type: run.output_type.as_deref(),
            };
            (format!("{base}/api/v1/run/{}?stream={}", target.flow_id, run.stream), serde_json::to_vec(&body))
        }
    };
    // Serializing strings and a JSON map cannot fail.
    (url, body.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::offering::Plan;
    use serde_json::json;

    fn target(api: RuntimeApi) -> RunTarget {
        RunTarget {
            organization: "acme".into(),
            project: "support".into(),
            instance: "bot".into(),
            namespace: "cmp-acme".into(),
            offering: "echo".into(),
            version: "1".into(),
            plan: serde_json::from_value::<Plan>(json!({"id": "free", "creditsPerRun": 1})).expect("a plan"),
            endpoint: "http://127.0.0.1:7861/".into(),
            flow_id: "f-1".into(),
            api,
            runtime_key: None,
            wallet: ("cmp-acme".into(), "acme".into()),
            has_connectors: false,
        }
    }

    #[test]
    fn the_flow_comes_from_the_instance_never_from_the_body() {
        let refused = RunRequest::parse(br#"{"input_value":"hi","flow_id":"someone-elses"}"#);
        assert_eq!(refused.expect_err("refused").code, Code::MalformedRequest);
        let run = RunRequest::parse(br#"{"input":"hi","session_id":"s1","tweaks":{"a":{"b":1}}}"#).expect("parses");
        let (url, body) = upstream(&target(RuntimeApi::V2), &run, None);
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(url, "http://127.0.0.1:7861/api/v2/workflows");
        assert_eq!(
            body,
            json!({"flow_id": "f-1", "input_value": "hi", "session_id": "s1", "tweaks": {"a": {"b": 1}}, "mode": "sync"})
        );
    }

    #[test]
    fn v1_runs_name_the_flow_in_the_path_and_stream_in_the_query() {
        let run = RunRequest::parse(br#"{"input_value":"hi","stream":true,"output_type":"chat"}"#).expect("parses");
        let (url, body) = upstream(&target(RuntimeApi::V1), &run, None);
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(url, "http://127.0.0.1:7861/api/v1/run/f-1?stream=true");
        assert_eq!(body, json!({"input_value": "hi", "tweaks": {}, "output_type": "chat"}));
    }

    #[test]
    fn bad_bodies_are_refused_with_what_to_send() {
        for body in [&b"not json"[..], br#"[1]"#, br#"{"tweaks":[]}"#, br#"{"stream":"yes"}"#] {
            let refusal = RunRequest::parse(body).expect_err("refused");
            assert_eq!(refusal.code, Code::MalformedRequest);
            assert!(refusal.message.contains("input_value"), "{}", refusal.message);
        }
        let long = format!(r#"{{"session_id":"{}"}}"#, "s".repeat(300));
        assert_eq!(RunRequest::parse(long.as_bytes()).expect_err("refused").code, Code::MalformedRequest);
        assert_eq!(RunRequest::parse(b"  ").expect("an empty body is an empty run"), RunRequest::default());
    }
}
