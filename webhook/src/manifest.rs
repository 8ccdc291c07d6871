//! The Saleor app manifest, and the registration that stores the app token.
//!
//! An admin installs the app from the Saleor dashboard with the manifest's
//! URL. Saleor fetches the manifest, then POSTs `{"auth_token": ...}` to its
//! `tokenTargetUrl` with the `Saleor-Api-Url` header; once the store
//! confirms the token (`query { app { id } }`, [`crate::store_api`]) it is
//! kept in a Secret (one per store) in the webhook's namespace, and read back
//! only to bring an older install's webhooks up to date
//! ([`crate::webhook_sync`]).

use std::collections::BTreeMap;

use cmp_crds::names::{MANAGED_BY_LABEL, PROVISIONER_MANAGER, SALEOR_API_URL_ANNOTATION};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::payload::OrderEvent;

/// The app's id in Saleor.
pub const APP_ID: &str = "dev.gsv.cmp";
/// Where the manifest is served.
pub const MANIFEST_PATH: &str = "/saleor/manifest";
/// Where Saleor posts the app token on install.
pub const REGISTER_PATH: &str = "/saleor/register";
/// Where the webhooks are delivered: `/saleor/webhooks/<event>`.
pub const WEBHOOKS_PATH: &str = "/saleor/webhooks";

/// Where the app's page (the manifest's `appUrl`) is served.
pub const APP_PAGE_PATH: &str = "/saleor/app";
/// The permissions the app asks for: orders to read and act on them, products
/// so that the catalog can be kept in step with the Offerings.
pub const PERMISSIONS: [&str; 2] = ["MANAGE_ORDERS", "MANAGE_PRODUCTS"];

/// The order fields every subscription selects: what [`crate::payload`] reads.
/// `status` and `chargeStatus` say what the order is; the refunded
/// fulfillments and granted refunds say which lines a refund covered.
pub const ORDER_FRAGMENT: &str = "fragment CmpOrder on Order { id number status chargeStatus userEmail user { id email } channel { slug } lines { id quantity productSku variant { id sku } } fulfillments { id status lines { id quantity orderLine { id } } } grantedRefunds { id status lines { id quantity orderLine { id } } } }";

/// The subscription query of `event`: the event's `__typename` (signed with
/// the body, so that a body says which event it is) and the order's fields,
/// at the top level.
pub fn subscription_query(event: OrderEvent) -> String {
    format!(
        "subscription {{ event {{ __typename ... on {} {{ order {{ ...CmpOrder }} }} }} }} {ORDER_FRAGMENT}",
        event.graphql_type()
    )
}

/// The name of `event`'s webhook in the store.
pub fn webhook_name(event: OrderEvent) -> String {
    format!("CMP {}", event.header_value().replace('_', " "))
}

/// The URL of `event`'s webhook under `public_url`.
pub fn webhook_url(public_url: &str, event: OrderEvent) -> String {
    format!("{}{WEBHOOKS_PATH}/{}", public_url.trim_end_matches('/'), event.route_segment())
}

/// The app manifest for a webhook reachable at `public_url`.
pub fn manifest(public_url: &str) -> Value {
    let base = public_url.trim_end_matches('/');
    let webhooks: Vec<Value> = OrderEvent::ALL
        .iter()
        .map(|event| {
            json!({
                "name": webhook_name(*event),
                "asyncEvents": [event.manifest_name()],
                "query": subscription_query(*event),
                "targetUrl": webhook_url(base, *event),
                "isActive": true,
            })
        })
        .collect();
    json!({
        "id": APP_ID,
        "version": env!("CARGO_PKG_VERSION"),
        "name": "CMP",
        "about": "Turns paid orders of AI agents into running, isolated agent instances with API keys and prepaid credits.",
        "author": "CMP",
        "permissions": PERMISSIONS,
        "appUrl": format!("{base}{APP_PAGE_PATH}"),
        "tokenTargetUrl": format!("{base}{REGISTER_PATH}"),
        "webhooks": webhooks,
    })
}

/// The name of the Secret holding the app token of the store at `api_url`.
pub fn token_secret_name(api_url: &str) -> String {
    format!("saleor-app-token-{}", &hex::encode(Sha256::digest(api_url.as_bytes()))[..12])
}

/// The Secret that keeps the app token of the store at `api_url`.
pub fn token_secret(namespace: &str, api_url: &str, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(api_url)),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.into(), PROVISIONER_MANAGER.into())])),
            annotations: Some(BTreeMap::from([(SALEOR_API_URL_ANNOTATION.into(), api_url.into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("apiUrl".into(), ByteString(api_url.as_bytes().to_vec())),
            ("authToken".into(), ByteString(token.as_bytes().to_vec())),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The app token kept for the store at `api_url`, if the store registered one.
pub async fn stored_token(
    client: &kube::Client,
    namespace: &str,
    api_url: &str,
) -> Result<Option<String>, kube::Error> {
    let secrets = kube::Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(&token_secret_name(api_url)).await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove("authToken"))
        .and_then(|token| String::from_utf8(token.0).ok())
        .filter(|token| !token.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_the_permissions_the_page_and_a_webhook_per_event() {
        let m = manifest("https://cmp.example.com/");
        assert_eq!(m["permissions"], json!(["MANAGE_ORDERS", "MANAGE_PRODUCTS"]));
        assert_eq!(m["tokenTargetUrl"], "https://cmp.example.com/saleor/register");
        assert_eq!(m["appUrl"], "https://cmp.example.com/saleor/app");
        let hooks = m["webhooks"].as_array().expect("a list");
        let events: Vec<_> = hooks.iter().map(|h| h["asyncEvents"][0].as_str().unwrap_or_default()).collect();
        assert_eq!(
            events,
            [
                "ORDER_CREATED",
                "ORDER_CONFIRMED",
                "ORDER_FULLY_PAID",
                "ORDER_CANCELLED",
                "ORDER_REFUNDED",
                "ORDER_FULLY_REFUNDED"
            ]
        );
        assert_eq!(hooks[2]["targetUrl"], "https://cmp.example.com/saleor/webhooks/order-fully-paid");
        let query = hooks[2]["query"].as_str().expect("a query");
        assert!(
            query.starts_with("subscription { event { __typename ... on OrderFullyPaid { order { ...CmpOrder } } } }")
        );
        for field in [
            "id",
            "number",
            "status",
            "chargeStatus",
            "userEmail",
            "user { id email }",
            "productSku",
            "variant { id sku }",
            "fulfillments { id status lines { id quantity orderLine { id } } }",
            "grantedRefunds { id status lines { id quantity orderLine { id } } }",
        ] {
            assert!(query.contains(field), "{field} is selected: {query}");
        }
    }
}
