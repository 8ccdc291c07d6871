use super::*;
use crate::gitops::render::RenderSettings;
use cmp_crds::conditions::TRUE;
use cmp_crds::offering::RuntimeMode;
use cmp_crds::{Organization, OrganizationSpec, Project, ProjectSpec};
use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

fn instance() -> Instance {
    crate::fixtures::instance("p")
}

fn observed() -> Observed {
    Observed {
        organization: Some(Organization::new("acme", OrganizationSpec::default())),
        project: Some(Project::new("p", ProjectSpec::default())),
        ..Default::default()
    }
}

fn gitops(
    delivery: Option<Delivery>,
    application: Option<Option<SyncState>>,
    contains: bool,
    available: Option<bool>,
) -> GitOpsObserved {
    GitOpsObserved {
        render: RenderSettings { root: "tenants".into(), fetch_image: "alpine".into() },
        repo: "file:///r.git".into(),
        delivery,
        application,
        synced_contains_commit: contains,
        deployment: available
            .map(|available| DeploymentState { available, message: "0 of 1 replicas available".into() }),
    }
}

fn state(g: &GitOpsObserved) -> DedicatedState {
    let offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
    let resolved =
        Resolved { offering: &offering, version: &offering.spec.versions[0], runtime_namespace: "cmp-acme-p".into() };
    dedicated(&instance(), &resolved, &observed(), g)
}

fn digest() -> String {
    state(&gitops(None, None, false, None)).commit.expect("a folder to commit").digest()
}

fn delivered() -> Option<Delivery> {
    Some(Delivery::Delivered { digest: digest(), commit: "c1".into() })
}

#[test]
fn an_undelivered_folder_is_handed_to_the_writer_and_synced_waits() {
    let s = state(&gitops(None, None, false, None));
    assert_eq!(s.commit.as_ref().map(|t| t.dir.as_str()), Some("tenants/acme/p/bot"));
    assert_eq!((s.synced.status, s.synced.reason), ("False", "Committing"));
    assert_eq!(s.ready.reason, "Committing");
    let stale = Some(Delivery::Delivered { digest: "old".into(), commit: "c0".into() });
    assert!(state(&gitops(stale, None, false, None)).commit.is_some(), "an older folder is committed again");
}

#[test]
fn a_pushed_folder_is_synced_with_its_commit_in_status() {
    let s = state(&gitops(delivered(), None, false, Some(false)));
    assert!(s.commit.is_none(), "nothing more to commit");
    assert_eq!((s.synced.status, s.synced.reason), (TRUE, "Committed"));
    let at = s.gitops.expect("status.gitops");
    assert_eq!((at.repo.as_str(), at.path.as_str(), at.commit.as_str()), ("file:///r.git", "tenants/acme/p/bot", "c1"));
    assert_eq!(s.ready.reason, "DeploymentUnavailable", "{}", s.ready.message);
}

#[test]
fn a_failed_push_is_on_synced_with_its_reason() {
    let failed = Some(Delivery::Failed { digest: digest(), reason: "GitPushRejected", message: "refused".into() });
    let s = state(&gitops(failed, None, false, None));
    assert_eq!((s.synced.status, s.synced.reason), ("False", "GitPushRejected"));
    assert!(s.commit.is_some(), "still handed over (the writer keeps it)");
}

#[test]
fn ready_needs_argo_cd_synced_at_a_commit_containing_the_change_and_an_available_deployment() {
    let synced = |rev: &str| Some(Some(SyncState::Synced { revision: rev.into() }));
    assert_eq!(state(&gitops(delivered(), Some(None), false, Some(true))).ready.reason, "AwaitingSync");
    let older = state(&gitops(delivered(), synced("c0"), false, Some(true))).ready;
    assert_eq!(older.reason, "AwaitingSync");
    assert!(older.message.contains("does not contain c1"), "{}", older.message);
    let refused = Some(Some(SyncState::Failed { why: "InvalidSpecError: not permitted".into() }));
    assert_eq!(state(&gitops(delivered(), refused, false, Some(true))).ready.reason, "SyncFailed");
    assert_eq!(state(&gitops(delivered(), synced("c2"), true, Some(false))).ready.reason, "DeploymentUnavailable");
    let ready = state(&gitops(delivered(), synced("c2"), true, Some(true))).ready;
    assert_eq!((ready.status, ready.reason), (TRUE, "RuntimeReady"));
    let without_argo = state(&gitops(delivered(), None, false, Some(true))).ready;
    assert_eq!(without_argo.status, TRUE, "no Argo CD: the Deployment alone decides");
}

#[test]
fn a_deployment_is_available_only_at_its_current_generation() {
    let mut d = Deployment { spec: Some(DeploymentSpec::default()), ..Default::default() };
    d.metadata.generation = Some(2);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        available_replicas: Some(1),
        updated_replicas: Some(1),
        ..Default::default()
    });
    assert!(!DeploymentState::of(&d).available, "the old generation's replica");
    d.status = Some(DeploymentStatus {
        observed_generation: Some(2),
        available_replicas: Some(1),
        updated_replicas: Some(1),
        ..Default::default()
    });
    assert!(DeploymentState::of(&d).available);
}

#[test]
fn only_a_change_on_its_way_to_the_writer_leaves_the_status_unwritten() {
    use crate::shell::Reconcile;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let status_with = |synced: NewCondition<'static>| {
        let mut status = cmp_crds::InstanceStatus::default();
        let epoch = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        cmp_crds::conditions::set_condition(&mut status.conditions, synced, Some(1), epoch);
        status
    };
    let pending = state(&gitops(None, None, false, None)).synced;
    assert!(instance().status_can_wait(&status_with(pending)), "Committing: the writer's wake brings the write");
    let pushed = state(&gitops(delivered(), None, false, Some(false))).synced;
    assert!(!instance().status_can_wait(&status_with(pushed)), "Committed is written");
    let failed = Some(Delivery::Failed { digest: digest(), reason: "GitUnreachable", message: "no route".into() });
    let failed = state(&gitops(failed, None, false, None)).synced;
    assert!(!instance().status_can_wait(&status_with(failed)), "a failure is written");
}

#[test]
fn keys_issued_is_announced_only_for_an_instance_that_asks_for_keys() {
    use crate::shell::Reconcile;
    let condition = |type_: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: type_.into(),
        status: TRUE.into(),
        reason: "KeysIssued".into(),
        message: "0 key(s) issued".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
        observed_generation: None,
    };
    let keyless = instance();
    assert!(!keyless.announces(&condition("KeysIssued")));
    assert!(keyless.announces(&condition("Synced")), "other conditions are announced");
    let mut with_key = instance();
    with_key.spec.api_keys = vec![serde_json::from_value(serde_json::json!({"name": "main"})).expect("a key")];
    assert!(with_key.announces(&condition("KeysIssued")));
}
