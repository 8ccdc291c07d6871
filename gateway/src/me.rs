//! `GET /v1/me`: the buyer API's first call. It takes an OIDC token of the
//! trusted issuer (never an API key: a key speaks for an Instance, not a
//! person) and answers who the caller is and which Organizations list them,
//! with their role. A caller whom no Organization lists signs up
//! ([`crate::signup`], when `--signup` is on) and is answered 201 with the
//! new Organization; without sign-up they get an empty list.
//!
//! `GET /v1/me/organizations/{organization}/instances` reads as the caller
//! (`--buyer-api`): the API server, not the gateway, decides what they see.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_crds::{Instance, Organization};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::oidc::Caller;
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;

/// The caller a buyer API request speaks for: an OIDC token of the trusted issuer, never an API key.
async fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Caller, Refusal> {
    gateway.ready()?;
    let oidc = gateway.oidc.as_ref().ok_or_else(|| {
        Refusal::new(Code::NotFound, "the buyer API is off: the gateway accepts no OIDC tokens (--oidc-issuer)")
    })?;
    let token = crate::authorize::presented_key(headers)?;
    if token.starts_with(cmp_crds::apikey::PREFIX) {
        return Err(Refusal::new(
            Code::InvalidToken,
            "the buyer API takes an OIDC access token of the identity provider, not an Instance's API key",
        ));
    }
    oidc.authenticate(&token, Timestamp::now()).await
}

/// The caller and their Organizations, signing them up first when they have none.
pub async fn serve(gateway: Arc<Gateway>, headers: HeaderMap) -> Result<Response, Refusal> {
    let caller = authenticate(&gateway, &headers).await?;
    let listed = gateway.directory.organizations_of(&caller);
    match &gateway.signup {
        Some(signup) if listed.is_empty() => {
            let created = signup.sign_up(&caller, &gateway.directory).await?;
            let organizations = vec![shown(&created, &caller)];
            Ok((StatusCode::CREATED, axum::Json(answer(&caller, organizations, true))).into_response())
        }
        signup => {
            // A sign-up whose default Project was not made yet (the operator was slow) is finished here.
            if let Some(signup) = signup {
                signup.finish(&caller, &listed, &gateway.directory).await?;
            }
            let organizations: Vec<Value> = listed.iter().map(|o| shown(o, &caller)).collect();
            Ok((StatusCode::OK, axum::Json(answer(&caller, organizations, false))).into_response())
        }
    }
}

/// `GET /v1/me/organizations/{organization}/instances`: the Organization's Instances, read as the caller
/// ([`crate::as_caller`]), so the API server answers by the Organization's RBAC.
pub async fn instances(gateway: Arc<Gateway>, organization: String, headers: HeaderMap) -> Result<Response, Refusal> {
    let caller = authenticate(&gateway, &headers).await?;
    let client = gateway.buyer_reads.as_ref().ok_or_else(|| {
        Refusal::new(Code::NotFound, "the buyer API's reads are off (--buyer-api; chart gateway.buyerApi.enabled)")
    })?;
    if !cmp_crds::names::is_dns_label(&organization) {
        return Err(Refusal::new(Code::NotFound, format!("no Organization {organization:?}")));
    }
    // Only for an Organization that lists the caller is anything asked as them: the impersonated read is then the
    // API server's check on top of this one, never a wider right (a user name that happens to name a cluster
    // administrator reads nothing of an Organization that does not list it).
    if !gateway.directory.organization(&organization).is_some_and(|o| caller.belongs_to(&o)) {
        return Err(Refusal::new(
            Code::WrongTenant,
            format!("Organization {organization} does not list you (or it does not exist)"),
        ));
    }
    let instances: Vec<Instance> = crate::as_caller::AsCaller::new(client, &caller)?.list_in(&organization).await?;
    let shown: Vec<Value> = instances.iter().map(|i| shown_instance(&organization, i)).collect();
    Ok((StatusCode::OK, axum::Json(json!({"organization": organization, "instances": shown}))).into_response())
}

/// What a buyer sees of an Instance: what it runs, whether it is Ready (and why not), its keys' names and its route.
fn shown_instance(organization: &str, instance: &Instance) -> Value {
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

/// The answer: `{"user", "organizations": [...], "signedUp"}`.
fn answer(caller: &Caller, organizations: Vec<Value>, signed_up: bool) -> Value {
    json!({"user": caller.username, "organizations": organizations, "signedUp": signed_up})
}

/// What the caller sees of one of their Organizations.
fn shown(organization: &Organization, caller: &Caller) -> Value {
    let name = organization.name_any();
    json!({
        "name": name,
        "displayName": organization.spec.display_name,
        "role": caller.role_in(organization),
        "namespace": cmp_crds::names::control_namespace(&name),
        "suspended": organization.spec.suspended,
    })
}
