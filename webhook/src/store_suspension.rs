//! The store's suspension of an Instance: the annotation
//! [`STORE_SUSPENSION_ANNOTATION`] the provisioner sets when the store
//! withdraws an order (cancelled, refunded), which the chart's
//! ValidatingAdmissionPolicy lets no one else add, change or remove. The
//! buyer's own `spec.suspended` stays theirs.
//!
//! Before this annotation, the provisioner set `spec.suspended: true`, which
//! a buyer with the admin role could undo. [`moved_from_spec`] finds such
//! Instances (the provisioner's field manager still owns `spec.suspended`
//! and it is true), and [`move_patch`] moves the suspension into the
//! annotation, once, when the webhook starts.

use cmp_crds::Instance;
use cmp_crds::names::{PROVISIONER_MANAGER, STORE_SUSPENSION_ANNOTATION};
use serde_json::{Value, json};

use crate::order_state::Withdrawal;
use crate::payload::Order;

/// Why the store suspended an Instance of `order`.
pub fn why(order: &Order, withdrawal: Withdrawal) -> String {
    format!("order {} {}", order_label(order), withdrawal.as_str())
}

/// Why the store suspended the Instance of a line refunded in full.
pub fn why_line_refunded(order: &Order) -> String {
    format!("its line of order {} was refunded in full", order_label(order))
}

fn order_label(order: &Order) -> String {
    order.number.as_ref().map_or_else(|| order.id.clone(), |n| format!("#{n}"))
}

/// The merge patch that suspends an Instance for the store, `why`.
pub fn suspend_patch(why: &str) -> Value {
    json!({"metadata": {"annotations": {STORE_SUSPENSION_ANNOTATION: why}}})
}

/// Whether `instance` was suspended by the provisioner in `spec.suspended`
/// (before the store's suspension had its own place) and not yet moved.
pub fn moved_from_spec(instance: &Instance) -> bool {
    if !instance.spec.suspended || cmp_crds::suspension::by_store(instance).is_some() {
        return false;
    }
    let fields = instance.metadata.managed_fields.as_deref().unwrap_or_default();
    fields.iter().any(|entry| {
        entry.manager.as_deref() == Some(PROVISIONER_MANAGER)
            && entry.fields_v1.as_ref().is_some_and(|f| f.0["f:spec"].get("f:suspended").is_some())
    })
}

/// The merge patch that moves the provisioner's `spec.suspended` into the store's annotation.
pub fn move_patch(instance: &Instance) -> Value {
    let annotations = instance.metadata.annotations.as_ref();
    let order = annotations
        .and_then(|a| a.get(cmp_crds::names::SALEOR_ORDER_NUMBER_ANNOTATION).map(|n| format!("#{n}")))
        .or_else(|| annotations.and_then(|a| a.get(cmp_crds::names::SALEOR_ORDER_ID_ANNOTATION).cloned()))
        .unwrap_or_else(|| "of this Instance".into());
    json!({
        "metadata": {"annotations": {STORE_SUSPENSION_ANNOTATION: format!("order {order} cancelled")}},
        "spec": {"suspended": false},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn instance(suspended: bool, manager: &str) -> Instance {
        let mut instance: Instance = serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "saleor-1", "namespace": "cmp-buyer",
                "annotations": {"cmp.gsv.dev/saleor-order-number": "1042"}},
            "spec": {"project": "default", "offering": "echo", "version": "1", "plan": "pro", "suspended": suspended}
        }))
        .expect("an Instance");
        instance.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:suspended": {}}}))),
            ..ManagedFieldsEntry::default()
        }]);
        instance
    }

    #[test]
    fn only_a_suspension_the_provisioner_wrote_in_spec_is_moved() {
        let old = instance(true, PROVISIONER_MANAGER);
        assert!(moved_from_spec(&old));
        assert_eq!(
            move_patch(&old),
            json!({"metadata": {"annotations": {STORE_SUSPENSION_ANNOTATION: "order #1042 cancelled"}},
                   "spec": {"suspended": false}})
        );
        assert!(!moved_from_spec(&instance(true, "kubectl-edit")), "the buyer's own suspension stays theirs");
        assert!(!moved_from_spec(&instance(false, PROVISIONER_MANAGER)), "a buyer lifted it since: not suspended");
        let mut moved = old.clone();
        moved.metadata.annotations.get_or_insert_default().insert(STORE_SUSPENSION_ANNOTATION.into(), "x".into());
        assert!(!moved_from_spec(&moved), "moved already");
    }
}
