//! Brings a store's webhooks of this app up to date with the manifest, with
//! the app's own token.
//!
//! Saleor re-reads a manifest only when an app is installed again, so a
//! store that installed an earlier version keeps the subscription queries of
//! that version, whose bodies do not say the event or the order's state
//! ([`crate::order_state`] answers them 503). When such a body arrives, the
//! webhook reads the app's webhooks (`query { app { webhooks } }`), updates
//! each of its routes whose query or events differ (`webhookUpdate`) and
//! creates those the manifest lists and the store lacks (`webhookCreate`).
//! Saleor 3.21 lets an app do both for its own webhooks (`AUTHENTICATED_APP`;
//! `webhookUpdate` finds only the calling app's). Deliveries Saleor made
//! before keep their old bodies; later events come in the new shape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::manifest::{WEBHOOKS_PATH, subscription_query, webhook_name, webhook_url};
use crate::payload::OrderEvent;
use crate::store_api::{self, StoreApiError};

/// The app's webhooks, as the store lists them.
pub const WEBHOOKS_QUERY: &str =
    "query { app { id webhooks { id name isActive targetUrl asyncEvents { eventType } subscriptionQuery } } }";
/// Updates one webhook's query and events.
pub const UPDATE_MUTATION: &str = "mutation($id: ID!, $input: WebhookUpdateInput!) { webhookUpdate(id: $id, input: $input) { errors { field message code } webhook { id } } }";
/// Creates one webhook of the calling app.
pub const CREATE_MUTATION: &str = "mutation($input: WebhookCreateInput!) { webhookCreate(input: $input) { errors { field message code } webhook { id } } }";

/// One of the app's webhooks in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreWebhook {
    /// Its global id.
    pub id: String,
    /// Where it delivers.
    pub target_url: String,
    /// Its async events (upper case, as the manifest names them).
    pub async_events: Vec<String>,
    /// Its subscription query.
    pub query: Option<String>,
}

/// What a sync changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The webhook `id` of `event`'s route gets the current query and events.
    Update {
        /// The store's webhook.
        id: String,
        /// The event its route is for.
        event: OrderEvent,
    },
    /// `event` has no webhook of this app: one is created.
    Create {
        /// The event.
        event: OrderEvent,
    },
}

/// What must change for `store`'s webhooks to be the manifest's: a webhook
/// is the one of an event's route when its target URL ends in that route
/// (the public URL may have changed since the install).
pub fn changes(store: &[StoreWebhook]) -> Vec<Change> {
    OrderEvent::ALL
        .into_iter()
        .filter_map(|event| {
            let route = format!("{WEBHOOKS_PATH}/{}", event.route_segment());
            match store.iter().find(|w| w.target_url.trim_end_matches('/').ends_with(&route)) {
                None => Some(Change::Create { event }),
                Some(webhook) => {
                    let current = webhook.query.as_deref() == Some(subscription_query(event).as_str())
                        && webhook.async_events == [event.manifest_name()];
                    (!current).then(|| Change::Update { id: webhook.id.clone(), event })
                }
            }
        })
        .collect()
}

/// The app's webhooks in a `WEBHOOKS_QUERY` answer.
fn store_webhooks(data: &Value) -> Vec<StoreWebhook> {
    data["app"]["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            Some(StoreWebhook {
                id: w["id"].as_str()?.to_string(),
                target_url: w["targetUrl"].as_str().unwrap_or_default().to_string(),
                async_events: w["asyncEvents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["eventType"].as_str().map(str::to_string))
                    .collect(),
                query: w["subscriptionQuery"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// Brings the app's webhooks in the store at `api_url` up to date (the app
/// reachable at `public_url`), as the app holding `token`; answers what changed.
pub async fn sync(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    public_url: &str,
) -> Result<Vec<Change>, StoreApiError> {
    let data = store_api::graphql(http, api_url, token, WEBHOOKS_QUERY, json!({})).await?;
    let planned = changes(&store_webhooks(&data));
    for change in &planned {
        let (mutation, variables, field) = match change {
            Change::Update { id, event } => (
                UPDATE_MUTATION,
                json!({"id": id, "input": {"query": subscription_query(*event), "asyncEvents": [event.manifest_name()]}}),
                "webhookUpdate",
            ),
            Change::Create { event } => (
                CREATE_MUTATION,
                json!({"input": {"name": webhook_name(*event), "targetUrl": webhook_url(public_url, *event),
                    "asyncEvents": [event.manifest_name()], "query": subscription_query(*event), "isActive": true}}),
                "webhookCreate",
            ),
        };
        let answer = store_api::graphql(http, api_url, token, mutation, variables).await?;
        let errors: Vec<String> = answer[field]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{}: {}", e["field"].as_str().unwrap_or("-"), e["message"].as_str().unwrap_or("")))
            .collect();
        if !errors.is_empty() {
            return Err(StoreApiError::Rejected {
                api_url: api_url.into(),
                reason: format!("{field}: {}", errors.join("; ")),
            });
        }
    }
    Ok(planned)
}

/// Lets a sync per store start at most once per interval.
pub struct SyncGate {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl SyncGate {
    /// At most one sync per store per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last: Mutex::default() }
    }

    /// Whether a sync of `api_url` may start now (and, if so, records that it did).
    pub fn try_start(&self, api_url: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get(api_url) {
            Some(at) if at.elapsed() < self.every => false,
            _ => {
                last.insert(api_url.to_string(), Instant::now());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, event: OrderEvent, query: &str) -> StoreWebhook {
        StoreWebhook {
            id: id.into(),
            target_url: format!("https://old.example.com/saleor/webhooks/{}", event.route_segment()),
            async_events: vec![event.manifest_name()],
            query: Some(query.into()),
        }
    }

    #[test]
    fn an_older_install_gets_its_three_webhooks_updated_and_the_three_missing_created() {
        let old = [
            hook("W1", OrderEvent::Created, "subscription { event { ... on OrderCreated { order { id } } } }"),
            hook("W2", OrderEvent::FullyPaid, "subscription { event { ... on OrderFullyPaid { order { id } } } }"),
            hook("W3", OrderEvent::Cancelled, "subscription { event { ... on OrderCancelled { order { id } } } }"),
        ];
        assert_eq!(
            changes(&old),
            vec![
                Change::Update { id: "W1".into(), event: OrderEvent::Created },
                Change::Create { event: OrderEvent::Confirmed },
                Change::Update { id: "W2".into(), event: OrderEvent::FullyPaid },
                Change::Update { id: "W3".into(), event: OrderEvent::Cancelled },
                Change::Create { event: OrderEvent::Refunded },
                Change::Create { event: OrderEvent::FullyRefunded },
            ]
        );
        let current: Vec<_> = OrderEvent::ALL
            .into_iter()
            .enumerate()
            .map(|(i, e)| hook(&format!("N{i}"), e, &subscription_query(e)))
            .collect();
        assert!(changes(&current).is_empty(), "an up-to-date store changes nothing");
        let mut wrong_events = current.clone();
        wrong_events[2].async_events.push("ORDER_UPDATED".into());
        assert_eq!(changes(&wrong_events), vec![Change::Update { id: "N2".into(), event: OrderEvent::FullyPaid }]);
    }

    #[test]
    fn a_store_is_synced_at_most_once_per_interval() {
        let gate = SyncGate::new(Duration::from_secs(600));
        assert!(gate.try_start("https://a/graphql/"));
        assert!(!gate.try_start("https://a/graphql/"));
        assert!(gate.try_start("https://b/graphql/"), "per store");
    }
}
