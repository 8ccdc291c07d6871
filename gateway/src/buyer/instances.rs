//! `GET /v1/me/organizations/{organization}/instances`: the Organization's
//! Instances, listed as the caller.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cmp_crds::Instance;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::Buyer;
use crate::refusal::Refusal;

/// The Instances, as the caller may list them.
pub async fn list(buyer: &Buyer) -> Result<Response, Refusal> {
    let what = format!("listing the Instances of Organization {}", buyer.organization);
    let instances = Api::<Instance>::namespaced(buyer.client.clone(), &buyer.namespace())
        .list(&Default::default())
        .await
        .map_err(buyer.refusal(&what))?;
    let shown: Vec<Value> = instances.items.iter().map(|i| shown(&buyer.organization, i)).collect();
    Ok((StatusCode::OK, axum::Json(json!({"organization": buyer.organization, "instances": shown}))).into_response())
}

/// What a buyer sees of an Instance: what it runs, whether it is Ready (and why not), its keys' names and its route.
pub fn shown(organization: &str, instance: &Instance) -> Value {
    let name = instance.name_any();
    let ready = instance.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    json!({
        "name": name,
        "project": instance.spec.project,
        "offering": instance.spec.offering,
        "version": instance.spec.version,
        "plan": instance.spec.plan,
        "suspended": instance.spec.suspended,
        "ready": ready.is_some_and(|c| c.status == "True"),
        "reason": ready.map(|c| c.reason.clone()),
        "message": ready.map(|c| c.message.clone()),
        "apiKeys": instance.spec.api_keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
        "runs": format!("/v1/instances/{organization}/{name}/runs"),
    })
}
