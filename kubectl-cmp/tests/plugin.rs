//! `kubectl cmp` against the real API server and operator (run as the
//! chart's identity): keys created, refused twice, rotated and revoked, each
//! new key printed once; the Wallet with its starter grant; a trace that
//! marks what is wrong; and clear exit codes for what cannot be done.

use std::process::Output;

use cmp_crds::Instance;
use cmp_testenv::apply::install_crds;
use cmp_testenv::test::{eventually, test_client, test_kubeconfig, unique_name};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const RUN_LABEL: &str = "cmp.gsv.dev/test-run";

fn kubectl_cmp(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-cmp"))
        .env("KUBECONFIG", test_kubeconfig())
        .env_remove("CMP_API_KEY")
        .args(args)
        .output()
        .expect("kubectl-cmp runs")
}

fn stdout_json(output: &Output, what: &str) -> Value {
    assert_eq!(output.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {output:?}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn keys_are_printed_once_refused_twice_rotated_and_revoked_and_the_wallet_and_trace_explain_themselves() {
    let client = test_client().await;
    install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs");
    let run = unique_name("plugin");
    let _operator = cmp_testenv::process::operator_for_run(RUN_LABEL, &run).expect("cmp-operator starts");
    let org = format!("{run}-org");
    let ns = cmp_crds::names::control_namespace(&org);
    let params = PatchParams::apply("cmp-tests").force();
    let organization = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": org, "labels": {RUN_LABEL: run}},
        "spec": {"displayName": "Plugin", "billingEmail": "b@example.com", "starterCredits": 250,
                 "owners": [{"kind": "User", "name": "ada@example.com"}]}});
    Api::<cmp_crds::Organization>::all(client.clone())
        .patch(&org, &params, &Patch::Apply(&organization))
        .await
        .expect("the Organization");
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    eventually("the control namespace", std::time::Duration::from_secs(60), || async {
        namespaces.get_opt(&ns).await.ok().flatten()
    })
    .await;
    let instance = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": "bot"},
        "spec": {"project": "nowhere", "offering": "none", "version": "1", "plan": "free"}});
    let instances = Api::<Instance>::namespaced(client.clone(), &ns);
    instances.patch("bot", &params, &Patch::Apply(&instance)).await.expect("the Instance");

    // create: the key, once; then refused under the same name.
    let created = stdout_json(&kubectl_cmp(&["-n", &ns, "keys", "create", "bot", "prod", "-o", "json"]), "keys create");
    let first = created["key"].as_str().expect("a key").to_string();
    assert!(first.starts_with("cmp_"), "{created}");
    let again = kubectl_cmp(&["-n", &ns, "keys", "create", "bot", "prod"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(stderr(&again).contains("already has a key prod: rotate it"), "{}", stderr(&again));

    // A key applied by someone else (here the test, as an owner would in git) survives the plugin's applies.
    let with_ci = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": "bot"},
        "spec": {"project": "nowhere", "offering": "none", "version": "1", "plan": "free", "apiKeys": [{"name": "ci"}]}});
    instances.patch("bot", &params, &Patch::Apply(&with_ci)).await.expect("the ci key");

    // rotate: a new key under the same name, the old one withdrawn.
    let rotated = stdout_json(&kubectl_cmp(&["-n", &ns, "keys", "rotate", "bot", "prod", "-o", "json"]), "keys rotate");
    let second = rotated["key"].as_str().expect("a key").to_string();
    assert_ne!(second, first, "a rotated key is new");
    assert_ne!(rotated["publicId"], created["publicId"]);

    // revoke: the entry says so; the other keys stay.
    let revoked = kubectl_cmp(&["-n", &ns, "keys", "revoke", "bot", "prod"]);
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    let bot = instances.get("bot").await.expect("the Instance");
    let names: Vec<(String, bool)> = bot.spec.api_keys.iter().map(|k| (k.name.clone(), k.revoked)).collect();
    assert!(names.contains(&("prod".to_string(), true)), "{names:?}");
    assert!(names.contains(&("ci".to_string(), false)), "{names:?}");
    let missing = kubectl_cmp(&["-n", &ns, "keys", "revoke", "bot", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("keys create bot nope"), "{}", stderr(&missing));

    // wallet: the starter grant, whole.
    let wallet = eventually("the Wallet's figures", std::time::Duration::from_secs(60), || async {
        let output = kubectl_cmp(&["wallet", &org, "-o", "json"]);
        let view: Value = serde_json::from_slice(&output.stdout).ok()?;
        (view["granted"] == 250).then_some(view)
    })
    .await;
    assert_eq!(wallet["balance"], 250, "{wallet}");
    assert_eq!(wallet["grants"][0]["unspent"], 250, "{wallet}");
    let text = kubectl_cmp(&["wallet", &org]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("balance 250"), "{text:?}");
    let no_wallet = kubectl_cmp(&["wallet", "no-such-org"]);
    assert_eq!(no_wallet.status.code(), Some(1));
    assert!(stderr(&no_wallet).contains("Wallet no-such-org not found"), "{}", stderr(&no_wallet));

    // trace: the Instance references a Project that does not exist, and says so.
    let traced = kubectl_cmp(&["-n", &ns, "trace", "bot"]);
    assert_eq!(traced.status.code(), Some(3), "a chain with a problem exits 3: {traced:?}");
    let shown = String::from_utf8_lossy(&traced.stdout).into_owned();
    let marked = shown.lines().find(|l| l.contains("<- the first thing to look at")).unwrap_or_default();
    assert!(marked.contains("Instance") && marked.contains("nowhere"), "{shown}");
    let unknown = kubectl_cmp(&["-n", &ns, "trace", "no-such-order"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no Saleor order no-such-order"), "{}", stderr(&unknown));

    // run: an unreachable gateway is an error that says how to point at one.
    let run_output =
        kubectl_cmp(&["-n", &ns, "run", "bot", "hi", "--key-name", "ci", "--gateway", "http://127.0.0.1:9"]);
    assert_eq!(run_output.status.code(), Some(1), "{run_output:?}");
    assert!(stderr(&run_output).contains("--gateway"), "{}", stderr(&run_output));
}
