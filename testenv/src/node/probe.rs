//! Real packets between pods: netprobe servers and one-shot clients on a
//! [`super::Cluster`]'s node, under whatever NetworkPolicies are in force.
//!
//! The pods run as the `restricted` Pod Security level asks (non-root, no
//! capabilities, RuntimeDefault seccomp), so they start in tenants' runtime
//! namespaces too. Test helpers: they panic, naming what did not happen.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::json;

use crate::apply::{ApplyOptions, apply_object};
use crate::test::eventually;

/// How long a pod may take to be scheduled, started and finished.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// The port a netprobe server listens on.
pub const PORT: u16 = 8080;

/// Creates (server-side applies) `object`, in `namespace` when it is namespaced.
pub async fn create(client: &kube::Client, namespace: Option<&str>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("a valid object");
    let options = ApplyOptions {
        field_manager: "cmp-testenv-probe".into(),
        namespace: namespace.map(String::from),
        ..Default::default()
    };
    if let Err(e) = apply_object(client, &object, &options).await {
        panic!("creating {:?} in {namespace:?}: {e}", object.metadata.name);
    }
}

fn container(args: &[String]) -> serde_json::Value {
    json!({
        "name": "netprobe", "image": "cmp.local/netprobe:node", "imagePullPolicy": "IfNotPresent",
        "args": args,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

async fn create_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<&str, &str>,
    spec: serde_json::Value,
) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec});
    create(client, Some(namespace), pod).await;
}

/// A netprobe server pod `name` in `namespace` with `labels` (and `app:
/// name`), answering "netprobe <name>" on [`PORT`], behind a Service of the
/// same name on port 80. Returns once the pod is Ready.
pub async fn serve(client: &kube::Client, namespace: &str, name: &str, labels: &[(&str, &str)]) {
    let mut labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    labels.insert("app", name);
    let mut server = container(&["serve".into(), format!(":{PORT}")]);
    server["readinessProbe"] = json!({"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 1});
    create_pod(client, namespace, name, &labels, json!({"containers": [server]})).await;
    create(
        client,
        Some(namespace),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": PORT}]},
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("pod {namespace}/{name} ready"), POD_TIMEOUT, || async {
        let pod = pods.get(name).await.ok()?;
        let ready = pod.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

/// How many times (a second apart) a probe tries before it gives up.
const ATTEMPTS: u32 = 10;

/// What a probe expects of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A 2xx answer. The probe tries up to ten times: the enforcer learns a
    /// new pod's address a moment after it starts.
    Answer,
    /// No answer: the network refuses it. Until the enforcer has the new
    /// pod's address its packets pass (kube-router fails open), so the probe
    /// tries up to ten times for the refusal: a policy never enforced fails.
    Refusal,
}

/// Whether a new pod `name` in `namespace`, with `labels`, sees what
/// `expect` says when it sends a GET to `url`, with what it printed.
pub async fn check(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    url: &str,
    expect: Expect,
) -> (bool, String) {
    let command = match expect {
        Expect::Answer => "get",
        Expect::Refusal => "refused",
    };
    run(client, namespace, name, labels, &[command.into(), url.into(), ATTEMPTS.to_string()]).await
}

/// Whether a new pod `name` in `namespace`, with `labels`, gets a 2xx answer
/// to a POST of the JSON `body` to `url` with the header `x-api-key: key` (a
/// runtime's run), with what it printed (the status and the answer). It
/// tries again while nothing answers (up to ten times, a second apart).
pub async fn post(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    url: &str,
    body: &serde_json::Value,
    key: &str,
) -> (bool, String) {
    run(client, namespace, name, labels, &["post".into(), url.into(), body.to_string(), key.into()]).await
}

/// Runs netprobe with `args` in a new pod and returns whether it exited 0, with its output.
async fn run(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    args: &[String],
) -> (bool, String) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    create_pod(client, namespace, name, &labels, json!({"restartPolicy": "Never", "containers": [container(args)]}))
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let phase = eventually(&format!("pod {namespace}/{name} finished"), POD_TIMEOUT, || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let output = pods.logs(name, &Default::default()).await.unwrap_or_else(|e| format!("(no log: {e})"));
    (phase == "Succeeded", output)
}
