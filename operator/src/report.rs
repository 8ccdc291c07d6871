//! Status writing shared by the Organization and Project reconcilers: write
//! only when changed, publish an Event only when `Ready` transitions, and
//! record a failed reconcile in `Ready` before returning the error.

use std::fmt::Debug;
use std::future::Future;

use cmp_crds::conditions::set_condition;
use cmp_crds::organization::OrganizationStatus;
use cmp_crds::project::ProjectStatus;
use cmp_crds::{Organization, Project};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Result;
use crate::status::{self, condition, types};

/// A kind whose status carries conditions the operator writes.
pub trait WithStatus: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug {
    /// The status type.
    type Status: Clone + Default + Serialize + PartialEq;
    /// The current status.
    fn current(&self) -> Option<&Self::Status>;
    /// The conditions of a status.
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    /// The API for objects of this kind where `self` lives.
    fn api(&self, client: kube::Client) -> Api<Self>;
}

impl WithStatus for Organization {
    type Status = OrganizationStatus;
    fn current(&self) -> Option<&OrganizationStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut OrganizationStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

impl WithStatus for Project {
    type Status = ProjectStatus;
    fn current(&self) -> Option<&ProjectStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut ProjectStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

/// Writes `next` when it differs from the object's status, and publishes an
/// Event when the `Ready` condition's status or reason changed.
pub async fn write_status<K: WithStatus>(object: &K, ctx: &Context, mut next: K::Status) -> Result<()> {
    let mut current = object.current().cloned().unwrap_or_default();
    let before = status::state(K::conditions(&mut current), types::READY);
    let after = status::state(K::conditions(&mut next), types::READY);
    let api = object.api(ctx.client.clone());
    ctx.applier.apply_status(&api, &object.name_any(), object.current(), &next).await?;
    if before != after
        && let Some(ready) = cmp_crds::conditions::find(K::conditions(&mut next), types::READY)
    {
        ctx.publish(object, ready.status != "True", &ready.reason, ready.message.clone()).await;
    }
    Ok(())
}

/// Runs a reconcile. On success the object's backoff is reset; on failure
/// the error is written to its `Ready` condition (reason and message) before
/// it is returned for the error policy to retry.
pub async fn converge_or_report<K: WithStatus>(
    object: &K,
    ctx: &Context,
    key: &str,
    converge: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    match converge.await {
        Ok(action) => {
            ctx.backoff.succeeded(key);
            Ok(action)
        }
        Err(error) => {
            let mut next = object.current().cloned().unwrap_or_default();
            let failed = condition(types::READY, false, error.reason(), error.to_string());
            set_condition(K::conditions(&mut next), failed, object.meta().generation, status::now());
            write_status(object, ctx, next).await?;
            Err(error)
        }
    }
}

/// Reports that `namespace` is being deleted, in `condition_type` and in
/// `Ready`, and asks to look again shortly: once the namespace controller
/// has removed it, the reconciler creates it afresh.
pub async fn namespace_terminating<K: WithStatus>(
    object: &K,
    ctx: &Context,
    mut next: K::Status,
    condition_type: &str,
    namespace: &str,
) -> Result<Action> {
    let message = format!("namespace {namespace} is being deleted; it is recreated once it is gone");
    let generation = object.meta().generation;
    for type_ in [condition_type, types::READY] {
        let c = condition(type_, false, "NamespaceTerminating", message.clone());
        set_condition(K::conditions(&mut next), c, generation, status::now());
    }
    write_status(object, ctx, next).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(5)))
}

/// Reads the steering annotations and sets the `Paused` condition. When the
/// object is paused, writes that status and returns `None` (the caller stops
/// there); otherwise returns the status to build on and the requests.
pub async fn unless_paused<K: WithStatus>(object: &K, ctx: &Context) -> Result<Option<(K::Status, status::Requests)>> {
    let requests = status::requests(object.annotations().into());
    let mut next = object.current().cloned().unwrap_or_default();
    status::set_paused(K::conditions(&mut next), requests.paused, object.meta().generation);
    if requests.paused {
        write_status(object, ctx, next).await?;
        return Ok(None);
    }
    Ok(Some((next, requests)))
}
