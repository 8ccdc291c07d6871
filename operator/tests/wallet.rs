//! Wallet status against the real API server: figures from grants and
//! gateway meters, `Funded`, stale meters folded without losing a credit;
//! and suspension, which Projects and Instances derive from their
//! Organization, each writing its own status.

mod support;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::test::eventually;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{CONVERGE, World};

fn meter(name: &str, consumed: i64, updated_at: &str, lease: i64, lease_expires_at: &str) -> serde_json::Value {
    json!({"apiVersion": Wallet::api_version(&()), "kind": "Wallet", "status": {"meters": [{
        "name": name, "consumed": consumed, "runs": consumed, "lease": lease,
        "leaseExpiresAt": lease_expires_at, "updatedAt": updated_at}]}})
}

fn funded(wallet: &Wallet) -> Option<(String, String)> {
    let c = cmp_crds::conditions::find(&wallet.status.as_ref()?.conditions, "Funded")?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn wallet_figures_follow_meters_and_stale_meters_fold_without_losing_a_credit() {
    let w = World::new("wallet").await;
    let _operator = w.operator("a", &["--meter-stale-after-seconds", "600", "--low-balance-threshold", "100"]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Wallet", "starterCredits": 1000})).await;
    w.org_ready(&org).await;
    let wallets = w.wallets(&org);

    // Two gateway replicas report consumption, each as its own field manager:
    // one long gone (written an hour ago, lease expired), one live with a lease.
    let now = k8s_openapi::jiff::Timestamp::now();
    let hour_ago = now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(3600)).expect("time").to_string();
    let in_a_minute = now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(60)).expect("time").to_string();
    let gone = meter("gateway-old", 300, &hour_ago, 50, &hour_ago);
    wallets.patch_status(&org, &PatchParams::apply("cmp-gateway-old"), &Patch::Apply(gone)).await.expect("old meter");
    let live = meter("gateway-live", 250, &now.to_string(), 40, &in_a_minute);
    wallets.patch_status(&org, &PatchParams::apply("cmp-gateway-live"), &Patch::Apply(live)).await.expect("live meter");

    let folded = eventually("the stale meter to be folded", CONVERGE, || async {
        let wallet = wallets.get(&org).await.ok()?;
        let status = wallet.status.clone()?;
        (status.meters.len() == 1 && status.compacted.is_some() && status.consumed == 550).then_some(wallet)
    })
    .await;
    let status = folded.status.clone().expect("status");
    assert_eq!((status.granted, status.consumed, status.balance, status.leased), (1000, 550, 450, 40));
    assert_eq!(status.meters[0].name, "gateway-live");
    let compacted = status.compacted.expect("compacted");
    assert_eq!(
        (compacted.consumed, compacted.runs, compacted.meters.clone()),
        (300, 300, vec!["gateway-old".to_string()])
    );
    assert_eq!(funded(&folded), Some(("True".into(), "Funded".into())));

    // The live replica keeps writing its own entry after the fold, without conflict.
    let later = meter("gateway-live", 650, &now.to_string(), 0, &in_a_minute);
    wallets
        .patch_status(&org, &PatchParams::apply("cmp-gateway-live"), &Patch::Apply(later))
        .await
        .expect("live meter again");
    let low = eventually("Funded=False Low", CONVERGE, || async {
        let wallet = wallets.get(&org).await.ok()?;
        (funded(&wallet)? == ("False".into(), "Low".into())).then_some(wallet)
    })
    .await;
    assert_eq!(low.status.as_ref().map(|s| s.balance), Some(1000 - 300 - 650), "below the threshold of 100");

    let exhausted = meter("gateway-live", 800, &now.to_string(), 0, &in_a_minute);
    wallets.patch_status(&org, &PatchParams::apply("cmp-gateway-live"), &Patch::Apply(exhausted)).await.expect("meter");
    eventually("Funded=False Exhausted", CONVERGE, || async {
        let wallet = wallets.get(&org).await.ok()?;
        (funded(&wallet)? == ("False".into(), "Exhausted".into())).then_some(())
    })
    .await;
    w.delete_org(&org).await;
}

#[tokio::test]
async fn suspending_an_organization_suspends_its_projects_and_instances() {
    let w = World::new("suspend").await;
    let _operator = w.operator("a", &[]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Suspend"})).await;
    w.apply_project(&org, "p", json!({})).await;
    w.project_ready(&org, "p").await;
    let instances = Api::<Instance>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let instance = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": "bot"},
        "spec": {"project": "p", "offering": "o", "version": "1", "plan": "basic"}});
    instances.patch("bot", &PatchParams::apply("cmp-tests"), &Patch::Apply(instance)).await.expect("instance");

    let suspended = |wanted: &'static str| {
        let instances = instances.clone();
        let projects = w.projects(&org);
        async move {
            let instance = instances.get("bot").await.ok()?;
            let project = projects.get("p").await.ok()?;
            let on_instance = cmp_crds::conditions::find(&instance.status?.conditions, "Suspended")?.status.clone();
            let on_project = cmp_crds::conditions::find(&project.status?.conditions, "Suspended")?.status.clone();
            (on_instance == wanted && on_project == wanted).then_some(())
        }
    };
    eventually("Suspended=False on the project and instance", CONVERGE, || suspended(cmp_crds::conditions::FALSE))
        .await;
    w.apply_org(&org, json!({"displayName": "Suspend", "suspended": true})).await;
    eventually("Suspended=True on the project and instance", CONVERGE, || suspended(cmp_crds::conditions::TRUE)).await;
    // One writer per object: the Instance's status has a single field manager, the operator.
    let fields = instances.get("bot").await.expect("instance").metadata.managed_fields.unwrap_or_default();
    let status_managers: Vec<_> = fields
        .iter()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .filter_map(|f| f.manager.clone())
        .collect();
    assert_eq!(status_managers, ["cmp-operator"], "{fields:?}");
    w.apply_org(&org, json!({"displayName": "Suspend", "suspended": false})).await;
    eventually("Suspended=False again", CONVERGE, || suspended(cmp_crds::conditions::FALSE)).await;
    w.delete_org(&org).await;
}
