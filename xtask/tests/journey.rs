//! The buyer's journey (T1-T9) against a platform of its own on the test
//! control plane: the real operator, gateway and webhook (each as the
//! chart's identity), a real lfx runtime, a real OpenBao with Kubernetes
//! auth, and orders signed by PyJWT as Saleor signs them. The same steps as
//! `cargo xtask demo`; this platform is scoped to the run (its operator
//! reconciles only the run's Organizations and Offerings) so tests run in
//! parallel. Its Offerings are Shared, so no Argo CD is needed. A ticket
//! desk (a real MCP server, the Python SDK's) is the tool the second buyer
//! binds (T6).

use std::time::Duration;

use cmp_testenv::apply::install_crds;
use cmp_testenv::chart_identity::{Component, OPERATOR_RELEASE};
use cmp_testenv::lfx::Lfx;
use cmp_testenv::mcp::TicketDesk;
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::process::TestProcess;
use cmp_testenv::saleor::SaleorStandIn;
use cmp_testenv::test::{eventually, test_client, test_kubeconfig, unique_name};
use cmp_testenv::{free_port, workspace_binary, workspace_root};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use xtask::journey::{self, Platform};

const RUN_LABEL: &str = "cmp.gsv.dev/test-run";
const RUNTIME_KEY: &str = "journey-runtime-key";
const WIDGET_SECRET: &str = "journey-widget-secret-of-32-characters";
const RUN_TOKEN_SECRET: &str = "journey-run-token-secret-of-32-characters";
const CONVERGE: Duration = Duration::from_secs(120);

/// Applies `object` (its kind and name from itself) with server-side apply.
async fn apply(client: &kube::Client, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("an object");
    let name = object.metadata.name.clone().expect("a name");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = kube::api::GroupVersionKind::try_from(&types).expect("a group, version and kind");
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.expect("the kind is served");
    let api: Api<DynamicObject> = match (&object.metadata.namespace, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(&name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", types.kind));
}

fn spawn(component: Component, run: &str, values: &[String], binary: &str, args: &[String]) -> TestProcess {
    // Each binary's package has its name.
    let path = workspace_binary(binary, binary).expect("the binary builds");
    let release = if component == Component::Operator { OPERATOR_RELEASE } else { run };
    TestProcess::spawn_as(component, release, values, &path, &format!("{run}-{binary}"), "info", args)
        .unwrap_or_else(|e| panic!("{binary} starts: {e}"))
}

#[tokio::test]
async fn the_buyers_journey_t1_to_t9_on_the_real_platform() {
    let client = test_client().await;
    install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
    let run = unique_name("journey");
    let scratch = std::env::temp_dir().join(format!("{run}-journey"));
    let openbao = OpenBao::start(&scratch.join("bao"), "journey-root").await.expect("OpenBao starts");
    openbao.enable_kubernetes_auth(&client, &test_kubeconfig()).await.expect("OpenBao's Kubernetes auth");
    let lfx = Lfx::start(&scratch.join("lfx"), RUNTIME_KEY).await.expect("lfx starts");
    let store = SaleorStandIn::start().await.expect("the PyJWT store starts");
    let desk_credential = format!("Bearer {}", journey::DESK_CREDENTIAL);
    let desk =
        TicketDesk::start(&[(&desk_credential, journey::DESK_TENANT)], "authorization", scratch.join("desk.log"))
            .await
            .expect("the MCP ticket desk starts");
    let (gateway_port, webhook_port) = (free_port().expect("a port"), free_port().expect("a port"));
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");

    // The runtime's key, and a Shared Offering on lfx with a priced plan and a demo allowance.
    let runtime_key = format!("{run}-runtime");
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": runtime_key, "namespace": "default"},
                          "stringData": {"apiKey": RUNTIME_KEY}}),
    )
    .await;
    let (offering, publisher, plan_sku) =
        (format!("{run}-echo"), format!("{run}-pub"), format!("{}-PRO", run.to_uppercase()));
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("the example flow");
    let echo_plans = json!({
        "plans": [{"id": "pro", "creditsPerRun": 250, "includedCredits": 500, "requestsPerMinute": 60, "saleorSku": plan_sku},
                  {"id": "free", "creditsPerRun": 1}],
        "demo": {"runsPerSession": 5, "requestsPerMinute": 60, "instance": {"organization": publisher, "name": "demo"}},
    });
    let on_lfx = |name: &str, display: &str, flow: (&str, String, String), more: Value| {
        let mut spec = json!({"displayName": display,
            "runtime": {"mode": "Shared", "api": "v2", "endpoint": lfx.url(),
                        "apiKeySecretRef": {"namespace": "default", "name": runtime_key, "key": "apiKey"}},
            "versions": [{"name": "1", "flowId": flow.0, "artifact": {"url": flow.1, "sha256": flow.2}}]});
        spec.as_object_mut().expect("an object").extend(more.as_object().cloned().unwrap_or_default());
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering",
               "metadata": {"name": name, "labels": {RUN_LABEL: run}}, "spec": spec})
    };
    apply(&client, on_lfx(&offering, "Echo", ("echo", url, sha256), echo_plans)).await;
    // A tool agent: its flow opens a ticket in the buyer's own desk through this platform's connector gateway.
    let (desk_flow, desk_sha256) = cmp_testenv::lfx::example_flow_through("ticket-desk.json", &gateway_url, &scratch)
        .expect("the ticket desk flow");
    let desk_offering = format!("{run}-desk");
    let desk_spec = json!({"connectors": [{"type": "tickets", "tools": ["create_ticket"]}],
                      "plans": [{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 2, "timeoutSeconds": 60}]});
    apply(&client, on_lfx(&desk_offering, "Ticket desk", ("ticket-desk", desk_flow, desk_sha256), desk_spec)).await;

    let selector = format!("{RUN_LABEL}={run}");
    let vault_addr = openbao.addr().to_string();
    let operator_args: Vec<String> = [
        "--organization-selector",
        &selector,
        "--offering-selector",
        &selector,
        "--lease-name",
        &format!("cmp-operator-{run}"),
        "--vault-addr",
        &vault_addr,
        "--vault-token",
        openbao.token(),
        "--connector-allowed-hosts",
        "localhost,127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    let operator = spawn(Component::Operator, &run, &[], "cmp-operator", &operator_args);

    // The publisher's demo Instance, which the widget's free runs use.
    apply(
        &client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": publisher, "labels": {RUN_LABEL: run}},
        "spec": {"displayName": "Publisher", "owners": [{"name": "publisher"}], "starterCredits": 100}}),
    )
    .await;
    let control = format!("cmp-{publisher}");
    eventually("the publisher's namespace", CONVERGE, || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get_opt(&control).await.ok().flatten()
    })
    .await;
    apply(
        &client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "support", "namespace": control}, "spec": {"displayName": "Support"}}),
    )
    .await;
    apply(
        &client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "demo", "namespace": control},
        "spec": {"project": "support", "offering": offering, "version": "1", "plan": "free"}}),
    )
    .await;

    let usage = scratch.join("usage.jsonl");
    let gateway_args: Vec<String> = vec![
        "--addr".into(),
        format!("127.0.0.1:{gateway_port}"),
        "--replica-name".into(),
        "journey".into(),
        "--usage-file".into(),
        usage.display().to_string(),
        "--widget-secret".into(),
        WIDGET_SECRET.into(),
        // The connector gateway, reading credentials with OpenBao's root token (the connector tests log in with the
        // gateway's Kubernetes-auth role). Every server here is on loopback, so loopback is not a denied network;
        // the API server, OpenBao and the runtime stay denied by their endpoints.
        "--run-token-secret".into(),
        RUN_TOKEN_SECRET.into(),
        "--vault-addr".into(),
        vault_addr.clone(),
        "--vault-token".into(),
        openbao.token().into(),
        "--connector-allowed-hosts".into(),
        "localhost,127.0.0.1".into(),
        "--connector-denied-networks".into(),
        "169.254.0.0/16".into(),
        "--connector-probe-organization-selector".into(),
        selector.clone(),
    ];
    let values = vec![
        "gateway.runtimeKeySecrets[0].namespace=default".to_string(),
        format!("gateway.runtimeKeySecrets[0].name={runtime_key}"),
    ];
    let gateway = spawn(Component::Gateway, &run, &values, "cmp-gateway", &gateway_args);
    let packs = workspace_root().join("examples/saleor/credit-packs.yaml");
    let webhook_args: Vec<String> = vec![
        "--saleor-addr".into(),
        format!("127.0.0.1:{webhook_port}"),
        "--saleor-api-url".into(),
        store.api_url().into(),
        "--credit-packs".into(),
        packs.display().to_string(),
        "--organization-label".into(),
        selector.clone(),
    ];
    let webhook = spawn(Component::Webhook, &run, &[], "cmp-webhook", &webhook_args);
    gateway.ready(CONVERGE).await;
    webhook.ready(CONVERGE).await;
    eventually("the demo Instance Ready", CONVERGE, || async {
        let instance = Api::<cmp_crds::Instance>::namespaced(client.clone(), &control).get("demo").await.ok()?;
        cmp_crds::conditions::is_true(&instance.status?.conditions, cmp_crds::conditions::READY).then_some(())
    })
    .await;

    let platform = Platform {
        client: client.clone(),
        kubeconfig: test_kubeconfig(),
        gateway: gateway_url.clone(),
        webhook: format!("http://127.0.0.1:{webhook_port}"),
        store: &store,
        openbao: &openbao,
        usage_file: usage,
        plan_sku,
        credit_pack: ("CREDITS-1000".into(), 1000),
        demo_offering: offering,
        run: run.clone(),
        tools: journey::ToolDesk {
            offering: desk_offering,
            plan: "basic".into(),
            url: format!("http://localhost:{}/mcp", desk.port()),
        },
    };
    let report = journey::run(&platform, 3).await;
    let text = report.text();
    eprintln!("{text}");
    assert!(
        report.passed(),
        "{text}\noperator log: {}\ngateway log: {}\nwebhook log: {}",
        operator.log.display(),
        gateway.log.display(),
        webhook.log.display()
    );
    assert_eq!(report.steps.len(), 9, "every step ran: {text}");
    assert_eq!(report.time_to_first_value.len(), 3, "three orders were timed: {text}");
    drop(lfx);
    drop(desk);
}
