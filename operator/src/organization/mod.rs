//! The Organization reconciler: control namespace, Wallet with starter
//! credits, RBAC, suspension of the org's Instances, and status.

pub mod desired;

use std::sync::Arc;
use std::time::Duration;

use cmp_crds::conditions::set_condition;
use cmp_crds::names::control_namespace;
use cmp_crds::{DeletionPolicy, Instance, Organization, Project, Wallet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::apply::Outcome;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::labels::{ABANDON_CLEANUP_ANNOTATION, FINALIZER, flag};
use crate::report;
use crate::status::{self, condition, types};

/// The kind, for metrics and logs.
pub const KIND: &str = "Organization";
/// The field manager of the starter grant, applied once and never again.
pub const STARTER_MANAGER: &str = "cmp-operator-starter";
/// The field manager of the `Suspended` condition on Instances.
pub const SUSPENSION_MANAGER: &str = "cmp-operator-suspension";
/// Condition: the control namespace exists.
pub const NAMESPACE_READY: &str = "NamespaceReady";
/// How often a converged object is checked again. Watches repair drift within
/// seconds; this is only a safety net (each check reads every child once).
const RESYNC: Duration = Duration::from_secs(3600);

/// Reconciles one Organization.
pub async fn reconcile(org: Arc<Organization>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let api = Api::<Organization>::all(ctx.client.clone());
    let action = finalizer(&api, FINALIZER, org, |event| async {
        match event {
            Event::Apply(org) => apply(&org, &ctx).await,
            Event::Cleanup(org) => cleanup(&org, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    Ok(action)
}

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy(org: Arc<Organization>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.reason());
    let delay = ctx.backoff.failed(&format!("{KIND}/{}", org.name_any()));
    tracing::warn!(organization = %org.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(org: &Organization, ctx: &Context) -> Result<Action> {
    let key = format!("{KIND}/{}", org.name_any());
    report::converge_or_report(org, ctx, &key, converge(org, ctx)).await
}

async fn converge(org: &Organization, ctx: &Context) -> Result<Action> {
    let name = org.name_any();
    let generation = org.meta().generation;
    let Some((mut status, requests)) = report::unless_paused(org, ctx).await? else {
        return Ok(Action::await_change());
    };

    let children = desired::children(org);
    let ns = control_namespace(&name);
    if ctx.applier.ensure_cluster(&children.namespace).await? == Outcome::Terminating {
        return report::namespace_terminating(org, ctx, status, NAMESPACE_READY, &ns).await;
    }
    set_condition(
        &mut status.conditions,
        condition(NAMESPACE_READY, true, "NamespaceReady", format!("control namespace {ns} exists")),
        generation,
        status::now(),
    );

    let wallets = Api::<Wallet>::namespaced(ctx.client.clone(), &ns);
    let wallet_name = desired::wallet_name(org);
    if !status.starter_granted {
        grant_starter_credits(org, ctx, &wallets).await?;
        status.starter_granted = true;
    }
    ctx.applier.ensure_in(&wallets, &wallet_name, &children.wallet, cmp_crds::names::OPERATOR_MANAGER).await?;
    for role in &children.roles {
        ctx.applier.ensure(role).await?;
    }
    for binding in &children.role_bindings {
        ctx.applier.ensure(binding).await?;
    }
    propagate_suspension(org, ctx, &ns).await?;

    let projects = Api::<Project>::namespaced(ctx.client.clone(), &ns)
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube(format!("listing the Projects of {ns}")))?;
    let mut project_names: Vec<String> = projects.items.iter().map(ResourceExt::name_any).collect();
    project_names.sort();

    status.observed_generation = generation;
    status.namespace = Some(ns.clone());
    status.wallet = Some(wallet_name);
    status.project_count = i64::try_from(project_names.len()).unwrap_or(i64::MAX);
    status.projects = project_names;
    status.last_handled_reconcile_at = requests.reconcile_requested_at;
    let suspended = org.spec.suspended;
    set_condition(
        &mut status.conditions,
        if suspended {
            condition(
                types::SUSPENDED,
                true,
                "SuspendedBySpec",
                "spec.suspended is true: the gateway refuses runs of every Instance of the organization",
            )
        } else {
            condition(types::SUSPENDED, false, "Active", "the organization is active")
        },
        generation,
        status::now(),
    );
    set_condition(
        &mut status.conditions,
        condition(
            types::READY,
            true,
            "Reconciled",
            format!("namespace {ns}, wallet, RBAC and {} project(s) in place", status.project_count),
        ),
        generation,
        status::now(),
    );
    report::write_status(org, ctx, status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Appends the starter grant (creating the Wallet with it when there is no
/// Wallet yet) unless the Wallet already has one. Idempotent by
/// grant id, and guarded by `status.starterGranted` so that it happens once
/// in the Organization's life, even if the Wallet is later recreated.
async fn grant_starter_credits(org: &Organization, ctx: &Context, wallets: &Api<Wallet>) -> Result<()> {
    let Some(grant) = desired::starter_grant(org, ctx.config.starter_credits) else {
        return Ok(());
    };
    let name = desired::wallet_name(org);
    let wallet = wallets.get_opt(&name).await.map_err(Error::kube(format!("reading Wallet {name}")))?;
    if wallet.is_some_and(|w| w.spec.grants.iter().any(|g| g.id == desired::STARTER_GRANT_ID)) {
        return Ok(());
    }
    ctx.applier.ensure_in(wallets, &name, &grant, STARTER_MANAGER).await?;
    ctx.publish(
        org,
        false,
        "StarterCreditsGranted",
        format!("granted {} starter credits to Wallet {name}", grant["spec"]["grants"][0]["credits"]),
    )
    .await;
    Ok(())
}

/// Sets the `Suspended` condition on every Instance of the organization, under
/// its own field manager, so that the gateway can refuse their runs.
async fn propagate_suspension(org: &Organization, ctx: &Context, ns: &str) -> Result<()> {
    let instances = Api::<Instance>::namespaced(ctx.client.clone(), ns);
    let list =
        instances.list(&ListParams::default()).await.map_err(Error::kube(format!("listing the Instances of {ns}")))?;
    let (status, reason, message) = if org.spec.suspended {
        ("True", "OrganizationSuspended", format!("Organization {} is suspended", org.name_any()))
    } else {
        ("False", "OrganizationActive", format!("Organization {} is active", org.name_any()))
    };
    for instance in list.items {
        let current =
            instance.status.as_ref().and_then(|s| cmp_crds::conditions::find(&s.conditions, types::SUSPENDED));
        if current.is_some_and(|c| c.status == status && c.reason == reason) {
            continue;
        }
        let patch = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "status": {"conditions": [{
                "type": types::SUSPENDED, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": status::now(), "observedGeneration": instance.meta().generation,
            }]}
        });
        let name = instance.name_any();
        ctx.metrics.write("Instance", "apply_status");
        instances
            .patch_status(&name, &PatchParams::apply(SUSPENSION_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(format!("marking Instance {ns}/{name} {reason}")))?;
    }
    Ok(())
}

/// Deletion: honour `deletionPolicy`, or the abandon annotation.
async fn cleanup(org: &Organization, ctx: &Context) -> Result<Action> {
    let name = org.name_any();
    if flag(org.annotations().into(), ABANDON_CLEANUP_ANNOTATION) {
        tracing::info!(organization = %name, "cleanup abandoned by annotation; leaving everything in place");
        return Ok(Action::await_change());
    }
    if org.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(organization = %name, "deletionPolicy Retain: leaving the control namespace in place");
        return Ok(Action::await_change());
    }
    // The namespace controller deletes what the namespace holds; the Project
    // reconciler finalizes the Projects in it (and their runtime namespaces).
    let ns = control_namespace(&name);
    ctx.applier.delete_cluster::<Namespace>(&ns).await?;
    ctx.publish(org, false, "Deleting", format!("deleting control namespace {ns}")).await;
    Ok(Action::await_change())
}
