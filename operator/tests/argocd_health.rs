//! CMP's Argo CD health checks (Lua, in the chart), run by the real `argocd`
//! binary on every case of their `health_test.yaml` (Argo CD's own format:
//! `<group>/<kind>/health.lua`, `health_test.yaml`, `testdata/`).

use std::path::Path;

use cmp_testenv::argocd::{cli, health_checks_dir, health_customizations};
use serde::Deserialize;

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: Expected,
    input_path: String,
}

#[derive(Deserialize)]
struct Expected {
    status: String,
    message: String,
}

/// What `argocd admin settings resource-overrides health` prints: (status, message).
fn health_of(object: &Path, argocd_cm: &Path) -> (String, String) {
    let (object, cm) = (object.to_string_lossy(), argocd_cm.to_string_lossy());
    let output = cli(&["admin", "settings", "resource-overrides", "health", &object, "--argocd-cm-path", &cm])
        .expect("argocd runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "argocd failed on {object}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let field = |name: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    (field("STATUS:"), field("MESSAGE:"))
}

#[test]
fn every_health_check_gives_what_its_health_test_yaml_expects() {
    let dir = std::env::temp_dir().join(format!("cmp-argocd-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let argocd_cm = dir.join("argocd-cm.yaml");
    let config = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm"},
                                    "data": health_customizations().expect("health checks")});
    std::fs::write(&argocd_cm, serde_yaml::to_string(&config).expect("yaml")).expect("write argocd-cm");

    let root = health_checks_dir().join("cmp.gsv.dev");
    let mut kinds = Vec::new();
    let mut cases = 0;
    for kind in ["Organization", "Project", "Offering", "Instance", "Wallet"] {
        let folder = root.join(kind);
        let tests: HealthTests =
            serde_yaml::from_str(&std::fs::read_to_string(folder.join("health_test.yaml")).expect("health_test.yaml"))
                .expect("Argo CD's health_test.yaml format");
        let statuses: Vec<&str> = tests.tests.iter().map(|t| t.health_status.status.as_str()).collect();
        assert!(statuses.contains(&"Healthy") && statuses.contains(&"Progressing"), "{kind} covers both");
        for test in &tests.tests {
            let (status, message) = health_of(&folder.join(&test.input_path), &argocd_cm);
            assert_eq!(
                (status.as_str(), message.as_str()),
                (test.health_status.status.as_str(), test.health_status.message.as_str()),
                "{kind} {}",
                test.input_path
            );
            cases += 1;
        }
        kinds.push(kind);
    }
    let all: Vec<&str> = ["Healthy", "Progressing", "Degraded", "Suspended"].to_vec();
    for status in all {
        let seen = kinds.iter().any(|kind| {
            let text = std::fs::read_to_string(root.join(kind).join("health_test.yaml")).unwrap_or_default();
            text.contains(&format!("status: {status}"))
        });
        assert!(seen, "some case expects {status}");
    }
    println!("{cases} health cases of {} kinds passed in the real argocd", kinds.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/argocd/argocd-cm-health.yaml`, which people patch into their
/// `argocd-cm`, holds exactly the chart's Lua scripts.
#[test]
fn the_example_argocd_cm_patch_holds_the_charts_health_checks() {
    let path = cmp_testenv::workspace_root().join("examples/argocd/argocd-cm-health.yaml");
    let example: k8s_openapi::api::core::v1::ConfigMap =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("the example exists")).expect("a ConfigMap");
    let data = example.data.expect("data");
    let expected = health_customizations().expect("the chart's health checks");
    assert_eq!(data.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "one entry per kind");
    for (key, script) in &expected {
        assert_eq!(data[key].trim_end(), script.trim_end(), "{key} in {} differs from the chart's", path.display());
    }
}
