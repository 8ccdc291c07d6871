//! `kubectl cmp run <instance> "input"`: one run through the gateway.

use cmp_crds::Instance;
use kube::api::Api;
use serde_json::{Value, json};

use crate::error::Error;
use crate::keys::read_key;
use crate::output::{Format, print};
use crate::{Outcome, Target};

/// The agent's answer in a run response, when it has one (pure): lfx's
/// `output.text`, else Langflow's first message.
pub fn answer_text(response: &Value) -> Option<String> {
    response["output"]["text"]
        .as_str()
        .or_else(|| response["outputs"][0]["outputs"][0]["results"]["message"]["text"].as_str())
        .map(str::to_string)
}

pub async fn run(
    target: &Target,
    instance: &str,
    input: &str,
    gateway: &str,
    key: Option<String>,
    key_name: Option<&str>,
    format: Format,
) -> Result<Outcome, Error> {
    let key = match key {
        Some(key) => key,
        None => {
            let found = Api::<Instance>::namespaced(target.client.clone(), &target.namespace)
                .get_opt(instance)
                .await?
                .ok_or_else(|| Error::NotFound {
                    kind: "Instance",
                    name: instance.to_string(),
                    namespace: target.namespace.clone(),
                })?;
            let revoked = |name: &str| found.spec.api_keys.iter().any(|k| k.name == name && k.revoked);
            let status = found.status.as_ref().map(|s| s.api_keys.as_slice()).unwrap_or_default();
            let chosen = match key_name {
                Some(name) => status.iter().find(|k| k.name == name),
                None => status.iter().find(|k| !revoked(&k.name)),
            };
            let chosen = chosen.ok_or_else(|| {
                Error::Usage(format!(
                    "Instance {instance} has no issued key{}: `kubectl cmp keys create {instance} <name>`, or pass --key",
                    key_name.map(|n| format!(" named {n}")).unwrap_or_default()
                ))
            })?;
            read_key(target, chosen).await?
        }
    };
    let url = format!("{}/v1/runs", gateway.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({"input_value": input}))
        .send()
        .await
        .map_err(|source| Error::Gateway { url: url.clone(), source })?;
    let status = response.status();
    let body = response.text().await.map_err(|source| Error::Gateway { url: url.clone(), source })?;
    let parsed: Value = serde_json::from_str(&body).unwrap_or_else(|_| json!({"body": body}));
    if !status.is_success() {
        let code = parsed["error"]["code"].as_str().unwrap_or("unknown");
        let message = parsed["error"]["message"].as_str().unwrap_or(&body);
        eprintln!("the gateway refused the run: {} {code}: {message}", status.as_u16());
        return Ok(Outcome::Problem);
    }
    print(format, &parsed, |v| answer_text(v).unwrap_or_else(|| v.to_string()))?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_flows_text() {
        assert_eq!(answer_text(&json!({"output": {"text": "hello"}})).as_deref(), Some("hello"));
        let langflow = json!({"outputs": [{"outputs": [{"results": {"message": {"text": "hi"}}}]}]});
        assert_eq!(answer_text(&langflow).as_deref(), Some("hi"));
        assert_eq!(answer_text(&json!({"status": "completed"})), None);
    }
}
