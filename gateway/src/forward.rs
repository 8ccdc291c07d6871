//! The request a run sends to its runtime. The caller's body passes only the
//! input, the session id and the inputs its Offering version declares
//! ([`cmp_crds::inputs`]); the flow, the runtime and the tenant come from the
//! CRs, and the gateway builds the tweaks and globals the runtime gets from
//! the declarations, never from the caller. The caller's `tweaks` are taken
//! as inputs by name: a component id or a field is refused
//! (`tweak_not_allowed`).
//!
//! The session id the runtime sees is scoped to the Instance
//! ([`cmp_crds::names::scoped_session`]): no two Instances share a conversation, whatever ids
//! their callers choose.
//!
//! - `v2` (lfx, and Langflow with its developer API): `POST /api/v2/workflows`
//!   with `{flow_id, input_value, session_id, tweaks, mode: sync|stream}`.
//! - `v1` (full Langflow): `POST /api/v1/run/{flow}?stream=true|false` with
//!   `{input_value, input_type, output_type, session_id, tweaks}`.
//!
//! Both carry the runtime's own key in `x-api-key`.

use cmp_crds::inputs::InputRefusal;
use cmp_crds::offering::{CallerInput, RuntimeApi};
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
    /// The inputs the Offering version declares, by name.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Taken as `inputs` (by input name, never a component's); once placed, the per-component overrides the
    /// declarations give.
    #[serde(default)]
    pub tweaks: Map<String, Value>,
    /// The request globals the declarations give (placed by the gateway; never read from the body).
    #[serde(skip)]
    pub globals: Map<String, Value>,
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
                    "the body must be JSON {{\"input_value\", \"session_id\", \"inputs\", \"stream\"}} (the flow and the runtime come from the Instance; \"inputs\" only those the agent declares): {e}"
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

    /// Checks the caller's inputs against the target's declared inputs and places them, then places the buyer's
    /// settings over them: a caller never overrides a setting.
    pub fn place(&mut self, target: &RunTarget) -> Result<(), Refusal> {
        self.place_inputs(&target.inputs)?;
        for (setting, value) in &target.settings {
            self.put(setting, value.clone());
        }
        Ok(())
    }

    /// Checks the caller's inputs (`inputs`, and `tweaks` taken as inputs) against the version's `declared` inputs
    /// and puts each where its declaration says: the tweaks and globals the runtime gets are built here.
    pub fn place_inputs(&mut self, declared: &[CallerInput]) -> Result<(), Refusal> {
        let mut sent = std::mem::take(&mut self.inputs);
        for (name, value) in std::mem::take(&mut self.tweaks) {
            if sent.insert(name.clone(), value).is_some() {
                let why = format!("the input {name:?} is sent in both \"inputs\" and \"tweaks\": send it once");
                return Err(Refusal::new(Code::MalformedRequest, why));
            }
        }
        let checked = cmp_crds::inputs::check(declared, &sent).map_err(|refusal| {
            let code = match refusal {
                InputRefusal::NotDeclared { .. } => Code::TweakNotAllowed,
                InputRefusal::Invalid { .. } => Code::InvalidInput,
            };
            Refusal::new(code, refusal.to_string())
        })?;
        for (input, value) in checked {
            self.put(input, value);
        }
        Ok(())
    }

    /// Puts `value` where `declared` says: a component's field in the tweaks, or a request global.
    fn put(&mut self, declared: &CallerInput, value: Value) {
        cmp_crds::inputs::place(declared, value, &mut self.tweaks, &mut self.globals);
    }
}

#[derive(Serialize)]
struct V2Body<'r> {
    flow_id: &'r str,
    input_value: &'r str,
    tweaks: &'r Map<String, Value>,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    globals: Map<String, Value>,
}

/// The global variable (and, for `v1`, the `X-LANGFLOW-GLOBAL-VAR-` header) that carries a run's token.
pub const RUN_TOKEN_VARIABLE: &str = "CMP_RUN_TOKEN";

#[derive(Serialize)]
struct V1Body<'r> {
    input_value: &'r str,
    tweaks: &'r Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_type: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_type: Option<&'r str>,
}

/// The runtime URL and JSON body of a run; a `v2` body carries `run_token` in its globals.
pub fn upstream(target: &RunTarget, run: &RunRequest, run_token: Option<&str>) -> (String, Vec<u8>) {
    let base = target.endpoint.trim_end_matches('/');
    let session_id =
        run.session_id.as_deref().map(|s| cmp_crds::names::scoped_session(&target.namespace, &target.instance, s));
    let (url, body) = match target.api {
        RuntimeApi::V2 => {
            let mut globals = run.globals.clone();
            if let Some(token) = run_token {
                globals.insert(RUN_TOKEN_VARIABLE.to_string(), Value::String(token.to_string()));
            }
            let body = V2Body {
                flow_id: &target.flow_id,
                input_value: &run.input_value,
                tweaks: &run.tweaks,
                mode: if run.stream { "stream" } else { "sync" },
                session_id,
                globals,
            };
            (format!("{base}/api/v2/workflows"), serde_json::to_vec(&body))
        }
        RuntimeApi::V1 => {
            let body = V1Body {
                input_value: &run.input_value,
                tweaks: &run.tweaks,
                session_id,
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
            runtime_key_instance_uid: None,
            wallet: ("cmp-acme".into(), "acme".into()),
            has_connectors: false,
            inputs: vec![],
            settings: vec![],
        }
    }

    #[test]
    fn the_flow_comes_from_the_instance_never_from_the_body() {
        let refused = RunRequest::parse(br#"{"input_value":"hi","flow_id":"someone-elses"}"#);
        assert_eq!(refused.expect_err("refused").code, Code::MalformedRequest);
        let mut run = RunRequest::parse(br#"{"input":"hi","session_id":"s1","inputs":{"tone":"formal","top":2}}"#)
            .expect("parses");
        let declared: Vec<CallerInput> = serde_json::from_value(json!([
            {"name": "tone", "type": "string", "target": {"global": "TONE"}},
            {"name": "top", "type": "integer", "target": {"component": "Search-1", "field": "k"}},
        ]))
        .expect("declarations");
        run.place_inputs(&declared).expect("declared inputs");
        let (url, body) = upstream(&target(RuntimeApi::V2), &run, Some("cmpr_token"));
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(url, "http://127.0.0.1:7861/api/v2/workflows");
        let session = cmp_crds::names::scoped_session("cmp-acme", "bot", "s1");
        assert_eq!(
            body,
            json!({"flow_id": "f-1", "input_value": "hi", "session_id": session, "tweaks": {"Search-1": {"k": 2}},
                   "mode": "sync", "globals": {"TONE": "formal", "CMP_RUN_TOKEN": "cmpr_token"}})
        );
    }

    #[test]
    fn a_caller_reaches_no_field_the_version_does_not_declare() {
        let declared: Vec<CallerInput> =
            serde_json::from_value(json!([{"name": "tone", "type": "string", "target": {"global": "TONE"}}]))
                .expect("declarations");
        // The old way to reach any field of any component, and a global of the platform's own.
        for body in [
            &br#"{"tweaks":{"OpenAIModel-1":{"openai_api_base":"https://evil.example"}}}"#[..],
            br#"{"inputs":{"CMP_RUN_TOKEN":"forged"}}"#,
            br#"{"tweaks":{"tone":"formal"},"inputs":{"collection":"globex"}}"#,
        ] {
            let mut run = RunRequest::parse(body).expect("parses");
            let refusal = run.place_inputs(&declared).expect_err("refused");
            assert_eq!(refusal.code, Code::TweakNotAllowed, "{}", refusal.message);
            assert!(refusal.message.contains("it takes tone"), "{}", refusal.message);
        }
        let mut bad = RunRequest::parse(br#"{"inputs":{"tone":7}}"#).expect("parses");
        assert_eq!(bad.place_inputs(&declared).expect_err("refused").code, Code::InvalidInput);
        let mut twice = RunRequest::parse(br#"{"inputs":{"tone":"a"},"tweaks":{"tone":"b"}}"#).expect("parses");
        assert_eq!(twice.place_inputs(&declared).expect_err("refused").code, Code::MalformedRequest);
        // Nothing declared: nothing beyond the input text and the session id.
        let mut plain = RunRequest::parse(br#"{"input":"hi","session_id":"s"}"#).expect("parses");
        plain.place_inputs(&[]).expect("no inputs sent");
        assert!(plain.tweaks.is_empty() && plain.globals.is_empty());
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
