//! `GET /v1/me`: the buyer API's first call. It takes an OIDC token of the
//! trusted issuer (never an API key: a key speaks for an Instance, not a
//! person) and answers who the caller is and which Organizations list them,
//! with their role. A caller whom no Organization lists signs up
//! ([`crate::signup`], when `--signup` is on) and is answered 201 with the
//! new Organization; without sign-up they get an empty list.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_crds::Organization;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::oidc::Caller;
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;

/// The caller and their Organizations, signing them up first when they have none.
pub async fn serve(gateway: Arc<Gateway>, headers: HeaderMap) -> Result<Response, Refusal> {
    gateway.ready()?;
    let oidc = gateway.oidc.as_ref().ok_or_else(|| {
        Refusal::new(Code::NotFound, "the buyer API is off: the gateway accepts no OIDC tokens (--oidc-issuer)")
    })?;
    let token = crate::authorize::presented_key(&headers)?;
    if token.starts_with(cmp_crds::apikey::PREFIX) {
        return Err(Refusal::new(
            Code::InvalidToken,
            "the buyer API takes an OIDC access token of the identity provider, not an Instance's API key",
        ));
    }
    let caller = oidc.authenticate(&token, Timestamp::now()).await?;
    let listed = gateway.directory.organizations_of(&caller);
    if !listed.is_empty() || gateway.signup.is_none() {
        let organizations: Vec<Value> = listed.iter().map(|o| shown(o, &caller)).collect();
        return Ok((StatusCode::OK, axum::Json(answer(&caller, organizations, false))).into_response());
    }
    let signup = gateway.signup.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "sign-up is off"))?;
    let created = signup.sign_up(&caller, &gateway.directory).await?;
    Ok((StatusCode::CREATED, axum::Json(answer(&caller, vec![shown(&created, &caller)], true))).into_response())
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
