//! The API against a real kube-apiserver: the examples are accepted, the
//! invalid examples are refused with their documented messages, keyed lists
//! merge per entry across field managers, and kubectl shows useful columns.
//!
//! Needs the local control plane: run with `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cmp_crds::Wallet;
use cmp_testenv::apply::{ApplyOptions, apply_object, install_crds, parse_documents};
use cmp_testenv::test::{TestNamespace, kubectl, test_client, test_kubeconfig};
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

fn examples_dir() -> PathBuf {
    manifest_dir().join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

async fn setup(prefix: &str) -> (kube::Client, TestNamespace) {
    let client = test_client().await;
    install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
    let ns = TestNamespace::create(&client, prefix).await.expect("test namespace");
    (client, ns)
}

fn options(ns: &TestNamespace, dry_run: bool) -> ApplyOptions {
    ApplyOptions { field_manager: "cmp-tests".into(), dry_run, namespace: Some(ns.name.clone()) }
}

fn kubectl_output(args: &[&str]) -> String {
    let output = Command::new(kubectl().expect("kubectl is built"))
        .env("KUBECONFIG", test_kubeconfig())
        .args(args)
        .output()
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn every_example_is_accepted() {
    let (client, ns) = setup("examples").await;
    let mut kinds = Vec::new();
    for file in yaml_files(&examples_dir()) {
        let yaml = std::fs::read_to_string(&file).expect("readable");
        for object in parse_documents(&file.display().to_string(), &yaml).expect("valid YAML") {
            let stored = apply_object(&client, &object, &options(&ns, true))
                .await
                .unwrap_or_else(|e| panic!("{} was refused: {e}", file.display()));
            assert_eq!(stored.metadata.name, object.metadata.name);
            kinds.push(object.types.expect("typed").kind);
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["Instance", "Offering", "Organization", "Project", "Wallet"], "examples cover every kind");
    ns.delete().await.expect("cleanup");
}

/// The message an invalid example must be refused with (its `# expect:` line).
fn expected_message(yaml: &str, file: &Path) -> String {
    yaml.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no '# expect: <message>' line", file.display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn every_invalid_example_is_refused_with_its_message() {
    let (client, ns) = setup("invalid").await;
    for file in yaml_files(&examples_dir().join("invalid")) {
        let yaml = std::fs::read_to_string(&file).expect("readable");
        let expected = expected_message(&yaml, &file);
        let documents = parse_documents(&file.display().to_string(), &yaml).expect("valid YAML");
        // One document: refused on creation. Two: the first is created, the
        // second (an update) is refused and the stored object is unchanged.
        let (before, refused) = match documents.as_slice() {
            [refused] => (None, refused),
            [before, refused] => (Some(before), refused),
            _ => panic!("{}: expected one or two documents", file.display()),
        };
        let stored_before = match before {
            Some(before) => Some(
                apply_object(&client, before, &options(&ns, false))
                    .await
                    .unwrap_or_else(|e| panic!("{}: the first document must be accepted: {e}", file.display())),
            ),
            None => None,
        };
        let error = apply_object(&client, refused, &options(&ns, before.is_none()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{} was accepted; expected: {expected}", file.display()));
        let message = error.to_string();
        assert!(message.contains(&expected), "{}: expected {expected:?} in the error, got: {message}", file.display());
        if let Some(stored_before) = stored_before {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &ns.name,
                &kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                    cmp_crds::GROUP,
                    cmp_crds::VERSION,
                    &refused.types.as_ref().expect("typed").kind,
                )),
            );
            let now = api.get(refused.metadata.name.as_deref().expect("named")).await.expect("still there");
            assert_eq!(
                now.data["spec"],
                stored_before.data["spec"],
                "{}: a refused update changed nothing",
                file.display()
            );
        }
    }
    ns.delete().await.expect("cleanup");
}

fn meter_patch(replica: &str, consumed: i64) -> serde_json::Value {
    json!({
        "apiVersion": Wallet::api_version(&()),
        "kind": "Wallet",
        "status": {"meters": [{"name": replica, "consumed": consumed, "runs": consumed}]}
    })
}

#[tokio::test]
async fn two_gateway_replicas_each_own_their_meter_entry() {
    let (client, ns) = setup("meters").await;
    let wallets: Api<Wallet> = Api::namespaced(client.clone(), &ns.name);
    let wallet = json!({
        "apiVersion": Wallet::api_version(&()), "kind": "Wallet", "metadata": {"name": "shared"},
        "spec": {"grants": [{"id": "starter", "credits": 100, "source": "Starter"}]}
    });
    wallets.patch("shared", &PatchParams::apply("cmp-tests"), &Patch::Apply(&wallet)).await.expect("wallet");

    // Each replica applies only its own entry, without forcing: no conflict.
    let replica = |name: &str| PatchParams::apply(&format!("cmp-gateway-{name}"));
    wallets.patch_status("shared", &replica("a"), &Patch::Apply(meter_patch("a", 5))).await.expect("replica a");
    wallets.patch_status("shared", &replica("b"), &Patch::Apply(meter_patch("b", 7))).await.expect("replica b");
    // Replica a updates its entry; b's entry is untouched.
    let after =
        wallets.patch_status("shared", &replica("a"), &Patch::Apply(meter_patch("a", 9))).await.expect("a again");
    let meters = after.status.expect("status").meters;
    let consumed: Vec<(String, i64)> = meters.iter().map(|m| (m.name.clone(), m.consumed)).collect();
    assert_eq!(consumed, [("a".to_string(), 9), ("b".to_string(), 7)]);

    // Replica b writing a's entry is a conflict, not a silent overwrite.
    let conflict = wallets.patch_status("shared", &replica("b"), &Patch::Apply(meter_patch("a", 0))).await;
    match conflict {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected a 409 conflict, got {other:?}"),
    }
    ns.delete().await.expect("cleanup");
}

/// The header cells of `kubectl get` output.
fn header(output: &str) -> Vec<String> {
    output.lines().next().unwrap_or_default().split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn kubectl_get_shows_useful_columns() {
    let (client, ns) = setup("columns").await;
    for file in ["30-projects.yaml", "40-wallet.yaml", "50-instance.yaml"] {
        let yaml = std::fs::read_to_string(examples_dir().join(file)).expect("readable");
        for object in parse_documents(file, &yaml).expect("valid YAML") {
            apply_object(&client, &object, &options(&ns, false)).await.expect("example applies");
        }
    }
    let wallets: Api<Wallet> = Api::namespaced(client.clone(), &ns.name);
    let status = json!({"apiVersion": Wallet::api_version(&()), "kind": "Wallet", "status": {
        "granted": 6000, "consumed": 250, "balance": 5750, "leased": 40,
        "conditions": [{"type": "Funded", "status": cmp_crds::conditions::TRUE, "reason": "Funded", "message": "5750 credits left",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}});
    wallets.patch_status("acme", &PatchParams::apply("cmp-tests"), &Patch::Apply(status)).await.expect("status");

    let out = kubectl_output(&["get", "wallets", "-n", &ns.name]);
    assert_eq!(header(&out), ["NAME", "BALANCE", "LEASED", "FUNDED", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).expect("one wallet").split_whitespace().collect();
    assert_eq!(&row[..4], ["acme", "5750", "40", "True"], "{out}");

    let out = kubectl_output(&["get", "instances", "-n", &ns.name, "-o", "wide"]);
    assert_eq!(
        header(&out),
        ["NAME", "PROJECT", "OFFERING", "PLAN", "PHASE", "READY", "AGE", "VERSION", "SYNCED", "ENDPOINT", "COMMIT"],
        "{out}"
    );
    let row: Vec<&str> = out.lines().nth(1).expect("one instance").split_whitespace().collect();
    assert_eq!(&row[..4], ["support-bot", "support", "support-assistant", "pro"], "{out}");

    let out = kubectl_output(&["get", "projects", "-n", &ns.name]);
    assert_eq!(header(&out), ["NAME", "DISPLAY", "NAME", "RUNTIME", "NAMESPACE", "INSTANCES", "READY", "AGE"], "{out}");

    // The category lists every kind of the namespace at once.
    let out = kubectl_output(&["get", "cmp", "-n", &ns.name, "-o", "name"]);
    for expected in [
        "instance.cmp.gsv.dev/support-bot",
        "project.cmp.gsv.dev/support",
        "project.cmp.gsv.dev/sales",
        "wallet.cmp.gsv.dev/acme",
    ] {
        assert!(out.lines().any(|l| l == expected), "{expected} missing from kubectl get cmp: {out}");
    }
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn kubectl_explain_documents_the_fields() {
    let client = test_client().await;
    install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
    let out = kubectl_output(&["explain", "instance.spec.apiKeys"]);
    assert!(out.contains("The API keys callers use"), "{out}");
    assert!(out.contains("expiresAt") && out.contains("revoked"), "{out}");
    let out = kubectl_output(&["explain", "wallet.spec.grants.credits"]);
    assert!(out.contains("positive whole number"), "{out}");
    let out = kubectl_output(&["explain", "wallet.spec.reversals"]);
    assert!(out.contains("Withdrawals of credits granted earlier, append-only"), "{out}");
    assert!(out.contains("grant") && out.contains("credits") && out.contains("orderRef"), "{out}");
}

/// This package's directory, as cargo gives it to the running program (a
/// path compiled in may name another checkout: cargo reuses artefacts across
/// checkouts that share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
