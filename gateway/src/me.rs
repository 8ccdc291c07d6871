//! `GET /v1/me`: the buyer API's first call. It takes an OIDC token of the
//! trusted issuer (never an API key: a key speaks for an Instance, not a
//! person) and answers who the caller is and which Organizations list them,
//! with their role. A caller whom no Organization lists signs up
//! ([`crate::signup`], when `--signup` is on) and is answered 201 with the
//! new Organization; without sign-up they get an empty list.
//!
//! The rest of the buyer API, on one Organization, is [`crate::buyer`].

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_crds::Organization;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::buyer::authenticate;
use crate::oidc::Caller;
use crate::refusal::Refusal;
use crate::state::Gateway;

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
