//! The admission webhook, called by the real API server over TLS on
//! loopback: the rules CEL cannot express, messages that name the field, and
//! what happens when the webhook is down.

mod support;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::test::{TestNamespace, client_as};
use cmp_webhook::admission_server::{WebhookEndpoint, configuration};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{RUN_LABEL, World};

const PROVISIONER: &str = "system:serviceaccount:cmp-system:cmp-webhook";

fn instance(ns: &str, name: &str, project: &str, offering: &str, version: &str, plan: &str) -> Value {
    json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"project": project, "offering": offering, "version": version, "plan": plan}})
}

async fn create(api: &Api<Instance>, object: Value) -> Result<(), String> {
    let instance: Instance = serde_json::from_value(object).expect("an Instance");
    api.create(&PostParams::default(), &instance).await.map(|_| ()).map_err(|e| e.to_string())
}

fn grant(id: &str, source: &str) -> Value {
    json!({"id": id, "credits": 10, "source": source, "orderRef": "O/L"})
}

async fn append_grant(client: kube::Client, ns: &str, grants: Value) -> Result<(), String> {
    let patch = json!({"spec": {"grants": grants}});
    Api::<Wallet>::namespaced(client, ns)
        .patch("w", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn admission_refuses_what_cel_cannot_express_and_names_the_field() {
    let w = World::new("admit").await;
    let ns = TestNamespace::create(&w.client, "admission").await.expect("namespace");
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(w.client.clone());
    let label = json!({"metadata": {"labels": {RUN_LABEL: w.run}}});
    namespaces.patch(&ns.name, &PatchParams::default(), &Patch::Merge(label)).await.expect("labelled");

    // An Offering whose first version is deprecated.
    let offering = format!("{}-versions", w.run);
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("flow");
    let object = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering",
        "metadata": {"name": offering, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "Versions", "runtime": {"image": "registry.invalid/runtime:1"},
            "versions": [
                {"name": "1", "flowId": "echo", "deprecated": true, "artifact": {"url": url, "sha256": sha256}},
                {"name": "2", "flowId": "echo", "artifact": {"url": url, "sha256": sha256}}],
            "plans": [{"id": "pro", "creditsPerRun": 1}]}});
    Api::<cmp_crds::Offering>::all(w.client.clone())
        .patch(&offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(object))
        .await
        .expect("Offering");

    let webhook = w.admission_webhook(&["--provisioner-username", PROVISIONER]).await;
    let config = configuration(
        &format!("cmp-webhook-{}", w.run),
        &WebhookEndpoint::Url(webhook.admission_url()),
        &webhook.ca_bundle(),
        Some(json!({"matchLabels": {RUN_LABEL: w.run}})),
    );
    let configs = Api::<ValidatingWebhookConfiguration>::all(w.client.clone());
    let config: ValidatingWebhookConfiguration = serde_json::from_value(config).expect("a configuration");
    configs.create(&PostParams::default(), &config).await.expect("the webhook is registered");
    let config_name = config.metadata.name.clone().expect("named");

    let instances = Api::<Instance>::namespaced(w.client.clone(), &ns.name);
    let project = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "p", "namespace": ns.name}, "spec": {}});
    // The API server may take a moment to start calling a new webhook.
    support::converge("the webhook to be called", || async {
        let refused = create(&instances, instance(&ns.name, "probe", "nope", &offering, "2", "pro")).await.err()?;
        refused.contains("spec.project is").then_some(())
    })
    .await;

    let refused =
        create(&instances, instance(&ns.name, "a", "nope", &offering, "2", "pro")).await.expect_err("refused");
    assert!(refused.contains("spec.project is \"nope\", but no Project nope exists in namespace"), "{refused}");
    Api::<cmp_crds::Project>::namespaced(w.client.clone(), &ns.name)
        .patch("p", &PatchParams::apply("cmp-tests"), &Patch::Apply(project))
        .await
        .expect("Project");
    for (version, plan, offering_name, expected) in [
        ("2", "pro", "no-such-offering", "spec.offering is \"no-such-offering\", but no Offering of that name exists"),
        ("3", "pro", offering.as_str(), "spec.version is \"3\", but Offering"),
        ("1", "pro", offering.as_str(), "spec.version is \"1\", which Offering"),
        ("2", "gold", offering.as_str(), "spec.plan is \"gold\", but Offering"),
    ] {
        let refused =
            create(&instances, instance(&ns.name, "a", "p", offering_name, version, plan)).await.expect_err(expected);
        assert!(refused.contains(expected), "{expected}: {refused}");
    }
    create(&instances, instance(&ns.name, "a", "p", &offering, "2", "pro")).await.expect("a valid Instance");
    let to_deprecated = json!({"spec": {"version": "1"}});
    let refused =
        instances.patch("a", &PatchParams::default(), &Patch::Merge(to_deprecated)).await.expect_err("refused");
    assert!(refused.to_string().contains("deprecated"), "{refused}");
    instances
        .patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspended": true}})))
        .await
        .expect("suspending is fine");

    // Grants from SaleorOrder: only the provisioner's identity appends them.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "wallets", "namespace": ns.name},
        "rules": [{"apiGroups": ["cmp.gsv.dev"], "resources": ["wallets"], "verbs": ["get", "patch", "update"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "wallets", "namespace": ns.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "wallets"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PROVISIONER}]});
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    Api::<Role>::namespaced(w.client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(role).expect("a Role"))
        .await
        .expect("Role");
    Api::<RoleBinding>::namespaced(w.client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(binding).expect("a RoleBinding"))
        .await
        .expect("RoleBinding");
    let wallet = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet", "metadata": {"name": "w", "namespace": ns.name},
        "spec": {"grants": [grant("starter", "Starter")]}});
    Api::<Wallet>::namespaced(w.client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(wallet).expect("a Wallet"))
        .await
        .expect("Wallet");
    let alice = client_as("alice", &[]).await;
    let refused =
        append_grant(alice.clone(), &ns.name, json!([grant("starter", "Starter"), grant("saleor.x.y", "SaleorOrder")]))
            .await
            .expect_err("refused");
    assert!(refused.contains("spec.grants[1].source: grant \"saleor.x.y\" comes from a SaleorOrder"), "{refused}");
    append_grant(alice, &ns.name, json!([grant("starter", "Starter"), grant("manual-1", "Manual")]))
        .await
        .expect("manual grants are fine");
    let provisioner = client_as(PROVISIONER, &[]).await;
    append_grant(
        provisioner,
        &ns.name,
        json!([grant("starter", "Starter"), grant("manual-1", "Manual"), grant("saleor.x.y", "SaleorOrder")]),
    )
    .await
    .expect("the provisioner appends order grants");
    // The example Wallet, applied by an administrator as `kubectl apply -f examples/` would, is admitted.
    let mut example: Wallet = serde_yaml::from_str(include_str!("../../examples/40-wallet.yaml")).expect("the example");
    example.metadata.namespace = Some(ns.name.clone());
    Api::<Wallet>::namespaced(w.client.clone(), &ns.name)
        .create(&PostParams::default(), &example)
        .await
        .expect("the example Wallet is admitted");

    // The webhook down: Instances are admitted (the operator reports bad references in status);
    // Wallet writes are refused (who may add paid credits is not left unchecked).
    drop(webhook);
    let admitted = create(&instances, instance(&ns.name, "b", "nope", &offering, "2", "pro")).await;
    assert_eq!(admitted, Ok(()), "failurePolicy Ignore for Instances");
    let refused = append_grant(
        w.client.clone(),
        &ns.name,
        json!([
            grant("starter", "Starter"),
            grant("manual-1", "Manual"),
            grant("saleor.x.y", "SaleorOrder"),
            grant("manual-2", "Manual")
        ]),
    )
    .await
    .expect_err("failurePolicy Fail for Wallets");
    assert!(refused.contains("failed calling webhook"), "{refused}");

    configs.delete(&config_name, &DeleteParams::default()).await.expect("unregistered");
    ns.delete().await.expect("cleanup");
}
