//! The validating admission endpoint (`POST /validate`), served over TLS to
//! the API server.
//!
//! Reads come from the watch caches; a miss is confirmed with one GET, so an
//! object created a moment ago (the provisioner creates a Project and then
//! its Instances at once) is never refused because the cache lags.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use cmp_crds::{Instance, Offering, Project, Wallet};
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::de::DeserializeOwned;

use crate::admission::{InstanceReferences, check_instance, check_wallet};

/// The path the API server posts AdmissionReviews to.
pub const VALIDATE_PATH: &str = "/validate";

/// What the admission endpoint reads.
pub struct Admission {
    /// For confirming cache misses.
    pub client: kube::Client,
    /// The Offerings.
    pub offerings: Store<Offering>,
    /// The Projects.
    pub projects: Store<Project>,
    /// The user names allowed to append grants from `SaleorOrder`.
    pub provisioners: Vec<String>,
}

impl Admission {
    async fn project_exists(&self, namespace: &str, name: &str) -> Result<bool, kube::Error> {
        if self.projects.get(&ObjectRef::new(name).within(namespace)).is_some() {
            return Ok(true);
        }
        Ok(Api::<Project>::namespaced(self.client.clone(), namespace).get_opt(name).await?.is_some())
    }

    async fn offering(&self, name: &str) -> Result<Option<Arc<Offering>>, kube::Error> {
        if let Some(offering) = self.offerings.get(&ObjectRef::new(name)) {
            return Ok(Some(offering));
        }
        Ok(Api::<Offering>::all(self.client.clone()).get_opt(name).await?.map(Arc::new))
    }

    /// The verdict on one request.
    async fn review(&self, request: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
        let (Some(object), kind) = (request.object.as_ref(), request.kind.kind.as_str()) else {
            return Ok(()); // deletions carry no object; nothing to check
        };
        match kind {
            "Instance" => {
                let new: Instance = typed(object, "the Instance")?;
                let old: Option<Instance> =
                    request.old_object.as_ref().map(|o| typed(o, "the old Instance")).transpose()?;
                let namespace = request.namespace.clone().unwrap_or_default();
                let unavailable = |e: kube::Error| format!("the references of the Instance cannot be checked now: {e}");
                let project_exists = self.project_exists(&namespace, &new.spec.project).await.map_err(unavailable)?;
                let offering = self.offering(&new.spec.offering).await.map_err(unavailable)?;
                check_instance(&new, old.as_ref(), InstanceReferences { project_exists, offering: offering.as_deref() })
            }
            "Wallet" => {
                let new: Wallet = typed(object, "the Wallet")?;
                let old: Option<Wallet> =
                    request.old_object.as_ref().map(|o| typed(o, "the old Wallet")).transpose()?;
                check_wallet(
                    &new,
                    old.as_ref(),
                    &request.user_info.username.clone().unwrap_or_default(),
                    &self.provisioners,
                )
            }
            _ => Ok(()),
        }
    }
}

fn typed<K: DeserializeOwned>(object: &DynamicObject, what: &str) -> Result<K, String> {
    serde_json::to_value(object).and_then(serde_json::from_value).map_err(|e| format!("{what} cannot be read: {e}"))
}

async fn validate(
    State(admission): State<Arc<Admission>>,
    axum::Json(review): axum::Json<AdmissionReview<DynamicObject>>,
) -> axum::Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "an AdmissionReview without a request");
            return axum::Json(AdmissionResponse::invalid(error.to_string()).into_review());
        }
    };
    let response = match admission.review(&request).await {
        Ok(()) => AdmissionResponse::from(&request),
        Err(message) => {
            tracing::info!(kind = %request.kind.kind, namespace = request.namespace.as_deref().unwrap_or(""),
                name = %request.name, user = request.user_info.username.as_deref().unwrap_or(""), %message, "admission denied");
            AdmissionResponse::from(&request).deny(message)
        }
    };
    axum::Json(response.into_review())
}

/// The admission routes.
pub fn router(admission: Arc<Admission>) -> Router {
    Router::new().route(VALIDATE_PATH, post(validate)).with_state(admission)
}

/// Loads the admission certificate and key (`--admission-cert`, `--admission-key`).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    cmp_core::tls::server_config(cert, key)
        .context("the admission endpoint's TLS identity (--admission-cert, --admission-key)")
}

/// Listens on `addr` for the admission endpoint.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr} (--admission-addr)"))
}

/// How the API server reaches the admission endpoint.
#[derive(Debug, Clone)]
pub enum WebhookEndpoint {
    /// A URL (for example `https://127.0.0.1:8443/validate` in the local stack).
    Url(String),
    /// A Service in the cluster (the chart's).
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: i32,
    },
}

/// The ValidatingWebhookConfiguration that sends Instances and Wallets to the
/// endpoint, trusting `ca_bundle` (PEM), limited to namespaces matching
/// `namespace_selector` when given.
///
/// Failure policy: **Instances `Ignore`**, because their references are
/// checked again by the operator, which reports a missing Project, Offering,
/// version or plan in status; a webhook that is down must not stop
/// `kubectl apply`, Argo CD syncs or the provisioner. **Wallets `Fail`**,
/// because who may append paid credits is a rule about money: while the
/// webhook is down, Wallet spec writes wait (the gateway writes only the
/// status subresource, which is not sent to the webhook).
pub fn configuration(
    name: &str,
    endpoint: &WebhookEndpoint,
    ca_bundle: &[u8],
    namespace_selector: Option<serde_json::Value>,
) -> serde_json::Value {
    use base64::Engine;
    let client_config = match endpoint {
        WebhookEndpoint::Url(url) => serde_json::json!({"url": url}),
        WebhookEndpoint::Service { namespace, name, port } => {
            serde_json::json!({"service": {"namespace": namespace, "name": name, "port": port, "path": VALIDATE_PATH}})
        }
    };
    let mut client_config = client_config;
    client_config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca_bundle).into();
    let webhook = |resource: &str, failure_policy: &str| {
        let mut webhook = serde_json::json!({
            "name": format!("{resource}.cmp.gsv.dev"),
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [cmp_crds::GROUP], "apiVersions": [cmp_crds::VERSION],
                "operations": ["CREATE", "UPDATE"], "resources": [resource], "scope": "Namespaced",
            }],
            "failurePolicy": failure_policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        });
        if let Some(selector) = &namespace_selector {
            webhook["namespaceSelector"] = selector.clone();
        }
        webhook
    };
    serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {cmp_crds::names::MANAGED_BY_LABEL: cmp_crds::names::PROVISIONER_MANAGER}},
        "webhooks": [webhook("instances", "Ignore"), webhook("wallets", "Fail")],
    })
}
