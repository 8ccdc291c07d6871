//! An Instance's API keys through the buyer API, asked as the caller the
//! same way `kubectl cmp keys` asks ([`cmp_crds::key_requests`]), so a key
//! made by one is rotated or revoked by the other.
//!
//! - `GET .../instances/{instance}/keys`: each key with its state
//!   (`issuing`, `active`, `expired`, `revoked`, or `withdrawing` once
//!   removed), public id and times. Never a plaintext.
//! - `POST .../instances/{instance}/keys` with `{"name": "<name>"}`: adds the
//!   key, waits for the operator to issue it, and answers 201 with the
//!   plaintext in `key`. This answer, and a rotation's, are the only times the
//!   buyer API shows a plaintext. (The operator's Secret in the control
//!   namespace keeps it for the Organization's developers and admins with
//!   kubectl, as before; with the Vault store, `key` is null and `keptIn`
//!   says where it is.)
//! - `POST .../keys/{key}/rotate`: the old key stops working, a new one is
//!   issued under the same name and shown (201).
//! - `POST .../keys/{key}/revoke`: the gateway refuses the key as soon as it
//!   sees the change (200).
//!
//! Keys are issued by the operator, asynchronously. When it has not issued
//! one within [`ISSUE_WAIT`], the answer is 202 with the key's state: it will
//! be issued, but the buyer API will not show it; rotate it to get one shown.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cmp_crds::Instance;
use cmp_crds::instance::{ApiKeySpec, ApiKeyStatus, SecretStore};
use cmp_crds::key_requests::{IssuedKey, KeyRequestError, KeyRequests};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};

use super::Buyer;
use crate::refusal::{Code, Refusal};

/// How long a create or rotate waits for the operator to issue the key.
pub const ISSUE_WAIT: Duration = Duration::from_secs(20);

/// The name in the buyer API's field managers: `cmp-buyer-api-key-<name>`.
const CLIENT_NAME: &str = "cmp-buyer-api";

/// What was asked of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add it.
    Create,
    /// Replace it.
    Rotate,
    /// Revoke it.
    Revoke,
}

/// The key name a create's body asks for: `{"name": "<DNS label>"}`.
pub async fn requested_name(body: axum::body::Body) -> Result<String, Refusal> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create {
        name: String,
    }
    let create: Create = crate::refusal::small_json_body(body, r#"{"name": "<key name>"}"#).await?;
    key_name(&create.name)?;
    Ok(create.name)
}

fn key_name(name: &str) -> Result<(), Refusal> {
    match cmp_crds::names::is_dns_label(name) {
        true => Ok(()),
        false => Err(Refusal::new(
            Code::MalformedRequest,
            format!(
                "{name:?} is not a key name: use a DNS label (lower-case letters, digits and '-', at most 63), such as \"production\""
            ),
        )),
    }
}

/// `GET .../keys`: the Instance's keys as the caller may read them.
pub async fn list(buyer: &Buyer, instance: &str) -> Result<Response, Refusal> {
    let what = format!("reading Instance {instance} of Organization {}", buyer.organization);
    let found = Api::<Instance>::namespaced(buyer.client.clone(), &buyer.namespace())
        .get(instance)
        .await
        .map_err(buyer.refusal(&what))?;
    let keys = shown_keys(&found, Timestamp::now());
    Ok((StatusCode::OK, axum::Json(json!({"organization": buyer.organization, "instance": instance, "keys": keys})))
        .into_response())
}

/// Each key of the Instance with its state at `now` (pure): the spec's, then those only status still lists.
pub fn shown_keys(instance: &Instance, now: Timestamp) -> Vec<Value> {
    let issued = instance.status.as_ref().map(|s| s.api_keys.as_slice()).unwrap_or_default();
    let in_spec = instance.spec.api_keys.iter().map(|spec| (spec.name.as_str(), Some(spec)));
    let withdrawn = issued.iter().filter(|s| !instance.spec.api_keys.iter().any(|k| k.name == s.name));
    in_spec
        .chain(withdrawn.map(|s| (s.name.as_str(), None)))
        .map(|(name, spec)| {
            let status = issued.iter().find(|s| s.name == name);
            json!({
                "name": name,
                "state": state(spec, status, now),
                "publicId": status.map(|s| s.public_id.clone()),
                "createdAt": status.map(|s| s.created_at.0.to_string()),
                "expiresAt": status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0.to_string()),
            })
        })
        .collect()
}

/// A key's state (pure): `withdrawing` (out of the spec, still in status), `revoked`, `issuing`, `expired`, `active`.
pub fn state(spec: Option<&ApiKeySpec>, status: Option<&ApiKeyStatus>, now: Timestamp) -> &'static str {
    let expires = status.and_then(|s| s.expires_at.as_ref()).or(spec.and_then(|s| s.expires_at.as_ref()));
    match (spec, status) {
        (None, _) => "withdrawing",
        (Some(spec), _) if spec.revoked => "revoked",
        (Some(_), None) => "issuing",
        _ if expires.is_some_and(|t| t.0 <= now) => "expired",
        _ => "active",
    }
}

/// Creates, rotates or revokes key `name` of `instance`, as the caller.
pub async fn change(buyer: &Buyer, instance: &str, name: &str, change: Change) -> Result<Response, Refusal> {
    key_name(name)?;
    let requests = KeyRequests::new(buyer.client.clone(), &buyer.namespace(), CLIENT_NAME, ISSUE_WAIT);
    let verb = match change {
        Change::Create => "creating",
        Change::Rotate => "rotating",
        Change::Revoke => "revoking",
    };
    let what = format!("{verb} key {name} of Instance {instance}");
    let issued = match change {
        Change::Create => requests.create(instance, name).await,
        Change::Rotate => requests.rotate(instance, name).await,
        Change::Revoke => {
            requests.revoke(instance, name).await.map_err(|e| refusal(buyer, &what, e))?;
            tracing::info!(organization = %buyer.organization, instance, key = name, user = %buyer.caller.username, "a buyer revoked a key");
            let answer = json!({"name": name, "instance": instance, "state": "revoked"});
            return Ok((StatusCode::OK, axum::Json(answer)).into_response());
        }
    };
    match issued {
        Ok(issued) => {
            tracing::info!(organization = %buyer.organization, instance, key = name, user = %buyer.caller.username, public_id = %issued.status.public_id, "a buyer was issued a key");
            Ok((StatusCode::CREATED, axum::Json(shown_issued(instance, &issued))).into_response())
        }
        Err(e @ (KeyRequestError::NotYet { .. } | KeyRequestError::NotWithdrawn { .. })) => {
            let state = if matches!(e, KeyRequestError::NotYet { .. }) { "issuing" } else { "withdrawing" };
            let message = format!("{e}. The buyer API shows a key only in the answer that issues it: rotate it then");
            let answer = json!({"name": name, "instance": instance, "state": state, "message": message});
            Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
        }
        Err(e) => Err(refusal(buyer, &what, e)),
    }
}

/// A newly issued key as the buyer API shows it, once (pure).
pub fn shown_issued(instance: &str, issued: &IssuedKey) -> Value {
    let status = &issued.status;
    let kept_in = match status.secret.store {
        SecretStore::Secret => Value::Null,
        _ => json!({"vaultPath": status.secret.name, "field": status.secret.key}),
    };
    json!({
        "name": status.name,
        "instance": instance,
        "state": "active",
        "publicId": status.public_id,
        "key": issued.plaintext,
        "keptIn": kept_in,
        "createdAt": status.created_at.0.to_string(),
        "expiresAt": status.expires_at.as_ref().map(|t| t.0.to_string()),
    })
}

/// A key request's failure as the buyer is told it.
fn refusal(buyer: &Buyer, what: &str, error: KeyRequestError) -> Refusal {
    match error {
        KeyRequestError::Api(e) => crate::as_caller::refusal(e, &buyer.organization, what),
        KeyRequestError::NoInstance { instance, .. } => {
            Refusal::new(Code::NotFound, format!("no Instance {instance} in Organization {}", buyer.organization))
        }
        e @ KeyRequestError::NoKey { .. } => Refusal::new(Code::NotFound, e.to_string()),
        e => Refusal::new(Code::Conflict, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(spec_keys: Value, status_keys: Value) -> Instance {
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme"},
            "spec": {"project": "default", "offering": "o", "version": "1", "plan": "p", "apiKeys": spec_keys},
            "status": {"apiKeys": status_keys},
        }))
        .expect("an Instance")
    }

    fn issued(name: &str, expires: Option<&str>) -> Value {
        let mut key = json!({"name": name, "publicId": "AAAAAAAAAAAA", "hash": format!("sha256:{}", "0".repeat(64)),
                             "createdAt": "2026-01-01T00:00:00Z",
                             "secret": {"store": "Secret", "name": format!("bot-key-{name}"), "key": "key"}});
        if let Some(at) = expires {
            key["expiresAt"] = json!(at);
        }
        key
    }

    #[test]
    fn each_key_shows_its_state_and_never_a_plaintext() {
        let bot = instance(
            json!([{"name": "live"}, {"name": "new"}, {"name": "old", "revoked": true}, {"name": "past"}]),
            json!([
                issued("live", None),
                issued("old", None),
                issued("past", Some("2026-01-02T00:00:00Z")),
                issued("gone", None)
            ]),
        );
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("a time");
        let keys = shown_keys(&bot, now);
        let states: Vec<(&str, &str)> =
            keys.iter().map(|k| (k["name"].as_str().unwrap_or(""), k["state"].as_str().unwrap_or(""))).collect();
        assert_eq!(
            states,
            [("live", "active"), ("new", "issuing"), ("old", "revoked"), ("past", "expired"), ("gone", "withdrawing")]
        );
        assert_eq!(keys[1]["publicId"], Value::Null, "not issued yet");
        assert!(keys.iter().all(|k| k.get("key").is_none()), "no plaintext in a listing");
    }

    #[test]
    fn a_key_kept_in_vault_is_answered_with_where_it_is_and_no_plaintext() {
        let mut status: ApiKeyStatus = serde_json::from_value(issued("web", None)).expect("a status");
        status.secret.store = SecretStore::Vault;
        status.secret.name = "cmp/acme/instances/bot/keys/web".into();
        let shown = shown_issued("bot", &IssuedKey { status: status.clone(), plaintext: None });
        assert_eq!(shown["key"], Value::Null);
        assert_eq!(shown["keptIn"], json!({"vaultPath": "cmp/acme/instances/bot/keys/web", "field": "key"}));
        status.secret.store = SecretStore::Secret;
        let shown = shown_issued("bot", &IssuedKey { status, plaintext: Some("cmp_x".into()) });
        assert_eq!((shown["key"].clone(), shown["keptIn"].clone()), (json!("cmp_x"), Value::Null));
    }

    #[test]
    fn key_names_are_dns_labels() {
        assert!(key_name("production").is_ok());
        for bad in ["", "Prod", "a_b", "<script>", &"a".repeat(64)] {
            assert_eq!(key_name(bad).expect_err("refused").code, Code::MalformedRequest, "{bad:?}");
        }
    }
}
