//! The Helm chart (`charts/cmp`): linted by the real `helm`, rendered with its
//! default and its full values, and every object dry-run against the real
//! API server; each component's pod passes the `restricted` pod-security
//! level; bad values are refused by `values.schema.json` at render time.

use cmp_testenv::apply::{ApplyOptions, apply_yaml, install_crds, parse_documents};
use cmp_testenv::helm::{self, HelmOutput};
use cmp_testenv::test::{TestNamespace, test_client};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};

fn full_values() -> String {
    helm::chart().join("ci/full-values.yaml").to_string_lossy().into_owned()
}

fn rendered(output: HelmOutput, what: &str) -> String {
    assert!(output.success, "helm template ({what}) failed:\n{}", output.stderr);
    output.stdout
}

/// The CRDs of the optional kinds the full values render (cert-manager, the Prometheus Operator).
async fn install_optional_crds(client: &kube::Client) {
    let dir = helm::binaries().expect("helm").join("crds");
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("crds") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("crd");
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("a CRD");
            crds.push(crd);
        }
    }
    install_crds(client, &crds, "cmp-chart-test").await.expect("optional CRDs");
}

#[test]
fn helm_lint_passes_with_default_and_full_values() {
    let chart = helm::chart().to_string_lossy().into_owned();
    let full = full_values();
    for extra in [vec![], vec!["--values", full.as_str()]] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(extra);
        let output = helm::helm(&args).expect("helm");
        assert!(output.success, "helm lint {args:?}:\n{}{}", output.stdout, output.stderr);
    }
}

#[tokio::test]
async fn every_object_the_chart_renders_is_accepted_by_the_api_server() {
    let client = test_client().await;
    install_optional_crds(&client).await;
    let ns = TestNamespace::create(&client, "chart").await.expect("namespace");
    let restricted = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&restricted))
        .await
        .expect("restricted namespace");
    let dry_run = ApplyOptions { field_manager: "cmp-chart-test".into(), dry_run: true, namespace: None };
    let full = full_values();
    let here = |key: &str| format!("{key}={}", ns.name);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("default values", vec![]),
        (
            "full values",
            vec![
                "--values".into(),
                full.clone(),
                "--set".into(),
                here("operator.argocd.namespace"),
                "--set".into(),
                here("gateway.runtimeKeySecrets[0].namespace"),
            ],
        ),
        ("the chart's own admission certificate", vec!["--set".into(), "webhook.admission.certificate=chart".into()]),
    ];
    for (what, extra) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let yaml = rendered(helm::template("cmp", &ns.name, &extra).expect("helm"), what);
        let objects = apply_yaml(&client, what, &yaml, &dry_run)
            .await
            .unwrap_or_else(|e| panic!("the API server refused an object rendered with {what}: {e}"));
        let kinds: Vec<String> = objects.iter().filter_map(|o| o.types.as_ref().map(|t| t.kind.clone())).collect();
        for kind in
            ["Deployment", "ServiceAccount", "ClusterRole", "Role", "Service", "PodDisruptionBudget", "NetworkPolicy"]
        {
            assert!(kinds.iter().any(|k| k == kind), "{what}: no {kind} rendered: {kinds:?}");
        }
        assert_eq!(kinds.iter().filter(|k| *k == "Deployment").count(), 3, "{what}: operator, gateway, webhook");
        if *what == "full values" {
            for kind in
                ["ServiceMonitor", "Certificate", "Issuer", "Ingress", "ConfigMap", "ValidatingWebhookConfiguration"]
            {
                assert!(kinds.iter().any(|k| k == kind), "{what}: no {kind} rendered: {kinds:?}");
            }
        }
        if *what == "the chart's own admission certificate" {
            assert!(yaml.contains("caBundle: "), "the webhook configuration carries the chart's CA");
        }
    }
    ns.delete().await.expect("delete namespace");
}

#[tokio::test]
async fn each_components_pod_passes_the_restricted_pod_security_level() {
    let client = test_client().await;
    let ns = TestNamespace::create(&client, "chart-pods").await.expect("namespace");
    let restricted = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&restricted))
        .await
        .expect("restricted namespace");
    let yaml = rendered(helm::template("cmp", &ns.name, &[]).expect("helm"), "default values");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name);
    let mut checked = 0;
    for object in parse_documents("chart", &yaml).expect("documents") {
        if object.types.as_ref().map(|t| t.kind.as_str()) != Some("Deployment") {
            continue;
        }
        let name = object.metadata.name.clone().unwrap_or_default();
        let template = object.data["spec"]["template"].clone();
        let account = template["spec"]["serviceAccountName"].as_str().unwrap_or_default().to_string();
        // The ServiceAccount admission plugin wants the pod's account to exist.
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta { name: Some(account), ..Default::default() },
            ..Default::default()
        };
        let _ = accounts.create(&PostParams::default(), &sa).await;
        let mut pod: Pod = serde_json::from_value(template).expect("a pod template");
        pod.metadata.name = Some(format!("{name}-pod"));
        let params = PostParams { dry_run: true, ..PostParams::default() };
        pods.create(&params, &pod).await.unwrap_or_else(|e| panic!("{name}'s pod is refused under restricted: {e}"));
        checked += 1;

        // The check can fail: the same pod without its hardening is refused.
        let mut loose = pod.clone();
        if let Some(container) = loose.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            container.security_context = None;
        }
        let refused = pods.create(&params, &loose).await.expect_err("an unhardened pod is refused");
        assert!(refused.to_string().contains("restricted"), "{refused}");
    }
    assert_eq!(checked, 3, "the operator's, the gateway's and the webhook's pods");
    ns.delete().await.expect("delete namespace");
}

#[test]
fn bad_values_are_refused_at_render_time_naming_the_field() {
    let cases: [(&str, &str); 9] = [
        ("gateway.buyerApi.enabled=true", "gateway.oidc.issuer"),
        ("gateway.console.clientId=cmp-console", "gateway.buyerApi.enabled"),
        ("gateway.signup.enabled=true", "gateway.oidc.issuer"),
        ("gateway.signup.starterCredits=-1", "starterCredits"),
        ("logFormat=xml", "logFormat"),
        ("operator.replicas=0", "replicas"),
        ("gateway.replica=2", "replica"),
        ("operator.secretStore=disk", "secretStore"),
        ("webhook.publicUrl=saleor-app.example", "publicUrl"),
    ];
    for (set, field) in cases {
        let output = helm::template("cmp", "cmp-system", &["--set", set]).expect("helm");
        assert!(!output.success, "--set {set} was accepted");
        assert!(output.stderr.contains(field), "--set {set}: the error names {field}:\n{}", output.stderr);
    }
    let ingress = helm::template("cmp", "cmp-system", &["--set", "webhook.ingress.enabled=true"]).expect("helm");
    assert!(!ingress.success && ingress.stderr.contains("host"), "an ingress without a host: {}", ingress.stderr);
}
