//! `Wallet`: prepaid credits of an Organization (in its control namespace).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::conditions_schema;

/// The most grants a Wallet holds. The append-only rule compares every old
/// grant with the new list, and the API server bounds the cost of a rule.
pub const MAX_GRANTS: usize = 400;
/// The most reversals a Wallet holds: the rules that check them against their
/// grants cost reversals × grants, and 200 × 400 fits the API server's budget.
pub const MAX_REVERSALS: usize = 200;

/// The desired state of a Wallet: its grants, append-only.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) attributes repeat type_ legitimately
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cmp.gsv.dev",
    version = "v1alpha1",
    kind = "Wallet",
    plural = "wallets",
    shortname = "wal",
    category = "cmp",
    namespaced,
    status = "WalletStatus",
    derive = "PartialEq",
    doc = "Prepaid credits. Grants are appended to spec (starter credits by the operator, paid top-ups by the provisioner, manual grants and refunds by an admin) and never edited or removed (a cancelled order's unspent credits are withdrawn by appending a reversal); each gateway replica records its consumption in its own entry of status.meters. balance = granted - consumed, where granted counts every grant less what expired unused and what was reversed.",
    printcolumn(name = "Balance", type_ = "integer", json_path = ".status.balance"),
    printcolumn(name = "Leased", type_ = "integer", json_path = ".status.leased"),
    printcolumn(name = "Funded", type_ = "string", json_path = ".status.conditions[?(@.type==\"Funded\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Granted", type_ = "integer", json_path = ".status.granted", priority = 1),
    printcolumn(name = "Consumed", type_ = "integer", json_path = ".status.consumed", priority = 1),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Funded\")].reason",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.grants) || has(self.grants)").message("spec.grants is append-only: the grants cannot be removed once added"))]
#[x_kube(validation = Rule::new("!has(oldSelf.reversals) || has(self.reversals)").message("spec.reversals is append-only: the reversals cannot be removed once added"))]
#[x_kube(validation = Rule::new("!has(self.reversals) || self.reversals.all(r, has(self.grants) && self.grants.exists(g, g.id == r.grant))").message("spec.reversals[].grant must name a grant in spec.grants"))]
#[x_kube(validation = Rule::new("!has(self.reversals) || !has(self.grants) || self.grants.all(g, self.reversals.filter(r, r.grant == g.id).map(r, r.credits).sum() <= g.credits)").message("spec.reversals[].credits may not exceed that grant's credits: the reversals of one grant together withdraw at most its credits"))]
pub struct WalletSpec {
    /// Credit grants, append-only: an entry cannot be edited or removed once added (a correction is a new grant, for example a Refund). Ids are unique, which makes appending idempotent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("oldSelf.all(old, self.exists(g, g.id == old.id))").message("spec.grants is append-only: a grant cannot be removed once added; append a correcting grant instead"))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(h, h.id == g.id))").message("spec.grants: grant ids must be unique; two grants share an id"))]
    #[schemars(length(max = 400), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub grants: Vec<Grant>,

    /// Withdrawals of credits granted earlier, append-only: a cancelled order's unspent credits, for example. A reversal names the grant it withdraws from; the reversals of one grant together withdraw at most its credits (a cancellation once, each refund of a line once more). The grant itself is never edited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("oldSelf.all(old, self.exists(r, r.id == old.id))").message("spec.reversals is append-only: a reversal cannot be removed once added"))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s.id == r.id))").message("spec.reversals: reversal ids must be unique; two reversals share an id"))]
    #[schemars(length(max = 200), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub reversals: Vec<Reversal>,

    /// How far below zero the balance may go before runs are refused. Default 0: no overdraft.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.overdraft must be a whole number of credits, 0 or more"))]
    pub overdraft: i64,

    /// Below this balance the `Funded` condition turns False with reason `Low`. Unset: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.lowBalanceThreshold must be a whole number of credits, 0 or more"))]
    pub low_balance_threshold: Option<i64>,
}

/// Credits added to a Wallet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.grants[] entries are immutable: a grant cannot be edited once added; append a new grant instead"))]
#[x_kube(validation = Rule::new("self.source != 'SaleorOrder' || has(self.orderRef)").message("spec.grants[].orderRef is required when source is SaleorOrder"))]
pub struct Grant {
    /// The grant id, unique in the Wallet: `starter`, or derived from the order and line for paid top-ups, so a redelivered order grants nothing twice.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.grants[].id must hold lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// How many credits the grant adds: a positive whole number.
    #[x_kube(validation = Rule::new("self > 0").message("spec.grants[].credits must be a positive whole number of credits"))]
    pub credits: i64,
    /// Why the credits were granted, for people reading the Wallet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub reason: String,
    /// Where the grant came from.
    pub source: GrantSource,
    /// The Saleor order (and line) that paid for the grant. Required for `SaleorOrder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub order_ref: Option<String>,
    /// When the unused part of the grant expires (RFC 3339). Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

/// A withdrawal of the unspent part of a grant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.reversals[] entries are immutable: a reversal cannot be edited once added"))]
pub struct Reversal {
    /// The reversal id, unique in the Wallet: derived from the grant it reverses for a cancelled order, so a redelivered cancellation withdraws nothing twice.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.reversals[].id must hold lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// The id of the grant (in spec.grants) whose credits are withdrawn.
    #[schemars(length(min = 1, max = 128))]
    pub grant: String,
    /// How many credits are withdrawn: a positive whole number, at most the grant's credits.
    #[x_kube(validation = Rule::new("self > 0").message("spec.reversals[].credits must be a positive whole number of credits"))]
    pub credits: i64,
    /// Why the credits were withdrawn, for people reading the Wallet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub reason: String,
    /// The Saleor order whose cancellation withdrew the credits, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub order_ref: Option<String>,
}

/// Where a grant came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GrantSource {
    /// Starter credits, given once when the Organization is created.
    Starter,
    /// A paid Saleor order (a plan's included credits or a credit pack).
    SaleorOrder,
    /// Granted by an admin by hand.
    Manual,
    /// A refund of consumed credits.
    Refund,
}

/// One gateway replica's consumption, written by that replica alone (its own field manager).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    /// The gateway replica that owns the entry (its pod name).
    pub name: String,
    /// Credits consumed so far through this replica.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub consumed: i64,
    /// Runs settled so far through this replica.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub runs: i64,
    /// Credits reserved by this replica and not yet consumed.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub lease: i64,
    /// When the lease returns to the Wallet if the replica does not renew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Time>,
    /// When the replica last wrote the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// Consumption of meters that were folded away (their replicas are long gone).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactedUsage {
    /// Credits consumed by the folded meters.
    #[serde(default)]
    pub consumed: i64,
    /// Runs settled by the folded meters.
    #[serde(default)]
    pub runs: i64,
    /// The names of the folded meters, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<String>,
}

/// The observed state of a Wallet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `cmp.gsv.dev/reconcile-requested-at` annotation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Credits of all grants, less what expired unused and what was reversed.
    #[serde(default)]
    pub granted: i64,
    /// Credits consumed: the compacted total plus every meter.
    #[serde(default)]
    pub consumed: i64,
    /// granted - consumed.
    #[serde(default)]
    pub balance: i64,
    /// Credits currently leased by gateway replicas (leases not yet expired).
    #[serde(default)]
    pub leased: i64,
    /// One entry per gateway replica, each written under the replica's own field manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub meters: Vec<Meter>,
    /// The consumption of meters folded away by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<CompactedUsage>,
    /// `Funded`: True, or False with reason `Exhausted` (nothing left) or `Low` (below the threshold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
