//! The three controllers and what each one watches. Children carry labels,
//! not owner references (a reinstalled CRD must never cascade into deleting
//! tenants), so every watch maps a child back to its parent by its labels.

use std::sync::Arc;

use cmp_crds::names::{
    MANAGED_BY_LABEL, OPERATOR_MANAGER, ORGANIZATION_LABEL, PROJECT_LABEL, control_namespace,
    organization_of_control_namespace,
};
use cmp_crds::{Instance, Organization, Project, Wallet};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::{organization, project, wallet};

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={OPERATOR_MANAGER}"))
}

fn organizations(ctx: &Context) -> watcher::Config {
    let selector = &ctx.config.organization_selector;
    if selector.is_empty() { watcher::Config::default() } else { watcher::Config::default().labels(selector) }
}

/// The Organization a child of an organization (no project label) belongs to.
fn org_of<K: Resource>(child: &K) -> Option<ObjectRef<Organization>> {
    let labels = child.meta().labels.as_ref()?;
    if labels.contains_key(PROJECT_LABEL) {
        return None;
    }
    labels.get(ORGANIZATION_LABEL).map(|org| ObjectRef::new(org))
}

/// The Project a child of a project belongs to.
fn project_of<K: Resource>(child: &K) -> Option<ObjectRef<Project>> {
    let labels = child.meta().labels.as_ref()?;
    let org = labels.get(ORGANIZATION_LABEL)?;
    let project = labels.get(PROJECT_LABEL)?;
    Some(ObjectRef::new(project).within(&control_namespace(org)))
}

/// The Organization whose control namespace holds `object`.
fn org_of_namespace<K: Resource>(object: &K) -> Option<ObjectRef<Organization>> {
    let ns = object.meta().namespace.as_deref()?;
    organization_of_control_namespace(ns).map(ObjectRef::new)
}

fn all<K>(ctx: &Context) -> Api<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Api::all(ctx.client.clone())
}

async fn log_results<K: Resource, E: std::fmt::Display + 'static>(
    kind: &'static str,
    stream: impl futures::Stream<
        Item = Result<
            (ObjectRef<K>, kube::runtime::controller::Action),
            kube::runtime::controller::Error<E, watcher::Error>,
        >,
    >,
) where
    K::DynamicType: std::fmt::Debug,
{
    stream
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(kind, object = %object.name, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::debug!(kind, object = %object.name, %error, "reconcile failed (retrying with backoff)")
                }
                Err(error) => tracing::warn!(kind, %error, "controller error"),
            }
        })
        .await;
}

/// Runs the Organization, Project and Wallet controllers until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static) {
    let config = ControllerConfig::default().concurrency(ctx.config.concurrency);

    let orgs = Controller::new(all::<Organization>(&ctx), organizations(&ctx))
        .with_config(config.clone())
        .watches(all::<Namespace>(&ctx), managed(), |ns| org_of(&ns))
        .watches(all::<Role>(&ctx), managed(), |r| org_of(&r))
        .watches(all::<RoleBinding>(&ctx), managed(), |b| org_of(&b))
        .watches(all::<Project>(&ctx), watcher::Config::default(), |p| org_of_namespace(&p))
        .watches(all::<Instance>(&ctx), watcher::Config::default(), |i| org_of_namespace(&i))
        .graceful_shutdown_on(shutdown.clone())
        .run(organization::reconcile, organization::error_policy, ctx.clone());

    let projects = Controller::new(all::<Project>(&ctx), watcher::Config::default()).with_config(config.clone());
    let project_store = projects.store();
    let projects = projects
        .watches(all::<Namespace>(&ctx), managed(), |ns| project_of(&ns))
        .watches(all::<ResourceQuota>(&ctx), managed(), |q| project_of(&q))
        .watches(all::<LimitRange>(&ctx), managed(), |l| project_of(&l))
        .watches(all::<NetworkPolicy>(&ctx), managed(), |p| project_of(&p))
        .watches(all::<ServiceAccount>(&ctx), managed(), |s| project_of(&s))
        .watches(all::<Role>(&ctx), managed(), |r| project_of(&r))
        .watches(all::<RoleBinding>(&ctx), managed(), |b| project_of(&b))
        .watches(all::<Instance>(&ctx), watcher::Config::default(), |i| {
            i.namespace().map(|ns| ObjectRef::<Project>::new(&i.spec.project).within(&ns))
        })
        .watches(all::<Organization>(&ctx), organizations(&ctx), move |org| {
            let ns = control_namespace(&org.name_any());
            project_store
                .state()
                .into_iter()
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(project::reconcile, project::error_policy, ctx.clone());

    // Gateways flush their meters about once a second: gather a burst of
    // meter writes into one recomputation (and at most one status write).
    let wallets = Controller::new(all::<Wallet>(&ctx), watcher::Config::default())
        .with_config(config.debounce(std::time::Duration::from_millis(500)))
        .graceful_shutdown_on(shutdown)
        .run(wallet::reconcile, wallet::error_policy, ctx.clone());

    tokio::join!(log_results("Organization", orgs), log_results("Project", projects), log_results("Wallet", wallets));
}
