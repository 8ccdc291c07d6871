use super::*;

fn apps() -> ProjectApps {
    project_apps("argocd", "file:///repo.git", "main", "tenants", "acme", "support", "cmp-acme-support")
}

#[test]
fn each_project_gets_an_app_project_confined_to_its_runtime_namespace() {
    let ProjectApps { app_project, application } = apps();
    assert_eq!(app_project.metadata.name.as_deref(), Some("cmp-acme-support"));
    assert_eq!(
        app_project.spec.destinations,
        [ApplicationDestination { server: IN_CLUSTER.into(), namespace: "cmp-acme-support".into() }]
    );
    assert!(app_project.spec.cluster_resource_whitelist.is_empty(), "no cluster-scoped kind");
    let kinds: Vec<&str> = app_project.spec.namespace_resource_whitelist.iter().map(|g| g.kind.as_str()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "ConfigMap"]);
    assert_eq!(app_project.spec.source_repos, ["file:///repo.git"]);
    assert_eq!(application.spec.project, "cmp-acme-support");
    assert_eq!(application.spec.source.path, "tenants/acme/support");
    assert_eq!(application.spec.destination.namespace, "cmp-acme-support");
    let policy = application.spec.sync_policy.clone().unwrap_or_default();
    assert_eq!(policy["automated"]["prune"], true, "a removed Instance's objects are pruned");
    let encoded = serde_json::to_value(&application).expect("encodes");
    assert_eq!(encoded["spec"]["source"]["repoURL"], "file:///repo.git", "Argo CD's spelling");
    assert_eq!(encoded["kind"], "Application");
}

fn with_status(status: serde_json::Value) -> Application {
    let mut app = apps().application;
    app.status = Some(serde_json::from_value(status).expect("status"));
    app
}

#[test]
fn sync_state_reads_synced_pending_and_failed() {
    let synced = with_status(
        serde_json::json!({"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Progressing"}}),
    );
    assert_eq!(sync_state(&synced), SyncState::Synced { revision: "abc".into() });
    let pending = with_status(serde_json::json!({"sync": {"status": "OutOfSync", "revision": "abc"}}));
    assert!(matches!(sync_state(&pending), SyncState::Pending { why } if why.contains("OutOfSync")));
    let refused = with_status(serde_json::json!({
        "sync": {"status": "Unknown"},
        "conditions": [{"type": "InvalidSpecError", "message": "application destination {https://kubernetes.default.svc kube-system} is not permitted in project 'x'"}]
    }));
    assert!(matches!(sync_state(&refused), SyncState::Failed { why } if why.contains("not permitted")));
    let failed = with_status(serde_json::json!({
        "sync": {"status": "OutOfSync"},
        "operationState": {"phase": "Failed", "message": "one or more objects failed to apply"}
    }));
    assert!(matches!(sync_state(&failed), SyncState::Failed { why } if why.contains("failed to apply")));
    let moved_on = with_status(serde_json::json!({
        "sync": {"status": "Synced", "revision": "new"},
        "operationState": {"phase": "Failed", "message": "refused", "syncResult": {"revision": "old"}}
    }));
    assert_eq!(
        sync_state(&moved_on),
        SyncState::Synced { revision: "new".into() },
        "an older failure no longer counts"
    );
    assert!(matches!(sync_state(&apps().application), SyncState::Pending { .. }));
}
