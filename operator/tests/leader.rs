//! Two replicas: only the leader writes; kill it and the standby takes over
//! and converges; SIGTERM releases the lease and exits cleanly.

mod support;

use cmp_testenv::test::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use support::{CONVERGE, World};

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok().flatten()?.spec?.holder_identity
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_dies() {
    let w = World::new("leader").await;
    let flags = ["--lease-duration-seconds", "3"];
    let mut first = w.operator("first", &flags);
    let leases = Api::<Lease>::namespaced(w.client.clone(), "cmp-system");
    let lease = format!("cmp-operator-{}", w.run);
    eventually("the first replica to lead", CONVERGE, || async {
        (holder(&leases, &lease).await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let mut second = w.operator("second", &flags);
    eventually("the second replica to serve metrics", CONVERGE, || async { second.metrics().await }).await;

    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Leader"})).await;
    w.apply_project(&org, "one", json!({})).await;
    w.project_ready(&org, "one").await;
    assert!(first.tenant_writes().await > 0, "the leader converged the org");
    assert_eq!(second.tenant_writes().await, 0, "the standby wrote nothing:\n{}", second.log());
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("first"));

    first.kill();
    eventually("the second replica to take the lease", CONVERGE, || async {
        (holder(&leases, &lease).await.as_deref() == Some("second")).then_some(())
    })
    .await;
    w.apply_project(&org, "two", json!({})).await;
    w.project_ready(&org, "two").await;
    assert!(second.tenant_writes().await > 0, "the new leader converged the new project");

    w.delete_org(&org).await;

    // SIGTERM: a clean exit that releases the lease.
    let status = second.terminate();
    assert!(status.success(), "exit status {status:?}:\n{}", second.log());
    assert!(second.log().contains("released the leader lease"), "{}", second.log());
    assert!(!second.running());
    let released = holder(&leases, &lease).await;
    assert!(released.as_deref() != Some("second"), "lease still held by {released:?}");
}
