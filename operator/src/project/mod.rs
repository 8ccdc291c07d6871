//! The Project reconciler: the runtime namespace and its isolation
//! (quota, limits, network policies, service account, RBAC), and status.

pub mod desired;

use std::sync::Arc;
use std::time::Duration;

use cmp_crds::conditions::set_condition;
use cmp_crds::names::{organization_of_control_namespace, runtime_namespace};
use cmp_crds::{DeletionPolicy, Instance, Organization, Project};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};

use crate::apply::Outcome;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::labels::{ABANDON_CLEANUP_ANNOTATION, FINALIZER, flag};
use crate::report;
use crate::status::{self, condition, types};

/// The kind, for metrics and logs.
pub const KIND: &str = "Project";
/// Condition: quota, limits, network policies and RBAC are in place.
pub const ISOLATION_READY: &str = "IsolationReady";
/// How often a converged object is checked again. Watches repair drift within
/// seconds; this is only a safety net (each check reads every child once).
const RESYNC: Duration = Duration::from_secs(3600);

fn key(project: &Project) -> String {
    format!("{KIND}/{}/{}", project.namespace().unwrap_or_default(), project.name_any())
}

/// Reconciles one Project.
pub async fn reconcile(project: Arc<Project>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let api = Api::<Project>::namespaced(ctx.client.clone(), &project.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, project, |event| async {
        match event {
            Event::Apply(project) => apply(&project, &ctx).await,
            Event::Cleanup(project) => cleanup(&project, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy(project: Arc<Project>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.reason());
    let delay = ctx.backoff.failed(&key(&project));
    tracing::warn!(project = %key(&project), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The Organization a Project belongs to (by its namespace), if this operator reconciles it.
async fn organization(project: &Project, ctx: &Context) -> Result<Option<Organization>> {
    let namespace = project.namespace().unwrap_or_default();
    let org = organization_of_control_namespace(&namespace)
        .ok_or_else(|| Error::NotInControlNamespace { namespace: namespace.clone() })?;
    ctx.organization(org).await
}

async fn apply(project: &Project, ctx: &Context) -> Result<Action> {
    report::converge_or_report(project, ctx, &key(project), converge(project, ctx)).await
}

async fn converge(project: &Project, ctx: &Context) -> Result<Action> {
    let Some(org) = organization(project, ctx).await? else {
        tracing::debug!(project = %key(project), "organization not selected by this operator; skipping");
        return Ok(Action::await_change());
    };
    let generation = project.meta().generation;
    let Some((mut status, requests)) = report::unless_paused(project, ctx).await? else {
        return Ok(Action::await_change());
    };

    let org_name = org.name_any();
    let name = project.name_any();
    let children = desired::children(&org_name, &org.spec, &name, &project.spec, &ctx.config.network());
    let runtime_ns = runtime_namespace(&org_name, &name);
    if ctx.applier.ensure_cluster(&children.namespace).await? == Outcome::Terminating {
        return report::namespace_terminating(project, ctx, status, ISOLATION_READY, &runtime_ns).await;
    }
    ctx.applier.ensure(&children.quota).await?;
    ctx.applier.ensure(&children.limits).await?;
    for policy in &children.network_policies {
        ctx.applier.ensure(policy).await?;
    }
    ctx.applier.ensure(&children.service_account).await?;
    for role in &children.roles {
        ctx.applier.ensure(role).await?;
    }
    for binding in &children.role_bindings {
        ctx.applier.ensure(binding).await?;
    }

    let control_ns = project.namespace().unwrap_or_default();
    let instances = Api::<Instance>::namespaced(ctx.client.clone(), &control_ns)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("listing the Instances of {control_ns}")))?;
    status.observed_generation = generation;
    status.runtime_namespace = Some(runtime_ns.clone());
    status.instance_count =
        i64::try_from(instances.items.iter().filter(|i| i.spec.project == name).count()).unwrap_or(i64::MAX);
    status.last_handled_reconcile_at = requests.reconcile_requested_at;
    let now = status::now;
    set_condition(
        &mut status.conditions,
        condition(
            ISOLATION_READY,
            true,
            "IsolationApplied",
            format!("quota, limits, default-deny network policies and RBAC are in place in {runtime_ns}"),
        ),
        generation,
        now(),
    );
    set_condition(
        &mut status.conditions,
        if org.spec.suspended {
            condition(
                types::SUSPENDED,
                true,
                "OrganizationSuspended",
                format!("Organization {org_name} is suspended: the gateway refuses runs"),
            )
        } else {
            condition(types::SUSPENDED, false, "OrganizationActive", format!("Organization {org_name} is active"))
        },
        generation,
        now(),
    );
    set_condition(
        &mut status.conditions,
        condition(types::READY, true, "Reconciled", format!("runtime namespace {runtime_ns} is ready")),
        generation,
        now(),
    );
    report::write_status(project, ctx, status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Deletion: honour `deletionPolicy`, or the abandon annotation. Needs no
/// Organization: it also runs while the org's namespace is being deleted.
async fn cleanup(project: &Project, ctx: &Context) -> Result<Action> {
    if flag(project.annotations().into(), ABANDON_CLEANUP_ANNOTATION)
        || project.spec.deletion_policy == DeletionPolicy::Retain
    {
        tracing::info!(project = %key(project), "leaving the runtime namespace in place");
        return Ok(Action::await_change());
    }
    let namespace = project.namespace().unwrap_or_default();
    let Some(org) = organization_of_control_namespace(&namespace) else {
        return Ok(Action::await_change());
    };
    let runtime_ns = runtime_namespace(org, &project.name_any());
    ctx.applier.delete_cluster::<Namespace>(&runtime_ns).await?;
    ctx.publish(project, false, "Deleting", format!("deleting runtime namespace {runtime_ns}")).await;
    Ok(Action::await_change())
}
