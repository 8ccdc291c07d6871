//! The flow API of a shared runtime: the operator registers an Instance's
//! flow under the Instance's own flow id, checks that it is still served,
//! and removes it. Which routes depends on the Offering's run API
//! ([`FlowRoutes`]); all are behind the header `x-api-key`, and both kinds of
//! upload replace the flow in one step, so a version change never leaves a
//! gap in which runs find no flow.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cmp_core::secrets::{SecretError, SecretRef, SecretSource};
use cmp_crds::offering::{RuntimeApi, SecretKeyRef};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// How long one call to a runtime may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client with a timeout, for artifacts and runtimes.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap_or_default()
}

/// The flow routes of a shared runtime, by the run API it serves.
///
/// - `v2` (lfx 1.13, `lfx serve`): `GET /flows/{id}/info`, `POST /flows/upload/`
///   (`{id, name, description, data, replace: true}`), `DELETE /flows/{id}`.
/// - `v1` (full Langflow 1.13): `GET /api/v1/flows/{id}`, `PUT /api/v1/flows/{id}`
///   (an upsert of `{name, description, data}`: 201 created, 200 replaced),
///   `DELETE /api/v1/flows/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRoutes(pub RuntimeApi);

impl FlowRoutes {
    /// The path that describes the flow `flow_id` (its `description` is the registration's marker).
    pub fn info(self, flow_id: &str) -> String {
        match self.0 {
            RuntimeApi::V2 => format!("/flows/{flow_id}/info"),
            RuntimeApi::V1 => format!("/api/v1/flows/{flow_id}"),
        }
    }

    /// The method, path and body that register (or replace) `registration`'s flow `data`.
    pub fn upload(self, registration: &Registration, data: Value) -> (reqwest::Method, String, Value) {
        let (name, description) = (&registration.name, registration.marker());
        match self.0 {
            RuntimeApi::V2 => (
                reqwest::Method::POST,
                "/flows/upload/".into(),
                json!({"id": registration.flow_id, "name": name, "description": description, "data": data, "replace": true}),
            ),
            RuntimeApi::V1 => (
                reqwest::Method::PUT,
                format!("/api/v1/flows/{}", registration.flow_id),
                json!({"name": name, "description": description, "data": data}),
            ),
        }
    }

    /// The path that removes the flow `flow_id`.
    pub fn remove(self, flow_id: &str) -> String {
        match self.0 {
            RuntimeApi::V2 => format!("/flows/{flow_id}"),
            RuntimeApi::V1 => format!("/api/v1/flows/{flow_id}"),
        }
    }
}

/// What the operator asks a shared runtime to serve for one Instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The runtime's base URL.
    pub endpoint: String,
    /// The run API it serves, which decides its flow routes.
    pub api: RuntimeApi,
    /// The flow id, derived from the Instance.
    pub flow_id: String,
    /// `<namespace>/<name>` of the Instance: the flow's name in the runtime.
    pub name: String,
    /// The Offering version.
    pub version: String,
    /// The artifact of that version, and its pinned sha256.
    pub artifact_url: String,
    /// The pinned sha256.
    pub sha256: String,
}

impl Registration {
    /// The description the flow is registered with: it says what is served,
    /// so a probe tells an up-to-date registration from a stale one.
    pub fn marker(&self) -> String {
        format!("cmp {} version {} sha256 {}", self.name, self.version, self.sha256)
    }
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No answer.
    #[error("the runtime at {endpoint} did not answer: {reason}")]
    Unreachable {
        /// The runtime.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// An answer that is not success.
    #[error("the runtime at {endpoint} answered {status} to {what}: {body}")]
    Refused {
        /// The runtime.
        endpoint: String,
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// What the last look at an Instance's registration found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// What was to be served.
    pub registration: Registration,
    /// Whether the runtime serves it; else why not (and the reason for conditions).
    pub outcome: Result<(), (&'static str, String)>,
    /// When.
    pub at: Timestamp,
}

/// The operator's client of shared runtimes, with the last probe of every Instance.
pub struct SharedRuntimes {
    http: reqwest::Client,
    probes: Mutex<HashMap<String, Probe>>,
    api_keys: Mutex<HashMap<String, (String, Timestamp)>>,
}

/// How long a runtime's API key read from its Secret is used before it is read again.
const API_KEY_TTL: Duration = Duration::from_secs(60);

impl Default for SharedRuntimes {
    fn default() -> Self {
        Self { http: http_client(CALL_TIMEOUT), probes: Mutex::default(), api_keys: Mutex::default() }
    }
}

fn base(endpoint: &str) -> &str {
    endpoint.trim_end_matches('/')
}

impl SharedRuntimes {
    /// The last probe of the Instance `key` by this process.
    pub fn probe(&self, key: &str) -> Option<Probe> {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    /// Remembers a probe of the Instance `key`.
    pub fn record(&self, key: &str, probe: Probe) {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner).insert(key.to_string(), probe);
    }

    /// The runtime API key in the Secret `reference`, read through `secrets` at most once a minute.
    pub async fn api_key(&self, secrets: &dyn SecretSource, reference: &SecretKeyRef) -> Result<String, String> {
        let id = format!("{}/{}/{}", reference.namespace, reference.name, reference.key);
        let now = Timestamp::now();
        if let Some((key, at)) = self.api_keys.lock().unwrap_or_else(PoisonError::into_inner).get(&id)
            && crate::shell::elapsed(*at, now) < API_KEY_TTL
        {
            return Ok(key.clone());
        }
        let at = SecretRef::Kubernetes {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        };
        let key = secrets.read(&at).await.map_err(|e| {
            let why = match e {
                SecretError::Missing(_) => "does not exist; create it".to_string(),
                SecretError::Unreadable { reason, .. } => format!("cannot be read: {reason}"),
            };
            format!(
                "the runtime's API key (spec.runtime.apiKeySecretRef: Secret {}/{}, key {}) {why}",
                reference.namespace, reference.name, reference.key
            )
        })?;
        self.api_keys.lock().unwrap_or_else(PoisonError::into_inner).insert(id, (key.clone(), now));
        Ok(key)
    }

    /// Forgets the Instance `key`.
    pub fn forget(&self, key: &str) {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    async fn call(request: reqwest::RequestBuilder, endpoint: &str) -> Result<reqwest::Response, RuntimeError> {
        request.send().await.map_err(|e| RuntimeError::Unreachable { endpoint: endpoint.into(), reason: e.to_string() })
    }

    async fn refused(response: reqwest::Response, endpoint: &str, what: &str) -> RuntimeError {
        let status = response.status().as_u16();
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        RuntimeError::Refused { endpoint: endpoint.into(), what: what.into(), status, body }
    }

    /// The description the runtime serves the flow `flow_id` under, or None when it does not serve it.
    pub async fn registered(
        &self,
        endpoint: &str,
        routes: FlowRoutes,
        api_key: &str,
        flow_id: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let path = routes.info(flow_id);
        let what = format!("GET {path}");
        let url = format!("{}{path}", base(endpoint));
        let response = Self::call(self.http.get(url).header("x-api-key", api_key), endpoint).await?;
        match response.status().as_u16() {
            404 => Ok(None),
            200..=299 => {
                let info: Value = response.json().await.map_err(|e| RuntimeError::Unreachable {
                    endpoint: endpoint.into(),
                    reason: format!("unreadable answer to {what}: {e}"),
                })?;
                Ok(Some(info["description"].as_str().unwrap_or_default().to_string()))
            }
            _ => Err(Self::refused(response, endpoint, &what).await),
        }
    }

    /// Registers (or replaces in one step) the flow of `registration`, whose artifact is `flow` (a Langflow export).
    pub async fn upload(&self, registration: &Registration, api_key: &str, flow: &Value) -> Result<(), RuntimeError> {
        let endpoint = &registration.endpoint;
        let data = flow.get("data").cloned().unwrap_or_else(|| flow.clone());
        let (method, path, body) = FlowRoutes(registration.api).upload(registration, data);
        let what = format!("{method} {path}");
        let url = format!("{}{path}", base(endpoint));
        let request = self.http.request(method, url).header("x-api-key", api_key).json(&body);
        let response = Self::call(request, endpoint).await?;
        if response.status().is_success() { Ok(()) } else { Err(Self::refused(response, endpoint, &what).await) }
    }

    /// Removes the flow `flow_id`; one that is already gone is fine.
    pub async fn remove(
        &self,
        endpoint: &str,
        routes: FlowRoutes,
        api_key: &str,
        flow_id: &str,
    ) -> Result<(), RuntimeError> {
        let path = routes.remove(flow_id);
        let what = format!("DELETE {path}");
        let url = format!("{}{path}", base(endpoint));
        let response = Self::call(self.http.delete(url).header("x-api-key", api_key), endpoint).await?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(Self::refused(response, endpoint, &what).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(api: RuntimeApi) -> Registration {
        Registration {
            endpoint: "http://runtime:7860".into(),
            api,
            flow_id: "0f0e0d0c-0b0a-8908-8706-050403020100".into(),
            name: "cmp-acme/bot".into(),
            version: "1".into(),
            artifact_url: "file:///flow.json".into(),
            sha256: "ab".into(),
        }
    }

    #[test]
    fn lfx_takes_flows_on_its_upload_route_and_langflow_on_its_upsert() {
        let data = json!({"nodes": [], "edges": []});
        let lfx = registration(RuntimeApi::V2);
        let (method, path, body) = FlowRoutes(RuntimeApi::V2).upload(&lfx, data.clone());
        assert_eq!((method, path.as_str()), (reqwest::Method::POST, "/flows/upload/"));
        assert_eq!(body["id"], lfx.flow_id.as_str());
        assert_eq!(body["replace"], true);
        assert_eq!(body["description"], lfx.marker().as_str());
        assert_eq!(FlowRoutes(RuntimeApi::V2).info(&lfx.flow_id), format!("/flows/{}/info", lfx.flow_id));

        let langflow = registration(RuntimeApi::V1);
        let (method, path, body) = FlowRoutes(RuntimeApi::V1).upload(&langflow, data.clone());
        assert_eq!((method, path), (reqwest::Method::PUT, format!("/api/v1/flows/{}", langflow.flow_id)));
        // The id is the path's; Langflow's FlowCreate has no `replace`.
        assert_eq!(body, json!({"name": "cmp-acme/bot", "description": langflow.marker(), "data": data}));
        assert_eq!(FlowRoutes(RuntimeApi::V1).info(&langflow.flow_id), format!("/api/v1/flows/{}", langflow.flow_id));
        assert_eq!(FlowRoutes(RuntimeApi::V1).remove(&langflow.flow_id), format!("/api/v1/flows/{}", langflow.flow_id));
    }
}
