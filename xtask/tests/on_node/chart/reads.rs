//! What the test reads from the cluster and sends to it: pods, Instances,
//! the Wallet, and runs through the gateway pods.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::argocd::ArgoCd;
use cmp_testenv::test::eventually;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use super::{ARGOCD_NAMESPACE, BALANCE, NAMESPACE, WAIT};

/// The pods of the chart's `component`, once `count` of them are ready.
pub async fn ready_pods(client: &kube::Client, component: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!("app.kubernetes.io/component={component}");
    eventually(&format!("{count} ready {component} pods"), WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == count).then_some(ready)
    })
    .await
}

pub fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn restarts(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.map_or(0, |s| s.iter().map(|c| c.restart_count).sum())
}

pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("a pod's uid")
}

pub fn ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod's address")
}

/// Creates (or dry-runs) an object as the administrator; the API server's refusal, if any.
pub async fn try_create(client: &kube::Client, namespace: &str, object: Value, dry_run: bool) -> Result<(), String> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("cmp.gsv.dev", "v1alpha1", "Instance")),
    );
    let object = serde_json::from_value(object).expect("an object");
    let params = PostParams { dry_run, ..Default::default() };
    api.create(&params, &object).await.map(|_| ()).map_err(|e| e.to_string())
}

pub fn instance(name: &str, plan: &str, project: &str) -> Value {
    json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
           "spec": {"project": project, "offering": "echo", "version": "1", "plan": plan,
                    "apiKeys": [{"name": "main"}]}})
}

/// The Instance's status, once the operator made it Ready.
pub async fn ready(client: &kube::Client, namespace: &str, name: &str) -> cmp_crds::instance::InstanceStatus {
    let instances: Api<Instance> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("Instance {namespace}/{name} Ready"), WAIT, || async {
        let status = instances.get(name).await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(status)
    })
    .await
}

/// Waits until the Dedicated Instance desk-bot is Ready (Argo CD synced it and its pod serves), asking Argo CD
/// to look at the remote now (it caches refs for minutes otherwise); on timeout, fails with what Argo CD said.
pub async fn dedicated_ready(client: &kube::Client, argocd: &ArgoCd) {
    let gvk = kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let applications: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ARGOCD_NAMESPACE, &kube::api::ApiResource::from_gvk(&gvk));
    let instances: Api<Instance> = Api::namespaced(client.clone(), "cmp-acme");
    let refresh = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
    let deadline = std::time::Instant::now() + WAIT;
    let mut conditions = Vec::new();
    while std::time::Instant::now() < deadline {
        for application in applications.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let name = application.metadata.name.unwrap_or_default();
            let _ = applications.patch(&name, &Default::default(), &kube::api::Patch::Merge(&refresh)).await;
        }
        let status = instances.get("desk-bot").await.ok().and_then(|i| i.status);
        conditions = status.map(|s| s.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!(
        "the Dedicated Instance did not become Ready: {conditions:?}; Argo CD's controller said: {}",
        argocd.log_tail("application-controller")
    );
}

/// The key of an Instance of cmp-acme, once the operator made it Ready.
pub async fn ready_key(client: &kube::Client, name: &str) -> String {
    let status = ready(client, "cmp-acme", name).await;
    let secret_name = &status.api_keys.first().expect("a key").secret.name;
    let secret = Api::<Secret>::namespaced(client.clone(), "cmp-acme").get(secret_name).await.expect("the key Secret");
    let bytes = secret.data.and_then(|d| d.get("apiKey").cloned()).expect("the key");
    String::from_utf8(bytes.0).expect("UTF-8")
}

/// A run of the echo flow through the gateway at `base` with `key`: it answers `input`, says it charged
/// `credits`, and the Wallet records them.
pub async fn run_charged(client: &kube::Client, base: &str, key: &str, input: &str, credits: i64) {
    let (_, before) = wallet(client).await;
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/runs"))
        .header("x-api-key", key)
        .json(&json!({"input_value": input}))
        .send()
        .await
        .expect("the gateway pod answers");
    let (status, charged) = (answer.status(), answer.headers().get("x-credits-charged").cloned());
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(charged.as_ref().and_then(|v| v.to_str().ok()), Some(credits.to_string().as_str()), "{body}");
    assert_eq!(body["output"]["text"], input, "the flow's answer: {body}");
    eventually("the run recorded in the Wallet", WAIT, || async {
        (wallet(client).await.1 == before + credits).then_some(())
    })
    .await;
}

/// The Wallet's (granted, consumed).
pub async fn wallet(client: &kube::Client) -> (i64, i64) {
    let wallet = Api::<Wallet>::namespaced(client.clone(), "cmp-acme").get("acme").await.expect("the Wallet");
    let grants: i64 = wallet.spec.grants.iter().map(|g| g.credits).sum();
    let status = wallet.status.unwrap_or_default();
    (grants, cmp_crds::credits::consumed(&status.meters, status.compacted.as_ref()))
}

/// Runs spent by callers spread over the gateway pods at `bases`, until each
/// has been refused (402) by every gateway several times in a row; a gateway
/// that does not answer (crashed, restarting) is tried again later.
/// `midway` runs once a third of the balance was served. Answers the runs
/// served by each gateway.
pub async fn spend(bases: &[String], key: &str, midway: impl FnOnce() + Send) -> Vec<i64> {
    let served: Arc<Vec<AtomicI64>> = Arc::new(bases.iter().map(|_| AtomicI64::new(0)).collect());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client");
    let mut callers = Vec::new();
    for caller in 0..8 {
        let (served, bases, http, key) = (served.clone(), bases.to_vec(), http.clone(), key.to_string());
        callers.push(tokio::spawn(async move {
            let mut refused_in_a_row = 0;
            let mut turn = caller;
            while refused_in_a_row < 3 * bases.len() {
                turn += 1;
                let replica = turn % bases.len();
                let base = &bases[replica];
                let answer = http
                    .post(format!("{base}/v1/runs"))
                    .header("x-api-key", &key)
                    .json(&json!({"input_value": "spend"}))
                    .send()
                    .await;
                match answer.map(|a| a.status().as_u16()) {
                    Ok(200) => {
                        served[replica].fetch_add(1, Ordering::SeqCst);
                        refused_in_a_row = 0;
                    }
                    Ok(402) => {
                        refused_in_a_row += 1;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }));
    }
    let mut midway = Some(midway);
    while callers.iter().any(|c| !c.is_finished()) {
        if served.iter().map(|s| s.load(Ordering::SeqCst)).sum::<i64>() >= BALANCE / 3
            && let Some(act) = midway.take()
        {
            act();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for caller in callers {
        caller.await.expect("a caller");
    }
    served.iter().map(|s| s.load(Ordering::SeqCst)).collect()
}
