use cmp_crds::OfferingStatus;
use cmp_crds::offering::{ArtifactState, PlanStatus, RuntimeMode, VersionStatus};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;

use super::*;
use crate::fixtures;

fn offering(instances: i64, artifact: ArtifactState) -> Guarded<Offering> {
    let mut offering = fixtures::offering(RuntimeMode::Dedicated, vec![fixtures::version("1", false)]);
    offering.metadata.uid = Some("uid-o".into());
    offering.metadata.resource_version = Some(instances.to_string());
    offering.status = Some(OfferingStatus {
        instance_count: instances,
        versions: vec![VersionStatus {
            name: "1".into(),
            artifact,
            url: "file:///1.json".into(),
            sha256: "a".repeat(64),
            message: String::new(),
            deprecated: false,
            instances,
        }],
        plans: vec![PlanStatus { id: "basic".into(), instances }],
        ..OfferingStatus::default()
    });
    DeserializeGuard(Ok(offering))
}

fn instance(project: &str, uid: &str) -> Guarded<Instance> {
    let mut instance = fixtures::instance(project);
    instance.metadata.uid = Some(uid.into());
    DeserializeGuard(Ok(instance))
}

fn cache<K: Resource<DynamicType = ()> + Clone + 'static>() -> (Store<K>, Writer<K>) {
    reflector::store()
}

/// `object` arrives in the cache, and its watch event reaches the follower.
fn arrives<K, V>(writer: &mut Writer<K>, relevant: &Relevant<K, V>, object: &K) -> Option<Change<V>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    V: Clone + PartialEq,
{
    writer.apply_watcher_event(&Event::Apply(object.clone()));
    relevant.change(object)
}

#[test]
fn an_offering_whose_counts_alone_changed_wakes_no_instance() {
    let (store, mut writer) = cache();
    let relevant = Relevant::new(store, offering_for_instances);
    let first = offering(1, ArtifactState::Verified);
    assert!(arrives(&mut writer, &relevant, &first).is_some(), "the first sight of an object is a change");

    let counted = offering(2, ArtifactState::Verified);
    assert_eq!(
        arrives(&mut writer, &relevant, &counted),
        None,
        "only the Instance counts (and the resourceVersion) changed"
    );

    let mismatch = offering(2, ArtifactState::Mismatch);
    let change = arrives(&mut writer, &relevant, &mismatch).map(|c| (c.before.is_some(), c.now.is_some()));
    assert_eq!(change, Some((true, true)), "an artifact's state is read by the Instances");
}

#[test]
fn a_stale_event_is_judged_by_the_cached_object() {
    let (store, mut writer) = cache();
    let relevant = Relevant::new(store, offering_for_instances);
    let (old, new) = (offering(1, ArtifactState::Pending), offering(1, ArtifactState::Verified));
    writer.apply_watcher_event(&Event::Apply(old.clone()));
    writer.apply_watcher_event(&Event::Apply(new.clone()));
    let change = relevant.change(&old).expect("first sight");
    assert_eq!(change.now, Some(offering_for_instances(&new)), "the cache's newer object is what is read");
    assert_eq!(relevant.change(&new), None, "the newer object's own event then changes nothing");
}

#[test]
fn an_instance_moved_to_another_project_wakes_both_projects() {
    let (store, mut writer) = cache();
    let relevant = Relevant::new(store, instance_for_project);
    let in_a = instance("a", "uid-1");
    let first: Vec<_> = arrives(&mut writer, &relevant, &in_a).expect("first sight").both().collect();
    assert_eq!(first, vec![Some("a".to_string())]);

    let mut status_written = instance("a", "uid-1");
    if let Ok(i) = &mut status_written.0 {
        i.status = Some(Default::default());
        i.metadata.resource_version = Some("2".into());
    }
    assert_eq!(arrives(&mut writer, &relevant, &status_written), None, "a Project does not read its Instances' status");

    let in_b = instance("b", "uid-1");
    let both: Vec<_> = arrives(&mut writer, &relevant, &in_b).expect("moved").both().collect();
    assert_eq!(both, vec![Some("a".to_string()), Some("b".to_string())]);
}

#[test]
fn a_deleted_or_replaced_object_is_a_change() {
    let (store, mut writer) = cache();
    let relevant = Relevant::new(store, instance_for_project);
    let first = instance("a", "uid-1");
    arrives(&mut writer, &relevant, &first);

    writer.apply_watcher_event(&Event::Delete(first.clone()));
    let gone = relevant.change(&first).expect("gone");
    assert_eq!((gone.before, gone.now), (Some(Some("a".to_string())), None));
    let again = relevant.change(&first).expect("a second event for a gone object still tells its part");
    assert_eq!((again.before, again.now), (Some(Some("a".to_string())), None));

    // Recreated under the same name, in the same Project: a new object (new uid) is still a change.
    let recreated = instance("a", "uid-2");
    assert!(arrives(&mut writer, &relevant, &recreated).is_some());
    // The old object's late event, with the new one cached: the old one is gone, and the new one is kept.
    let late = relevant.change(&first).expect("gone");
    assert_eq!(late.now, None);
    assert_eq!(relevant.change(&recreated), None, "the recreated object is still remembered");
}

#[test]
fn an_unreadable_object_is_read_as_its_error() {
    let (store, mut writer) = cache::<Guarded<Instance>>();
    let relevant = Relevant::new(store, instance_for_project);
    let mut broken: Guarded<Instance> =
        serde_json::from_value(serde_json::json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme", "uid": "uid-1"}, "spec": {"project": 7}}))
        .expect("a guard reads any object");
    assert!(broken.0.is_err());
    assert_eq!(arrives(&mut writer, &relevant, &broken).map(|c| c.now), Some(Some(None)));
    broken = instance("a", "uid-1");
    assert_eq!(
        arrives(&mut writer, &relevant, &broken).map(|c| c.now),
        Some(Some(Some("a".to_string()))),
        "fixed: a change"
    );
}
