//! Who may do what: org viewers and developers cannot append Wallet grants
//! (RBAC), and nobody but the operator can relabel a tenant namespace
//! (a ValidatingAdmissionPolicy), even with RBAC rights on namespaces.

mod support;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::test::{client_as, eventually};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{CONVERGE, World};

fn api_code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn append_grant(id: &str) -> serde_json::Value {
    json!({"apiVersion": Wallet::api_version(&()), "kind": "Wallet",
           "spec": {"grants": [{"id": id, "credits": 1000000, "source": "Manual"}]}})
}

#[tokio::test]
async fn org_viewers_and_developers_read_but_cannot_append_wallet_grants() {
    let w = World::new("rbac").await;
    let _operator = w.operator("a", &[]);
    let org = w.org_name("org");
    let viewer = format!("{}-viewer", w.run);
    let developer = format!("{}-dev", w.run);
    w.apply_org(
        &org,
        json!({"displayName": "RBAC", "starterCredits": 5,
               "members": [{"name": viewer, "role": "Viewer"}, {"name": developer, "role": "Developer"}]}),
    )
    .await;
    w.org_ready(&org).await;
    let ns = format!("cmp-{org}");

    for user in [&viewer, &developer] {
        let client = client_as(user, &["system:authenticated"]).await;
        let wallets = Api::<Wallet>::namespaced(client.clone(), &ns);
        // Reading works (the binding is in place) ...
        let wallet =
            eventually(&format!("{user} can read the wallet"), CONVERGE, || async { wallets.get(&org).await.ok() })
                .await;
        assert_eq!(wallet.spec.grants.len(), 1);
        // ... appending a grant does not, by apply, merge patch or update.
        let (code, message) =
            api_code(wallets.patch(&org, &PatchParams::apply(user), &Patch::Apply(append_grant("mine"))).await);
        assert_eq!(code, 403, "{message}");
        assert!(message.contains("cannot patch resource \"wallets\""), "{message}");
        let mut edited = wallet.clone();
        edited.spec.grants.push(serde_json::from_value(append_grant("x")["spec"]["grants"][0].clone()).expect("grant"));
        assert_eq!(api_code(wallets.replace(&org, &PostParams::default(), &edited).await).0, 403);
    }
    // Nor may they relabel their tenant namespace.
    for user in [&viewer, &developer] {
        let namespaces =
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client_as(user, &["system:authenticated"]).await);
        let relabel = json!({"metadata": {"labels": {"cmp.gsv.dev/tenant": "runtime"}}});
        assert_eq!(api_code(namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(relabel)).await).0, 403);
    }
    let after = w.wallets(&org).get(&org).await.expect("wallet");
    assert_eq!(after.spec.grants.len(), 1, "nothing was appended");

    // A developer manages Instances (dry run: there is no Offering to run).
    let dev = client_as(&developer, &["system:authenticated"]).await;
    let instance: Instance = serde_json::from_value(json!({
        "apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": "bot", "namespace": ns},
        "spec": {"project": "p", "offering": "o", "version": "1", "plan": "basic"}}))
    .expect("instance");
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    Api::<Instance>::namespaced(dev, &ns).create(&dry_run, &instance).await.expect("developers create Instances");
    let viewer_client = client_as(&viewer, &["system:authenticated"]).await;
    assert_eq!(api_code(Api::<Instance>::namespaced(viewer_client, &ns).create(&dry_run, &instance).await).0, 403);

    w.delete_org(&org).await;
}

#[tokio::test]
async fn only_the_operator_may_set_change_or_remove_tenancy_labels() {
    let w = World::new("labels").await;
    let _operator = w.operator("a", &[]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Labels"})).await;
    w.org_ready(&org).await;
    let ns = format!("cmp-{org}");

    // mallory may patch and create namespaces as far as RBAC is concerned.
    let mallory = format!("{}-mallory", w.run);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": mallory},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "patch", "update", "create", "delete"]}]
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": mallory},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": mallory},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": mallory}]
    }))
    .expect("binding");
    let roles = Api::<ClusterRole>::all(w.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(w.client.clone());
    roles.create(&PostParams::default(), &role).await.expect("role");
    bindings.create(&PostParams::default(), &binding).await.expect("binding");

    let namespaces = Api::<Namespace>::all(client_as(&mallory, &[]).await);
    let relabel = |value: serde_json::Value| json!({"metadata": {"labels": {"cmp.gsv.dev/tenant": value}}});
    // The policy is in place once a change is refused (the API server loads policies asynchronously).
    let message = eventually("the tenancy label change to be refused", CONVERGE, || async {
        match namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(relabel(json!("runtime")))).await {
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("managed by the CMP operator") =>
            {
                Some(status.message.clone())
            }
            _ => None,
        }
    })
    .await;
    assert!(message.contains(&mallory), "the refusal names the user: {message}");
    // Removing it is refused too; other labels are fine.
    assert_eq!(
        api_code(namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(relabel(json!(null)))).await).0,
        403
    );
    let team = json!({"metadata": {"labels": {"team": "blue"}}});
    namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(team)).await.expect("other labels are allowed");
    // So is creating a namespace that claims to be a tenant.
    let spoof: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("{}-spoof", w.run),
        "labels": {"cmp.gsv.dev/tenant": "runtime", "cmp.gsv.dev/organization": org}}}))
    .expect("namespace");
    assert_eq!(api_code(namespaces.create(&PostParams::default(), &spoof).await).0, 403);

    let labels = Api::<Namespace>::all(w.client.clone()).get(&ns).await.expect("ns").metadata.labels.expect("labels");
    assert_eq!(labels["cmp.gsv.dev/tenant"], "control", "the label is unchanged");
    roles.delete(&mallory, &DeleteParams::default()).await.expect("cleanup");
    bindings.delete(&mallory, &DeleteParams::default()).await.expect("cleanup");
    w.delete_org(&org).await;
}
