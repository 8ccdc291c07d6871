//! `GET /v1/me/organizations/{organization}/wallet`: the Organization's
//! credits, read as the caller: the balance, each grant with what is left of
//! it, the reversals, and each gateway replica's meter with its live lease
//! (the same view as `kubectl cmp wallet`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cmp_crds::Wallet;
use cmp_crds::names::wallet_name;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

use super::Buyer;
use crate::refusal::Refusal;

/// The Wallet, as the caller may read it.
pub async fn show(buyer: &Buyer) -> Result<Response, Refusal> {
    let what = format!("reading the Wallet of Organization {}", buyer.organization);
    let wallet = Api::<Wallet>::namespaced(buyer.client.clone(), &buyer.namespace())
        .get(&wallet_name(&buyer.organization))
        .await
        .map_err(buyer.refusal(&what))?;
    let view = cmp_crds::wallet_view::view(&buyer.organization, &wallet, Timestamp::now());
    Ok((StatusCode::OK, axum::Json(view)).into_response())
}
