//! The buyer API (`/v1/me/...`, `--buyer-api`): what a buyer does without
//! kubectl, with an OIDC token of the trusted issuer.
//!
//! Every request past `GET /v1/me` ([`crate::me`]) names an Organization,
//! and is handled in three steps:
//! 1. the caller is authenticated (an OIDC token, never an API key: a key
//!    speaks for an Instance, not a person);
//! 2. the Organization must list them (from the gateway's cache), else 403
//!    `wrong_tenant`, and nothing is asked of the API server;
//! 3. what they asked is asked of the API server as them
//!    ([`crate::as_caller`]), so the Organization's RBAC decides: a viewer
//!    reads, a developer or an admin also writes, and the gateway's own
//!    wider rights never act for a buyer.
//!
//! Routes: the Organization's Instances ([`instances`]), an Instance's API
//! keys ([`keys`]) and the Wallet ([`wallet`]).

pub mod instances;
pub mod keys;
pub mod wallet;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use k8s_openapi::jiff::Timestamp;

use crate::oidc::Caller;
use crate::refusal::{Code, Refusal};
use crate::routes::refused;
use crate::state::Gateway;

/// The buyer API's routes (each also answers 404 `not_found` when `--buyer-api` is off).
pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/me/organizations/{organization}/instances", get(serve_instances))
        .route("/v1/me/organizations/{organization}/wallet", get(serve_wallet))
        .route("/v1/me/organizations/{organization}/instances/{instance}/keys", get(list_keys).post(create_key))
        .route("/v1/me/organizations/{organization}/instances/{instance}/keys/{key}/{action}", post(change_key))
}

/// The caller a buyer API request speaks for: an OIDC token of the trusted issuer, never an API key.
pub async fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Caller, Refusal> {
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

/// A buyer API request on one of the caller's Organizations.
pub struct Buyer {
    /// Who asks.
    pub caller: Caller,
    /// The Organization the path names, which lists the caller.
    pub organization: String,
    /// A client that speaks as the caller.
    pub client: kube::Client,
}

impl Buyer {
    /// Steps 1 and 2: the caller, listed by `organization`; and a client speaking as them.
    pub async fn enter(gateway: &Gateway, organization: String, headers: &HeaderMap) -> Result<Self, Refusal> {
        let caller = authenticate(gateway, headers).await?;
        let client = gateway.buyer_api.as_ref().ok_or_else(|| {
            Refusal::new(Code::NotFound, "the buyer API is off (--buyer-api; chart gateway.buyerApi.enabled)")
        })?;
        if !cmp_crds::names::is_dns_label(&organization) {
            return Err(Refusal::new(Code::NotFound, format!("no Organization {organization:?}")));
        }
        // Only for an Organization that lists the caller is anything asked as them: the impersonated request is then
        // the API server's check on top of this one, never a wider right (a user name that happens to name a cluster
        // administrator reaches nothing of an Organization that does not list it).
        if !gateway.directory.organization(&organization).is_some_and(|o| caller.belongs_to(&o)) {
            return Err(Refusal::new(
                Code::WrongTenant,
                format!("Organization {organization} does not list you (or it does not exist)"),
            ));
        }
        let client = crate::as_caller::as_caller(client, &caller)?;
        Ok(Self { caller, organization, client })
    }

    /// The Organization's control namespace, where its Instances, keys and Wallet are.
    pub fn namespace(&self) -> String {
        cmp_crds::names::control_namespace(&self.organization)
    }

    /// The API server's refusal of `what`, as the caller is told it.
    pub fn refusal(&self, what: &str) -> impl Fn(kube::Error) -> Refusal + '_ {
        let what = what.to_string();
        move |error| crate::as_caller::refusal(error, &self.organization, &what)
    }
}

/// An Instance named in a path: a DNS label, else no such Instance. Checked after the caller is authenticated
/// and listed, so nobody else learns anything from it.
fn instance_name(name: &str) -> Result<(), Refusal> {
    match cmp_crds::names::is_dns_label(name) {
        true => Ok(()),
        false => Err(Refusal::new(Code::NotFound, format!("no Instance {name:?}"))),
    }
}

async fn serve_instances(
    State(gateway): State<Arc<Gateway>>,
    Path(organization): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = async { instances::list(&Buyer::enter(&gateway, organization, &headers).await?).await };
    answer.await.unwrap_or_else(refused)
}

async fn serve_wallet(
    State(gateway): State<Arc<Gateway>>,
    Path(organization): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = async { wallet::show(&Buyer::enter(&gateway, organization, &headers).await?).await };
    answer.await.unwrap_or_else(refused)
}

async fn list_keys(
    State(gateway): State<Arc<Gateway>>,
    Path((organization, instance)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let buyer = Buyer::enter(&gateway, organization, &headers).await?;
        instance_name(&instance)?;
        keys::list(&buyer, &instance).await
    };
    answer.await.unwrap_or_else(refused)
}

async fn create_key(
    State(gateway): State<Arc<Gateway>>,
    Path((organization, instance)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let answer = async {
        let buyer = Buyer::enter(&gateway, organization, &headers).await?;
        instance_name(&instance)?;
        let name = keys::requested_name(body).await?;
        keys::change(&buyer, &instance, &name, keys::Change::Create).await
    };
    answer.await.unwrap_or_else(refused)
}

/// `POST .../keys/{key}/rotate` and `.../keys/{key}/revoke`.
async fn change_key(
    State(gateway): State<Arc<Gateway>>,
    Path((organization, instance, key, action)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let buyer = Buyer::enter(&gateway, organization, &headers).await?;
        let change = match action.as_str() {
            "rotate" => keys::Change::Rotate,
            "revoke" => keys::Change::Revoke,
            _ => {
                return Err(Refusal::new(
                    Code::NotFound,
                    format!("no such route: a key is rotated or revoked, not {action:?}"),
                ));
            }
        };
        instance_name(&instance)?;
        keys::change(&buyer, &instance, &key, change).await
    };
    answer.await.unwrap_or_else(refused)
}
