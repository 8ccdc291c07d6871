//! Triggers that fire only when the part of an object that the woken
//! controller reads has changed.
//!
//! A Project's status counts its Instances, and an Offering's counts them by
//! version and plan. During a burst of Instances these counts are written
//! again and again, and no Instance reads them; following every such write
//! woke every Instance of the Offering (a thousand in `bench-gitops`, about
//! eight reconciles per Instance). In the other direction, a Project and an
//! Offering read only which Instances name them (and on what version and
//! plan), not the Instances' status. Each follower keeps, per object, the
//! part it read last ([`Relevant`]), and lets a trigger through only when
//! that part changed, the object was replaced, or it is gone.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use cmp_crds::{Instance, Offering, Project};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::cache::{Guarded, valid};

/// What changed in the part of one object that a follower reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<V> {
    /// The part read last; None the first time the object is seen.
    pub before: Option<V>,
    /// The part now; None when the object is gone.
    pub now: Option<V>,
}

impl<V> Change<V> {
    /// Both the part before and the part now, the ones there are.
    pub fn both(self) -> impl Iterator<Item = V> {
        self.before.into_iter().chain(self.now)
    }
}

/// The part of each object of a kind that one follower read last.
pub struct Relevant<K: Resource<DynamicType = ()> + Clone + 'static, V> {
    store: Store<K>,
    part: fn(&K) -> V,
    /// By `(namespace, name)`: the object's uid and its part.
    last: Mutex<HashMap<(String, String), (String, V)>>,
}

impl<K, V> Relevant<K, V>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    V: Clone + PartialEq,
{
    /// Follows the objects of `store`, reading `part` of each.
    pub fn new(store: Store<K>, part: fn(&K) -> V) -> Self {
        Self { store, part, last: Mutex::default() }
    }

    /// What a watch event for `object` changed in the part read, or None
    /// when nothing did. The part is read from the cache, which is at least
    /// as new as the event; an object the cache no longer holds (by uid) is gone.
    pub fn change(&self, object: &K) -> Option<Change<V>> {
        let meta = object.meta();
        let key = (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
        let uid = meta.uid.clone().unwrap_or_default();
        let cached = self.store.get(&ObjectRef::from_obj(object)).filter(|c| c.meta().uid.as_deref() == Some(&uid));
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(cached) = cached else {
            // Gone: forget it (unless a newer object of the name is remembered) and tell its last part.
            let before = match last.get(&key) {
                Some((remembered, _)) if *remembered == uid => last.remove(&key).map(|(_, part)| part),
                _ => Some((self.part)(object)),
            };
            return Some(Change { before, now: None });
        };
        let now = (self.part)(&cached);
        match last.insert(key, (uid.clone(), now.clone())) {
            Some((remembered, part)) if remembered == uid && part == now => None,
            Some((_, part)) => Some(Change { before: Some(part), now: Some(now) }),
            None => Some(Change { before: None, now: Some(now) }),
        }
    }
}

/// An object as a follower reads it: the object, or why it could not be read.
type Readable<K> = Result<K, String>;

fn readable<K: Clone>(guard: &Guarded<K>) -> Readable<K> {
    guard.0.clone().map_err(|invalid| invalid.error)
}

/// An Offering as its Instances read it: all of it but the Instance counts
/// of its status and the resourceVersion.
pub fn offering_for_instances(offering: &Guarded<Offering>) -> Readable<Offering> {
    readable(offering).map(|mut offering| {
        offering.metadata.resource_version = None;
        if let Some(status) = &mut offering.status {
            status.instance_count = 0;
            status.versions.iter_mut().for_each(|v| v.instances = 0);
            status.plans.iter_mut().for_each(|p| p.instances = 0);
        }
        offering
    })
}

/// A Project as its Instances read it: all of it but the Instance count of its status and the resourceVersion.
pub fn project_for_instances(project: &Guarded<Project>) -> Readable<Project> {
    readable(project).map(|mut project| {
        project.metadata.resource_version = None;
        if let Some(status) = &mut project.status {
            status.instance_count = 0;
        }
        project
    })
}

/// An Instance as its Project counts it: the Project it names (None when unreadable).
pub fn instance_for_project(instance: &Guarded<Instance>) -> Option<String> {
    valid(instance).map(|i| i.spec.project.clone())
}

/// An Instance as the Instances ranked with it for their Project's
/// `maxInstances` see it: the Project it names, and whether it counts (it is
/// not being deleted). None when unreadable.
pub fn instance_in_ranking(instance: &Guarded<Instance>) -> Option<(String, bool)> {
    valid(instance).map(|i| (i.spec.project.clone(), i.meta().deletion_timestamp.is_none()))
}

/// An Instance as its Offering counts it: the Offering, version and plan it names (None when unreadable).
pub fn instance_for_offering(instance: &Guarded<Instance>) -> Option<(String, String, String)> {
    valid(instance).map(|i| (i.spec.offering.clone(), i.spec.version.clone(), i.spec.plan.clone()))
}

#[cfg(test)]
mod tests;
