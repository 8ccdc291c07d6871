//! Bad configuration stops the operator at start with a message that says
//! what is wrong, instead of a controller that retries forever.

use std::process::Command;

use cmp_testenv::free_port;
use cmp_testenv::test::{test_client, test_kubeconfig};

fn run(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cmp-operator"))
        .env("KUBECONFIG", kubeconfig)
        .args([
            "--health-addr",
            &format!("127.0.0.1:{}", free_port().expect("a free port")),
            "--leader-election",
            "false",
        ])
        .args(args)
        .output()
        .expect("cmp-operator runs");
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[tokio::test]
async fn an_invalid_organization_selector_is_refused_at_start() {
    let _ = test_client().await;
    let (ok, log) = run(&test_kubeconfig(), &["--organization-selector", "a=b=c", "--admission-policy", "false"]);
    assert!(!ok, "{log}");
    assert!(log.contains("--organization-selector \\\"a=b=c\\\" is not a valid label selector"), "{log}");
}

#[test]
fn an_unreachable_cluster_is_reported() {
    let missing = std::env::temp_dir().join("cmp-no-such-kubeconfig");
    let (ok, log) = run(&missing, &[]);
    assert!(!ok, "{log}");
    assert!(log.contains("connecting to the cluster"), "{log}");
}

#[test]
fn out_of_range_flags_are_refused() {
    let (ok, log) = run(&test_kubeconfig(), &["--meter-stale-after-seconds", "0"]);
    assert!(!ok);
    assert!(log.contains("invalid value '0' for '--meter-stale-after-seconds"), "{log}");
}
