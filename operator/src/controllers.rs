//! The controllers and what triggers each one. Every trigger comes from the
//! caches' watches (one per kind, shared by all controllers). Children carry
//! labels, not owner references (a reinstalled CRD must never cascade into
//! deleting tenants), so a child maps back to its parent by its labels.
//! Between our own kinds, a trigger passes only when the part of the object
//! that the woken controller reads changed ([`crate::relevant`]): an
//! Offering's or a Project's Instance counts wake no Instance. Nor does a
//! reconcile's own write wake the object again ([`crate::shell::own_writes`]).
//! An Instance wakes the Project and the Offering that count it once its
//! burst has settled ([`crate::settle`]).

use std::sync::Arc;
use std::time::Duration;

use cmp_core::shutdown::Shutdown;
use cmp_crds::names::{
    INSTANCE_LABEL, ORGANIZATION_LABEL, PROJECT_LABEL, control_namespace, organization_of_control_namespace,
};
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use futures::StreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller, Error as ControllerError};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::cache::{Caches, Guarded, valid};
use crate::context::Context;
use crate::relevant::{self, Change, Relevant};
use crate::settle;
use crate::shell::{self, Reconcile};

/// Gateways flush their meters about once a second: a burst of meter writes
/// is gathered into one recomputation (and at most one status write).
const WALLET_DEBOUNCE: Duration = Duration::from_millis(500);

/// The Organization a child of an organization (no project label) belongs to.
fn org_of<K: Resource>(child: &K) -> Option<ObjectRef<Guarded<Organization>>> {
    let labels = child.meta().labels.as_ref()?;
    if labels.contains_key(PROJECT_LABEL) {
        return None;
    }
    labels.get(ORGANIZATION_LABEL).map(|org| ObjectRef::new(org))
}

/// The Project a child of a project belongs to.
fn project_of<K: Resource>(child: &K) -> Option<ObjectRef<Guarded<Project>>> {
    let labels = child.meta().labels.as_ref()?;
    let org = labels.get(ORGANIZATION_LABEL)?;
    let project = labels.get(PROJECT_LABEL)?;
    Some(ObjectRef::new(project).within(&control_namespace(org)))
}

/// The Organization whose control namespace holds `object`.
fn org_of_namespace<K: Resource>(object: &K) -> Option<ObjectRef<Guarded<Organization>>> {
    let ns = object.meta().namespace.as_deref()?;
    organization_of_control_namespace(ns).map(ObjectRef::new)
}

/// Every object of the kind in the control namespace of `org`.
fn in_control_namespace<K: Reconcile>(caches: &Caches, org: &impl Resource) -> Vec<ObjectRef<Guarded<K>>> {
    let ns = control_namespace(&org.meta().name.clone().unwrap_or_default());
    K::watched(caches)
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// The Instances ranked with `instance` for its Project's `maxInstances`
/// whose admission it may have changed: all of its Project's, when it left
/// the ranking (deleted, or moved to another Project), or when the Project
/// has more Instances than it admits (one created in the same second may
/// rank ahead of an admitted one).
fn ranked_with(
    caches: &Caches,
    ranking: &Relevant<Guarded<Instance>, Option<(String, bool)>>,
    instance: &Guarded<Instance>,
) -> Vec<ObjectRef<Guarded<Instance>>> {
    let Some(change) = ranking.change(instance) else { return Vec::new() };
    let ns = instance.namespace().unwrap_or_default();
    let left = match (&change.before, &change.now) {
        (Some(Some((project, true))), now) if *now != Some(Some((project.clone(), true))) => Some(project.clone()),
        _ => None,
    };
    let siblings = caches.instances_in(&ns);
    let counted_in = |project: &str| -> Vec<ObjectRef<Guarded<Instance>>> {
        let counts = |i: &Instance| i.spec.project == project && i.meta().deletion_timestamp.is_none();
        siblings.iter().filter(|i| valid(i).is_some_and(counts)).map(|i| ObjectRef::from_obj(&**i)).collect()
    };
    let over_quota = |project: &str| {
        let admits =
            caches.projects.get(project, Some(&ns)).as_deref().and_then(valid).map(|p| p.spec.quota.max_instances);
        admits.is_some_and(|max| counted_in(project).len() > usize::try_from(max).unwrap_or(0))
    };
    let mut projects: Vec<String> = change.both().flatten().map(|(project, _)| project).collect();
    projects.dedup();
    projects
        .into_iter()
        .filter(|project| left.as_deref() == Some(project.as_str()) || over_quota(project))
        .flat_map(|project| counted_in(&project))
        .collect()
}

async fn log_results<K: Reconcile>(
    stream: impl futures::Stream<
        Item = Result<(ObjectRef<Guarded<K>>, Action), ControllerError<crate::error::Error, watcher::Error>>,
    >,
) {
    let kind = K::kind(&());
    stream
        .for_each(|result| {
            match result {
                Ok((object, _)) => tracing::debug!(%kind, object = %object.name, "reconciled"),
                // Logged with its reason by the error policy.
                Err(ControllerError::ReconcilerFailed(..)) => {}
                // A trigger for an object that is gone (or never was): expected, not a warning.
                Err(ControllerError::ObjectNotFound(object)) => {
                    tracing::debug!(%kind, object = %object.name, "triggered, but not in the cache; nothing to do")
                }
                Err(error) => tracing::warn!(%kind, %error, "controller error"),
            }
            std::future::ready(())
        })
        .await;
}

/// The controller of kind `K`, woken by every change of an object of the
/// kind except the echoes of its own reconciles' writes (for kinds whose
/// status it writes alone).
fn controller<K: Reconcile>(ctx: &Arc<Context>, config: ControllerConfig) -> Controller<Guarded<K>> {
    let watched = K::watched(&ctx.caches);
    let own = ctx.clone();
    let changed = watched.subscribe().filter(move |object| {
        let echo = object.as_ref().is_ok_and(|object| own.own_writes.echoes(object));
        std::future::ready(!echo)
    });
    Controller::for_stream(changed, watched.store()).with_config(config)
}

/// The objects whose counts `counted` says an Instance's change touched,
/// each woken once its burst settled ([`settle`]).
fn settled_counts<K: Reconcile>(
    instances: impl futures::Stream<Item = Result<Guarded<Instance>, watcher::Error>> + Send + 'static,
    counted: impl Fn(Guarded<Instance>) -> Vec<ObjectRef<Guarded<K>>> + Send + 'static,
) -> impl futures::Stream<Item = ObjectRef<Guarded<K>>> + Send {
    let touched = instances
        .filter_map(|event| std::future::ready(event.ok()))
        .flat_map(move |instance| futures::stream::iter(counted(instance)));
    settle::settled(touched, settle::COUNTS_SETTLE)
}

/// A stream of what a tokio channel receives.
fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Runs the Organization, Project, Offering, Instance and Wallet controllers until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, concurrency: u16, shutdown: Shutdown) {
    let config = ControllerConfig::default().concurrency(concurrency);
    let c = ctx.caches.clone();

    let orgs = controller::<Organization>(&ctx, config.clone())
        .watches_stream(c.namespaces.subscribe(), |ns| org_of(&ns))
        .watches_stream(c.roles.subscribe(), |r| org_of(&r))
        .watches_stream(c.role_bindings.subscribe(), |b| org_of(&b))
        .watches_stream(c.projects.subscribe(), |p| org_of_namespace(&p))
        .graceful_shutdown_on(shutdown.clone())
        .run(shell::reconcile::<Organization>, shell::error_policy::<Organization>, ctx.clone());

    let (projects_of_org, cached_projects) = (c.clone(), c.clone());
    let counted_by_project = Relevant::new(c.instances.store(), relevant::instance_for_project);
    let projects = controller::<Project>(&ctx, config.clone())
        .watches_stream(c.namespaces.subscribe(), |ns| project_of(&ns))
        .watches_stream(c.quotas.subscribe(), |q| project_of(&q))
        .watches_stream(c.limit_ranges.subscribe(), |l| project_of(&l))
        .watches_stream(c.network_policies.subscribe(), |p| project_of(&p))
        .watches_stream(c.service_accounts.subscribe(), |s| project_of(&s))
        .watches_stream(c.roles.subscribe(), |r| project_of(&r))
        .watches_stream(c.role_bindings.subscribe(), |b| project_of(&b))
        .reconcile_on(settled_counts(c.instances.subscribe(), move |i| {
            // The Projects an Instance named and names, when that changed (the Project counts them);
            // only those that exist: an Instance naming a missing one is its own problem.
            let ns = i.namespace().unwrap_or_default();
            let named = counted_by_project.change(&i).into_iter().flat_map(Change::both).flatten();
            named
                .filter_map(|project| cached_projects.projects.get(&project, Some(&ns)))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        }))
        .watches_stream(c.organizations.subscribe(), move |org| in_control_namespace::<Project>(&projects_of_org, &org))
        .graceful_shutdown_on(shutdown.clone())
        .run(shell::reconcile::<Project>, shell::error_policy::<Project>, ctx.clone());

    let counted_by_offering = Relevant::new(c.instances.store(), relevant::instance_for_offering);
    let offerings = controller::<Offering>(&ctx, config.clone())
        .reconcile_on(settled_counts(c.instances.subscribe(), move |i| {
            // The Offerings an Instance named and names, when that or its version or plan changed (the Offering counts them).
            let named = counted_by_offering.change(&i).into_iter().flat_map(Change::both).flatten();
            named.map(|(offering, _, _)| ObjectRef::<Guarded<Offering>>::new(&offering)).collect::<Vec<_>>()
        }))
        .graceful_shutdown_on(shutdown.clone())
        .run(shell::reconcile::<Offering>, shell::error_policy::<Offering>, ctx.clone());

    let (instances_of_org, instances_of_project, instances_of_offering) = (c.clone(), c.clone(), c.clone());
    let (offering_read, project_read) = (
        Relevant::new(c.offerings.store(), relevant::offering_for_instances),
        Relevant::new(c.projects.store(), relevant::project_for_instances),
    );
    let (ranking, ranked) = (Relevant::new(c.instances.store(), relevant::instance_in_ranking), c.clone());
    let mut instances = controller::<Instance>(&ctx, config.clone())
        .watches_stream(c.offerings.subscribe(), move |offering| {
            if offering_read.change(&offering).is_none() {
                return Vec::new();
            }
            let name = offering.name_any();
            instances_of_offering
                .instances
                .state()
                .iter()
                .filter(|i| valid(i).is_some_and(|i| i.spec.offering == name))
                .map(|i| ObjectRef::from_obj(&**i))
                .collect::<Vec<_>>()
        })
        .watches_stream(c.key_secrets.subscribe(), |secret| {
            let instance = secret.labels().get(INSTANCE_LABEL)?;
            Some(ObjectRef::<Guarded<Instance>>::new(instance).within(&secret.namespace()?))
        })
        .watches_stream(c.organizations.subscribe(), move |org| {
            in_control_namespace::<Instance>(&instances_of_org, &org)
        })
        .watches_stream(c.projects.subscribe(), move |project| {
            if project_read.change(&project).is_none() {
                return Vec::new();
            }
            let (ns, name) = (project.namespace().unwrap_or_default(), project.name_any());
            instances_of_project
                .instances_in(&ns)
                .iter()
                .filter(|i| valid(i).is_some_and(|i| i.spec.project == name))
                .map(|i| ObjectRef::from_obj(&**i))
                .collect::<Vec<_>>()
        })
        .watches_stream(c.instances.subscribe(), move |instance| ranked_with(&ranked, &ranking, &instance))
        // A runtime Deployment (synced by Argo CD with the operator's labels) wakes its Instance.
        .watches_stream(c.deployments.subscribe(), |deployment| {
            let labels = deployment.labels();
            let (org, instance) = (labels.get(ORGANIZATION_LABEL)?, labels.get(INSTANCE_LABEL)?);
            Some(ObjectRef::<Guarded<Instance>>::new(instance).within(&control_namespace(org)))
        });
    if let Some(applications) = &c.applications {
        // A Project's Application wakes every Instance of the Project.
        let instances_of_app = c.clone();
        instances = instances.watches_stream(applications.subscribe(), move |app| {
            let labels = app.labels();
            let (Some(org), Some(project)) = (labels.get(ORGANIZATION_LABEL), labels.get(PROJECT_LABEL)) else {
                return Vec::new();
            };
            instances_of_app
                .instances_in(&control_namespace(org))
                .iter()
                .filter(|i| valid(i).is_some_and(|i| &i.spec.project == project))
                .map(|i| ObjectRef::from_obj(&**i))
                .collect::<Vec<_>>()
        });
    }
    if let Some(wakes) = ctx.gitops.as_ref().and_then(|g| g.take_wakes()) {
        // The GitOps writer delivered (or failed) an Instance's folder.
        let delivered = tokio_stream_of(wakes).filter_map(|key| {
            let woken = key.split_once('/').map(|(ns, name)| ObjectRef::<Guarded<Instance>>::new(name).within(ns));
            std::future::ready(woken)
        });
        instances = instances.reconcile_on(delivered);
    }
    let instances = instances.graceful_shutdown_on(shutdown.clone()).run(
        shell::reconcile::<Instance>,
        shell::error_policy::<Instance>,
        ctx.clone(),
    );

    let wallets = controller::<Wallet>(&ctx, config.debounce(WALLET_DEBOUNCE)).graceful_shutdown_on(shutdown).run(
        shell::reconcile::<Wallet>,
        shell::error_policy::<Wallet>,
        ctx.clone(),
    );

    tokio::join!(
        log_results::<Organization>(orgs),
        log_results::<Project>(projects),
        log_results::<Offering>(offerings),
        log_results::<Instance>(instances),
        log_results::<Wallet>(wallets)
    );
}
