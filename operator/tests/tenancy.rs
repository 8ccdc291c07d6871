//! Organizations and Projects against the real API server: what they
//! produce, idempotence, drift correction, and starter credits granted once.

mod support;

use std::collections::BTreeMap;

use cmp_crds::Organization;
use cmp_testenv::test::{eventually, http_get};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use support::{CONVERGE, World, request_reconcile};

fn subjects(binding: &RoleBinding) -> Vec<String> {
    binding.subjects.iter().flatten().map(|s| format!("{}:{}", s.kind, s.name)).collect()
}

/// resourceVersions of every object the operator manages for `org`.
async fn managed_versions(client: &kube::Client, org: &str) -> BTreeMap<String, String> {
    let params = ListParams::default().labels(&format!("cmp.gsv.dev/organization={org}"));
    let mut versions = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in Api::<$kind>::all(client.clone()).list(&params).await.expect("list").items {
                let key = format!("{}/{}/{}", <$kind>::kind(&()), o.namespace().unwrap_or_default(), o.name_any());
                versions.insert(key, o.resource_version().unwrap_or_default());
            }
        };
    }
    collect!(Namespace);
    collect!(ResourceQuota);
    collect!(LimitRange);
    collect!(NetworkPolicy);
    collect!(ServiceAccount);
    collect!(Role);
    collect!(RoleBinding);
    versions
}

#[tokio::test]
async fn an_organization_and_two_projects_get_namespaces_isolation_and_rbac_and_a_reapply_changes_nothing() {
    let w = World::new("tenancy").await;
    let operator = w.operator("a", &["--gateway-namespace", "cmp-gw"]);
    let org = w.org_name("org");
    w.apply_org(
        &org,
        json!({"displayName": "Tenancy", "owners": [{"name": "alice"}], "starterCredits": 300,
               "members": [{"name": "bob", "role": "Developer"}, {"kind": "Group", "name": "support", "role": "Viewer"}]}),
    )
    .await;
    w.apply_project(
        &org,
        "support",
        json!({"quota": {"cpu": "2", "memory": "4Gi", "pods": 10},
               "network": {"egress": [{"name": "llm", "cidr": "203.0.113.0/24", "ports": [{"port": 443}]}]}}),
    )
    .await;
    w.apply_project(&org, "sales", json!({})).await;
    let support = w.project_ready(&org, "support").await;
    w.project_ready(&org, "sales").await;
    let orgs = Api::<Organization>::all(w.client.clone());
    let status = eventually("the org to list both projects", CONVERGE, || async {
        let o = orgs.get(&org).await.ok()?;
        let s = o.status?;
        (s.projects == ["sales", "support"]).then_some(s)
    })
    .await;
    assert_eq!(status.namespace.as_deref(), Some(format!("cmp-{org}").as_str()));
    assert_eq!(status.wallet.as_deref(), Some(org.as_str()));
    assert!(cmp_crds::conditions::is_true(&status.conditions, "NamespaceReady"));
    let runtime = format!("cmp-{org}-support");
    assert_eq!(support.status.as_ref().and_then(|s| s.runtime_namespace.clone()), Some(runtime.clone()));
    assert!(cmp_crds::conditions::is_true(&support.status.expect("status").conditions, "IsolationReady"));

    // Namespaces, labelled as tenants.
    let namespaces = Api::<Namespace>::all(w.client.clone());
    let control = namespaces.get(&format!("cmp-{org}")).await.expect("control namespace");
    assert_eq!(control.labels()["cmp.gsv.dev/tenant"], "control");
    let rt = namespaces.get(&runtime).await.expect("runtime namespace");
    assert_eq!(rt.labels()["cmp.gsv.dev/tenant"], "runtime");
    assert_eq!(rt.labels()["cmp.gsv.dev/project"], "support");

    // Quota and limits from the spec, and defaults where it is silent.
    let hard = |q: ResourceQuota| q.spec.and_then(|s| s.hard).expect("hard");
    let quota =
        hard(Api::<ResourceQuota>::namespaced(w.client.clone(), &runtime).get("cmp-quota").await.expect("quota"));
    assert_eq!(
        (quota["limits.cpu"].0.as_str(), quota["limits.memory"].0.as_str(), quota["pods"].0.as_str()),
        ("2", "4Gi", "10")
    );
    let sales_quota = hard(
        Api::<ResourceQuota>::namespaced(w.client.clone(), &format!("cmp-{org}-sales"))
            .get("cmp-quota")
            .await
            .expect("quota"),
    );
    assert_eq!(sales_quota["limits.cpu"].0, "4");
    Api::<LimitRange>::namespaced(w.client.clone(), &runtime).get("cmp-limits").await.expect("limit range");
    Api::<ServiceAccount>::namespaced(w.client.clone(), &runtime).get("cmp-runtime").await.expect("service account");

    // Network policies: default deny, ingress from the gateway namespace, egress to DNS, the gateway's pods and the spec's CIDR.
    let policies = Api::<NetworkPolicy>::namespaced(w.client.clone(), &runtime);
    let deny = policies.get("cmp-default-deny").await.expect("deny").spec.expect("spec");
    assert_eq!(deny.policy_types, Some(vec!["Ingress".to_string(), "Egress".to_string()]));
    let ingress = serde_json::to_value(policies.get("cmp-allow-ingress").await.expect("ingress").spec).expect("json");
    assert_eq!(
        ingress["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "cmp-gw"
    );
    let egress = serde_json::to_value(policies.get("cmp-allow-egress").await.expect("egress").spec).expect("json");
    assert_eq!(egress["egress"][1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "gateway");
    assert_eq!(egress["egress"][1]["ports"][0]["port"], 8080, "the connector gateway, on the gateway's API port");
    assert_eq!(egress["egress"][2]["to"][0]["ipBlock"]["cidr"], "203.0.113.0/24");
    assert_eq!(egress["egress"][2]["ports"][0]["port"], 443);

    // RBAC from owners and members, in the control and the runtime namespace.
    for ns in [format!("cmp-{org}"), runtime.clone()] {
        let bindings = Api::<RoleBinding>::namespaced(w.client.clone(), &ns);
        assert_eq!(subjects(&bindings.get("cmp-admin").await.expect("admin")), ["User:alice"]);
        assert_eq!(subjects(&bindings.get("cmp-developer").await.expect("developer")), ["User:bob"]);
        assert_eq!(subjects(&bindings.get("cmp-viewer").await.expect("viewer")), ["Group:support"]);
    }

    // Health and metrics.
    assert_eq!(http_get(operator.health, "/healthz").await.expect("healthz").0, 200);
    assert_eq!(http_get(operator.health, "/readyz").await.expect("readyz").0, 200);
    let metrics = operator.metrics().await.expect("metrics");
    for family in [
        "cmp_operator_reconciles_total{kind=\"Organization\"}",
        "cmp_operator_reconciles_total{kind=\"Project\"}",
        "cmp_operator_reconcile_duration_seconds_count{kind=\"Project\"}",
        "cmp_operator_api_writes_total{kind=\"NetworkPolicy\",verb=\"apply\"}",
    ] {
        // Counted, not only created at zero.
        let counted = metrics.lines().any(|l| l.starts_with(family) && !l.ends_with(" 0"));
        assert!(counted, "{family} missing from /metrics or still 0:\n{metrics}");
    }

    // The Wallet and its starter credits.
    let wallet = eventually("wallet funded", CONVERGE, || async {
        let wallet = w.wallets(&org).get(&org).await.ok()?;
        (wallet.status.as_ref()?.balance == 300).then_some(wallet)
    })
    .await;
    assert_eq!(wallet.spec.grants.len(), 1);

    // A second apply, and a forced reconcile, change nothing.
    let before = managed_versions(&w.client, &org).await;
    assert!(before.len() >= 20, "all children found: {before:?}");
    let writes_before = operator.child_writes().await;
    w.apply_project(&org, "sales", json!({})).await;
    request_reconcile(&orgs, &org, "again-1", |o| o.status.as_ref()?.last_handled_reconcile_at.clone()).await;
    request_reconcile(&w.projects(&org), "support", "again-1", |p| {
        p.status.as_ref()?.last_handled_reconcile_at.clone()
    })
    .await;
    assert_eq!(managed_versions(&w.client, &org).await, before, "no child was rewritten");
    let writes = operator.child_writes().await - writes_before;
    assert_eq!(writes, 0, "no child was applied again (only statuses record the handled requests)");

    w.delete_org(&org).await;
}

#[tokio::test]
async fn deleted_and_edited_children_are_repaired() {
    let w = World::new("drift").await;
    let operator = w.operator("a", &[]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Drift"})).await;
    w.apply_project(&org, "p", json!({"quota": {"pods": 7}})).await;
    w.project_ready(&org, "p").await;
    let runtime = format!("cmp-{org}-p");

    let policies = Api::<NetworkPolicy>::namespaced(w.client.clone(), &runtime);
    let quotas = Api::<ResourceQuota>::namespaced(w.client.clone(), &runtime);
    let roles = Api::<Role>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let writes_before = operator.child_writes().await;
    policies.delete("cmp-default-deny", &DeleteParams::default()).await.expect("delete policy");
    roles.delete("cmp-viewer", &DeleteParams::default()).await.expect("delete role");
    let edit = json!({"spec": {"hard": {"pods": "999"}}});
    quotas.patch("cmp-quota", &PatchParams::default(), &Patch::Merge(&edit)).await.expect("edit quota");

    eventually("the deleted policy, the deleted role and the quota to come back", CONVERGE, || async {
        let policy = policies.get_opt("cmp-default-deny").await.ok()??;
        roles.get_opt("cmp-viewer").await.ok()??;
        let quota = quotas.get("cmp-quota").await.ok()?;
        let pods = quota.spec?.hard?.get("pods")?.0.clone();
        (pods == "7" && policy.spec.is_some()).then_some(())
    })
    .await;
    let repairs = operator.child_writes().await - writes_before;
    assert_eq!(repairs, 3, "exactly the policy, the role and the quota were rewritten:\n{}", operator.log());

    // A deleted runtime namespace is recreated (with its isolation) once the namespace controller has removed it.
    let namespaces = Api::<Namespace>::all(w.client.clone());
    let old_uid = namespaces.get(&runtime).await.expect("namespace").metadata.uid;
    namespaces.delete(&runtime, &DeleteParams::default()).await.expect("delete namespace");
    eventually("the runtime namespace to be recreated with its policies", CONVERGE, || async {
        let ns = namespaces.get_opt(&runtime).await.ok()??;
        let fresh = ns.metadata.uid != old_uid && ns.metadata.deletion_timestamp.is_none();
        (fresh && policies.get_opt("cmp-default-deny").await.ok()?.is_some()).then_some(())
    })
    .await;
    w.project_ready(&org, "p").await;
    w.delete_org(&org).await;
}

#[tokio::test]
async fn starter_credits_are_granted_once_across_restarts_and_wallet_recreation() {
    let w = World::new("starter").await;
    let org = w.org_name("org");
    let orgs = Api::<Organization>::all(w.client.clone());
    {
        let _first = w.operator("first", &[]);
        w.apply_org(&org, json!({"displayName": "Starter", "starterCredits": 250})).await;
        w.org_ready(&org).await;
        request_reconcile(&orgs, &org, "1", |o| o.status.as_ref()?.last_handled_reconcile_at.clone()).await;
    }
    let _second = w.operator("second", &[]);
    request_reconcile(&orgs, &org, "2", |o| o.status.as_ref()?.last_handled_reconcile_at.clone()).await;
    let wallets = w.wallets(&org);
    let wallet = eventually("wallet figures", CONVERGE, || async {
        let wallet = wallets.get(&org).await.ok()?;
        (wallet.status.as_ref()?.granted == 250).then_some(wallet)
    })
    .await;
    let starters: Vec<_> = wallet.spec.grants.iter().filter(|g| g.id == "starter").collect();
    assert_eq!(starters.len(), 1);
    assert_eq!(starters[0].credits, 250);
    assert!(orgs.get(&org).await.expect("org").status.expect("status").starter_granted);

    // A recreated Wallet does not get the starter credits again.
    wallets.delete(&org, &DeleteParams::default()).await.expect("delete wallet");
    request_reconcile(&orgs, &org, "3", |o| o.status.as_ref()?.last_handled_reconcile_at.clone()).await;
    let recreated = eventually("wallet recreated", CONVERGE, || async { wallets.get_opt(&org).await.ok()? }).await;
    assert!(recreated.spec.grants.is_empty(), "starter credits are granted once in an organization's life");
    w.delete_org(&org).await;
}

#[tokio::test]
async fn a_runtime_namespace_name_past_63_characters_is_shortened_and_reported() {
    let w = World::new("long").await;
    let _operator = w.operator("a", &[]);
    let org = w.org_name("organization-with-a-long-name");
    let project = "a-project-name-that-is-long-enough-to-overflow-the-dns-label";
    w.apply_org(&org, json!({"displayName": "Long"})).await;
    w.apply_project(&org, project, json!({})).await;
    let ready = w.project_ready(&org, project).await;
    let runtime = ready.status.and_then(|s| s.runtime_namespace).expect("runtime namespace in status");
    assert!(format!("cmp-{org}-{project}").len() > 63);
    assert_eq!(runtime, cmp_crds::names::runtime_namespace(&org, project));
    assert_eq!(runtime.len(), 63, "{runtime}");
    let ns = Api::<Namespace>::all(w.client.clone()).get(&runtime).await.expect("the shortened namespace exists");
    assert_eq!(ns.labels()["cmp.gsv.dev/project"], project);
    w.delete_org(&org).await;
}

#[tokio::test]
async fn errors_are_reported_in_conditions_and_counted_under_their_own_reason() {
    let w = World::new("errors").await;
    let operator = w.operator("a", &[]);
    // A Project in a namespace that looks like a control namespace, without its Organization.
    let ghost = format!("cmp-{}-ghost", w.run);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ghost}})).expect("namespace");
    let namespaces = Api::<Namespace>::all(w.client.clone());
    namespaces.create(&Default::default(), &ns).await.expect("namespace");
    let projects = Api::<cmp_crds::Project>::namespaced(w.client.clone(), &ghost);
    let project = json!({"apiVersion": cmp_crds::Project::api_version(&()), "kind": "Project", "metadata": {"name": "orphan"}, "spec": {}});
    projects.patch("orphan", &PatchParams::apply("cmp-tests"), &Patch::Apply(project)).await.expect("project");
    let condition = eventually("Ready=False with the reason", CONVERGE, || async {
        let p = projects.get("orphan").await.ok()?;
        cmp_crds::conditions::find(&p.status?.conditions, "Ready")
            .filter(|c| c.status == cmp_crds::conditions::FALSE)
            .cloned()
    })
    .await;
    assert_eq!(condition.reason, "OrganizationNotFound");
    assert!(condition.message.contains("does not exist; create it"), "{}", condition.message);
    // The error policy counts it right after the status is written.
    let series = "cmp_operator_reconcile_errors_total{kind=\"Project\",reason=\"OrganizationNotFound\"}";
    let metrics = eventually(&format!("{series} in /metrics"), CONVERGE, || async {
        operator.metrics().await.filter(|m| m.lines().any(|l| l.starts_with(series) && !l.ends_with(" 0")))
    })
    .await;
    assert!(!metrics.contains("FinalizerFailed"), "errors are not hidden behind the finalizer:\n{metrics}");
    // Deleting it is not blocked by the error.
    projects.delete("orphan", &DeleteParams::default()).await.expect("delete");
    eventually("the orphan Project to be gone", CONVERGE, || async {
        matches!(projects.get_opt("orphan").await, Ok(None)).then_some(())
    })
    .await;
    namespaces.delete(&ghost, &DeleteParams::default()).await.expect("cleanup");
}

/// A Pod as the runtimes' namespace admits it (pod-security `restricted`).
/// There is no kubelet here, so an admitted Pod is never run: the test is about admission.
fn restricted_pod(name: &str, cpu: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runtime", "image": "registry.invalid/runtime:1",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    }))
    .expect("a pod")
}

#[tokio::test]
async fn a_pod_over_the_project_quota_is_refused_by_the_api_server() {
    use k8s_openapi::api::core::v1::Pod;
    let w = World::new("quota").await;
    let _operator = w.operator("a", &[]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Quota"})).await;
    w.apply_project(&org, "p", json!({"quota": {"cpu": "1", "memory": "1Gi", "pods": 2}})).await;
    w.project_ready(&org, "p").await;
    let runtime = format!("cmp-{org}-p");
    // The resource-quota controller fills in the quota's status; until it has, the API server admits nothing.
    let quotas = Api::<ResourceQuota>::namespaced(w.client.clone(), &runtime);
    eventually("the quota controller to compute the quota's usage", CONVERGE, || async {
        let status = quotas.get("cmp-quota").await.ok()?.status?;
        status.hard.filter(|h| h.contains_key("limits.cpu")).and(status.used)
    })
    .await;
    let pods = Api::<Pod>::namespaced(w.client.clone(), &runtime);
    let refused = pods.create(&Default::default(), &restricted_pod("too-big", "2")).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{}", status.message);
            assert!(status.message.contains("exceeded quota: cmp-quota"), "{}", status.message);
        }
        other => panic!("a pod over the quota was not refused: {other:?}"),
    }
    pods.create(&Default::default(), &restricted_pod("fits", "500m"))
        .await
        .expect("a pod within the quota is admitted");
    w.delete_org(&org).await;
}
