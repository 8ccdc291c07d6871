//! Deletion honours deletionPolicy and the abandon annotation, with the real
//! namespace controller finishing namespaces, and leaves nothing stuck.

mod support;

use cmp_crds::{Organization, Project};
use cmp_testenv::test::eventually;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::{CONVERGE, World};

/// Waits until the namespace no longer exists (not even Terminating).
async fn gone(namespaces: &Api<Namespace>, name: &str) {
    eventually(&format!("namespace {name} to be deleted"), CONVERGE, || async {
        matches!(namespaces.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// True when the namespace exists and is not being deleted.
async fn active(namespaces: &Api<Namespace>, name: &str) -> bool {
    namespaces.get_opt(name).await.ok().flatten().is_some_and(|ns| ns.metadata.deletion_timestamp.is_none())
}

#[tokio::test]
async fn delete_removes_namespaces_retain_and_abandon_keep_them_and_no_finalizer_is_stuck() {
    let w = World::new("delete").await;
    let _operator = w.operator("a", &[]);
    let namespaces = Api::<Namespace>::all(w.client.clone());
    let orgs = Api::<Organization>::all(w.client.clone());

    let org = w.org_name("del");
    w.apply_org(&org, json!({"displayName": "Deleted", "deletionPolicy": "Delete"})).await;
    w.apply_project(&org, "gone", json!({"deletionPolicy": "Delete"})).await;
    w.apply_project(&org, "kept", json!({"deletionPolicy": "Retain"})).await;
    w.apply_project(&org, "abandoned", json!({"deletionPolicy": "Delete"})).await;
    for p in ["gone", "kept", "abandoned"] {
        w.project_ready(&org, p).await;
    }
    let abandon = json!({"metadata": {"annotations": {"cmp.gsv.dev/abandon-cleanup": "true"}}});
    w.projects(&org).patch("abandoned", &PatchParams::default(), &Patch::Merge(&abandon)).await.expect("annotate");

    // Deleting one Project with Delete removes its runtime namespace only.
    w.projects(&org).delete("gone", &DeleteParams::default()).await.expect("delete project");
    gone(&namespaces, &format!("cmp-{org}-gone")).await;
    eventually("the Project to be gone", CONVERGE, || async {
        matches!(w.projects(&org).get_opt("gone").await, Ok(None)).then_some(())
    })
    .await;
    assert!(active(&namespaces, &format!("cmp-{org}")).await);

    // Deleting the Organization deletes its control namespace; the namespace
    // controller deletes the Projects in it, whose finalizers honour their policies.
    orgs.delete(&org, &DeleteParams::default()).await.expect("delete org");
    gone(&namespaces, &format!("cmp-{org}")).await;
    eventually("the Organization to be gone", CONVERGE, || async {
        matches!(orgs.get_opt(&org).await, Ok(None)).then_some(())
    })
    .await;
    assert!(active(&namespaces, &format!("cmp-{org}-kept")).await, "Retain keeps the runtime namespace");
    assert!(
        active(&namespaces, &format!("cmp-{org}-abandoned")).await,
        "abandoned cleanup keeps the runtime namespace"
    );

    // Retain on the Organization keeps the control namespace and the Wallet.
    let kept = w.org_name("ret");
    w.apply_org(&kept, json!({"displayName": "Retained", "deletionPolicy": "Retain", "starterCredits": 10})).await;
    w.org_ready(&kept).await;
    orgs.delete(&kept, &DeleteParams::default()).await.expect("delete org");
    eventually("the retained Organization to be gone", CONVERGE, || async {
        matches!(orgs.get_opt(&kept).await, Ok(None)).then_some(())
    })
    .await;
    assert!(active(&namespaces, &format!("cmp-{kept}")).await, "Retain keeps the control namespace");
    assert!(w.wallets(&kept).get_opt(&kept).await.expect("read").is_some(), "and the Wallet");

    for ns in [format!("cmp-{org}-kept"), format!("cmp-{org}-abandoned"), format!("cmp-{kept}")] {
        namespaces.delete(&ns, &DeleteParams::default()).await.expect("cleanup");
    }
}

#[tokio::test]
async fn deletion_tolerates_children_that_are_already_gone() {
    let w = World::new("already").await;
    let _operator = w.operator("a", &[]);
    let namespaces = Api::<Namespace>::all(w.client.clone());
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Already gone"})).await;
    w.apply_project(&org, "p", json!({})).await;
    w.project_ready(&org, "p").await;
    // With reconciling paused (else the operator would recreate it), someone
    // deletes the runtime namespace first; the Project's deletion still completes.
    let pause = json!({"metadata": {"annotations": {"cmp.gsv.dev/paused": "true"}}});
    w.projects(&org).patch("p", &PatchParams::default(), &Patch::Merge(&pause)).await.expect("pause");
    eventually("the Project to report Paused", CONVERGE, || async {
        let p = w.projects(&org).get("p").await.ok()?;
        cmp_crds::conditions::is_true(&p.status?.conditions, "Paused").then_some(())
    })
    .await;
    let runtime = format!("cmp-{org}-p");
    namespaces.delete(&runtime, &DeleteParams::default()).await.expect("delete namespace");
    gone(&namespaces, &runtime).await;
    let projects: Api<Project> = w.projects(&org);
    projects.delete("p", &DeleteParams::default()).await.expect("delete project");
    eventually("the Project to be gone", CONVERGE, || async {
        matches!(projects.get_opt("p").await, Ok(None)).then_some(())
    })
    .await;
    w.delete_org(&org).await;
    gone(&namespaces, &format!("cmp-{org}")).await;
}
