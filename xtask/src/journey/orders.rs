//! Saleor orders of the journey's buyers, shaped as the CMP app's
//! subscription queries select them (see `examples/saleor/`), and delivered
//! signed by the Saleor stand-in.

use std::time::Duration;

use anyhow::{Context, bail};
use cmp_testenv::saleor::SaleorStandIn;
use serde_json::{Value, json};

/// The webhook routes and `Saleor-Event` names the journey delivers.
pub const PAID: (&str, &str) = ("order-fully-paid", "order_fully_paid");
pub const CANCELLED: (&str, &str) = ("order-cancelled", "order_cancelled");

/// A buyer with a Saleor account, unique to one journey run.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub email: String,
    pub user_id: String,
}

impl Buyer {
    /// Buyer `who` of journey `run`: `<who>.<run>@example.com`.
    pub fn new(run: &str, who: &str) -> Self {
        Self { email: format!("{who}.{run}@example.com"), user_id: base64(&format!("User:{run}-{who}")) }
    }
}

/// One order: its id, and its lines as (SKU, quantity).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub number: String,
    pub buyer: Buyer,
    pub lines: Vec<(String, i64)>,
}

impl Order {
    /// Order `number` of journey `run`, for `buyer`.
    pub fn new(run: &str, number: u32, buyer: &Buyer, lines: &[(&str, i64)]) -> Self {
        Self {
            id: base64(&format!("Order:{run}-{number}")),
            number: number.to_string(),
            buyer: buyer.clone(),
            lines: lines.iter().map(|(sku, quantity)| (sku.to_string(), *quantity)).collect(),
        }
    }

    /// The payload Saleor sends, as the app's queries select it: the event's
    /// `__typename`, and the order paid in full (status UNFULFILLED) or, with
    /// `cancelled`, cancelled (status CANCELED).
    pub fn payload(&self, cancelled: bool) -> Vec<u8> {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .enumerate()
            .map(|(index, (sku, quantity))| {
                json!({"id": base64(&format!("OrderLine:{}-{index}", self.id)), "quantity": quantity,
                       "productName": sku, "productSku": sku,
                       "variant": {"id": base64(&format!("ProductVariant:{sku}")), "sku": sku}})
            })
            .collect();
        let mut order = json!({
            "id": self.id, "number": self.number, "userEmail": self.buyer.email,
            "user": {"id": self.buyer.user_id, "email": self.buyer.email},
            "channel": {"slug": "default-channel"}, "chargeStatus": "FULL", "status": "UNFULFILLED",
            "total": {"gross": {"amount": 0.0, "currency": "USD"}}, "metadata": [], "lines": lines,
            "fulfillments": [], "grantedRefunds": [],
        });
        let typename = if cancelled {
            order["status"] = json!("CANCELED");
            "OrderCancelled"
        } else {
            "OrderFullyPaid"
        };
        json!({"__typename": typename, "order": order}).to_string().into_bytes()
    }
}

/// What the webhook answered a delivery: the buyer's Organization and the order's Instances.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub organization: String,
    pub instances: Vec<String>,
    pub answer: Value,
}

/// Delivers `order` to the webhook at `webhook` (its base URL) as `event`,
/// signed by `store`; retried while the webhook is not answering yet.
pub async fn deliver(
    http: &reqwest::Client,
    store: &SaleorStandIn,
    webhook: &str,
    (route, event): (&str, &str),
    order: &Order,
    cancelled: bool,
) -> anyhow::Result<Delivered> {
    let url = format!("{webhook}/saleor/webhooks/{route}");
    let body = order.payload(cancelled);
    let mut last = String::new();
    for _ in 0..20 {
        match store.deliver(http, &url, event, &body).await {
            Ok((200, answer)) => {
                let organization = answer["organization"]
                    .as_str()
                    .with_context(|| format!("the webhook's answer names no organization: {answer}"))?
                    .to_string();
                let instances =
                    answer["instances"].as_array().into_iter().flatten().filter_map(|i| i.as_str()).map(str::to_string);
                return Ok(Delivered { organization, instances: instances.collect(), answer });
            }
            Ok((status, answer)) => bail!("the webhook answered order {} with {status}: {answer}", order.number),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("the webhook at {url} did not answer order {}: {last}", order.number)
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_as_the_recorded_shape_and_names_differ_per_run() {
        let buyer = Buyer::new("run1", "ada");
        let order = Order::new("run1", 7, &buyer, &[("ECHO-PRO", 1), ("CREDITS-1000", 2)]);
        let paid: Value = serde_json::from_slice(&order.payload(false)).expect("JSON");
        assert_eq!(paid["order"]["user"]["email"], "ada.run1@example.com");
        assert_eq!(paid["order"]["lines"][1]["variant"]["sku"], "CREDITS-1000");
        assert_eq!(paid["order"]["lines"][1]["quantity"], 2);
        assert_eq!(
            (paid["__typename"].as_str(), paid["order"]["status"].as_str()),
            (Some("OrderFullyPaid"), Some("UNFULFILLED"))
        );
        let cancelled: Value = serde_json::from_slice(&order.payload(true)).expect("JSON");
        assert_eq!(
            (cancelled["__typename"].as_str(), cancelled["order"]["status"].as_str()),
            (Some("OrderCancelled"), Some("CANCELED"))
        );
        assert_eq!(cancelled["order"]["id"], paid["order"]["id"], "a cancellation names the same order");
        let other = Order::new("run2", 7, &Buyer::new("run2", "ada"), &[("ECHO-PRO", 1)]);
        assert_ne!(other.id, order.id);
        assert_ne!(other.buyer.user_id, buyer.user_id);
    }
}
