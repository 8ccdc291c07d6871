//! One Warning Event per order line that cannot be provisioned, or whose
//! Offering is not Ready (its Instance waits).
//!
//! Saleor delivers an order more than once (redeliveries, ORDER_CREATED
//! then ORDER_FULLY_PAID), and the webhook may run as several replicas and
//! restart: an Event whose name is derived from the order and the line is
//! created once, and every later attempt finds it (409) and adds nothing.
//! The Event regards the buyer's Organization; the API server keeps Events
//! of cluster-scoped objects in `default`.

use cmp_crds::Organization;
use cmp_crds::names::PROVISIONER_MANAGER;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::payload::{Order, OrderLine};

/// The namespace of Events about cluster-scoped objects.
pub const EVENT_NAMESPACE: &str = "default";
/// The reason of an Event about a line that cannot be provisioned.
pub const NOT_PROVISIONED: &str = "OrderLineNotProvisioned";
/// The reason of an Event about a line whose Offering is not Ready.
pub const OFFERING_NOT_READY: &str = "OrderLineOfferingNotReady";

/// The Event's name: the same for every delivery of the line and reason.
pub fn event_name(org: &str, order: &Order, line: &OrderLine, reason: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [order.id.as_str(), line.id.as_str(), reason] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    format!("{org}.order-line-{}", &hex::encode(hasher.finalize())[..16])
}

/// The Warning Event `reason` about `line` of `order`, regarding the buyer's Organization: `what` of the line.
pub fn line_event(
    order: &Order,
    line: &OrderLine,
    reason: &str,
    what: &str,
    org: &Organization,
    now: Timestamp,
) -> Event {
    let org_name = org.meta().name.clone().unwrap_or_default();
    let note = format!(
        "order {} line {} (SKU {}): {what}",
        order.number.as_deref().unwrap_or(&order.id),
        line.id,
        line.sku.as_deref().unwrap_or("none")
    );
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(&org_name, order, line, reason)),
            namespace: Some(EVENT_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some(reason.into()),
        action: Some("Provision".into()),
        note: Some(cmp_core::events::note(note)),
        regarding: Some(org.object_ref(&())),
        reporting_controller: Some(PROVISIONER_MANAGER.into()),
        reporting_instance: Some(std::env::var("POD_NAME").unwrap_or_else(|_| PROVISIONER_MANAGER.into())),
        ..Event::default()
    }
}

/// Creates `event` unless it exists.
pub async fn publish(client: &kube::Client, event: &Event) -> Result<(), kube::Error> {
    let api = Api::<Event>::namespaced(client.clone(), EVENT_NAMESPACE);
    let params = PostParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PostParams::default() };
    match api.create(&params, event).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, lines: &[&str]) -> Order {
        Order {
            id: id.into(),
            number: Some("7".into()),
            user_id: None,
            email: None,
            lines: lines.iter().map(|l| OrderLine { id: (*l).into(), sku: Some("MUG".into()), quantity: 1 }).collect(),
            status: None,
            charge_status: None,
            refunds: None,
        }
    }

    #[test]
    fn each_line_has_one_event_name_for_every_delivery() {
        let a = order("O1", &["L1", "L2"]);
        let r = NOT_PROVISIONED;
        let name = event_name("buyer-1", &a, &a.lines[0], r);
        assert_eq!(name, event_name("buyer-1", &order("O1", &["L1"]), &a.lines[0], r), "redelivered: the same name");
        assert_ne!(name, event_name("buyer-1", &a, &a.lines[1], r), "another line: another Event");
        assert_ne!(name, event_name("buyer-1", &order("O2", &["L1"]), &a.lines[0], r), "another order: another Event");
        assert_ne!(name, event_name("buyer-1", &a, &a.lines[0], OFFERING_NOT_READY), "another reason: another Event");
        assert!(name.len() <= 253 && name.starts_with("buyer-1.order-line-"), "{name}");
    }
}
