//! From a Saleor order to CRs: pure functions of the order, the catalog and
//! (for a cancellation) the buyer's Wallet.
//!
//! Saleor sends no delivery id and may deliver an event more than once, so
//! exactly-once comes from names: every object name and grant id is derived
//! from the store's API URL, the order id and the line id. Creating an object
//! that exists, or appending a grant whose id is present, changes nothing.
//!
//! - The Organization: `buyer-<16 hex>` of the store and the buyer's Saleor
//!   user id, or of the e-mail for a guest. The buyer's e-mail is its owner
//!   (the user name the identity provider gives the API server).
//! - The Project: `default`, in the Organization's control namespace.
//! - An Instance per plan line: `saleor-<order key>-<line key>`, with one API
//!   key `default`, labelled with the order key.
//! - A grant per line: `saleor.<order key>.<line key>` (a plan's included
//!   credits × quantity, or a credit pack's credits × quantity).
//! - A reversal per grant on cancellation or full refund: `<grant id>.reversed`,
//!   withdrawing what the grant has unspent.
//! - A reversal per refund of a line: `<grant id>.refund-<10 hex of the
//!   refund id>`, withdrawing the refunded units' share, at most what is unspent.
//!
//! A plan line with a quantity above 1 still creates one Instance; its
//! included credits are multiplied by the quantity.

use std::collections::{BTreeMap, BTreeSet};

use cmp_crds::credits;
use cmp_crds::instance::ApiKeySpec;
use cmp_crds::names::{
    SALEOR_API_URL_ANNOTATION, SALEOR_BUYER_ANNOTATION, SALEOR_LINE_ID_ANNOTATION, SALEOR_ORDER_ID_ANNOTATION,
    SALEOR_ORDER_LABEL, SALEOR_ORDER_NUMBER_ANNOTATION,
};
use cmp_crds::organization::{Subject, SubjectKind};
use cmp_crds::wallet::{Grant, GrantSource, Reversal};
use cmp_crds::{Instance, InstanceSpec, Offering, Organization, OrganizationSpec, Project, Wallet};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, LineProblem, Product};
use crate::order_state::Withdrawal;
use crate::payload::{Order, OrderLine, Refund};

/// The Project every buyer's Instances go to.
pub use cmp_crds::names::DEFAULT_PROJECT;
/// The name of the one API key of an Instance the provisioner creates.
pub const API_KEY_NAME: &str = "default";

/// The order names no buyer: it has neither a user id nor an e-mail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {0} names no buyer: the subscription query must select user {{ id email }} and userEmail")]
pub struct NoBuyer(pub String);

/// What a paid order becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCrs {
    /// The order's key: the hash the names are derived from.
    pub order_key: String,
    /// The buyer's Organization (created if absent, never overwritten).
    pub organization: Organization,
    /// The default Project (created if absent).
    pub project: Project,
    /// One Instance per plan line.
    pub instances: Vec<Instance>,
    /// One grant per line that carries credits.
    pub grants: Vec<Grant>,
    /// Lines that cannot be provisioned, with why.
    pub problems: Vec<(OrderLine, LineProblem)>,
    /// Plan lines whose Offering is not Ready (their Instances are created and wait), with why.
    pub not_ready: Vec<(OrderLine, String)>,
}

/// 16 hex characters of sha256 over the parts, separated so that no two part lists collide.
fn key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The order's key, from the store's API URL and the order id.
pub fn order_key(api_url: &str, order_id: &str) -> String {
    key(&["order", api_url, order_id])
}

/// The buyer's identity in the store: `user:<id>`, else `email:<lower-case e-mail>`.
pub fn buyer(order: &Order) -> Result<String, NoBuyer> {
    match (&order.user_id, &order.email) {
        (Some(id), _) => Ok(format!("user:{id}")),
        (None, Some(email)) => Ok(format!("email:{}", email.to_lowercase())),
        (None, None) => Err(NoBuyer(order.id.clone())),
    }
}

/// The buyer's Organization name: `buyer-<16 hex>`.
pub fn organization_name(api_url: &str, order: &Order) -> Result<String, NoBuyer> {
    Ok(format!("buyer-{}", key(&["buyer", api_url, &buyer(order)?])))
}

/// The Instance a plan line creates.
pub fn instance_name(order_key: &str, line_id: &str) -> String {
    format!("saleor-{order_key}-{}", &key(&["line", line_id])[..10])
}

/// The grant a line adds.
pub fn grant_id(order_key: &str, line_id: &str) -> String {
    format!("{}.{}", grant_prefix(order_key), &key(&["line", line_id])[..10])
}

/// What the ids of an order's grants start with.
pub fn grant_prefix(order_key: &str) -> String {
    format!("saleor.{order_key}")
}

/// The reversal that withdraws what a grant has unspent.
pub fn reversal_id(grant_id: &str) -> String {
    format!("{grant_id}.reversed")
}

fn order_label(order: &Order) -> String {
    order.number.as_ref().map_or_else(|| order.id.clone(), |n| format!("#{n}"))
}

fn order_annotations(api_url: &str, order: &Order) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (SALEOR_API_URL_ANNOTATION.to_string(), api_url.to_string()),
        (SALEOR_ORDER_ID_ANNOTATION.to_string(), order.id.clone()),
    ]);
    if let Some(number) = &order.number {
        annotations.insert(SALEOR_ORDER_NUMBER_ANNOTATION.to_string(), number.clone());
    }
    annotations
}

/// The buyer's Organization, as created when absent.
pub fn organization(api_url: &str, order: &Order) -> Result<Organization, NoBuyer> {
    let name = organization_name(api_url, order)?;
    let mut annotations = order_annotations(api_url, order);
    annotations.insert(SALEOR_BUYER_ANNOTATION.to_string(), buyer(order)?);
    let spec = OrganizationSpec {
        display_name: order
            .email
            .clone()
            .unwrap_or_else(|| format!("Saleor customer {}", buyer(order).unwrap_or_default())),
        billing_email: order.email.clone(),
        owners: order.email.iter().map(|email| Subject { kind: SubjectKind::User, name: email.clone() }).collect(),
        ..OrganizationSpec::default()
    };
    let mut org = Organization::new(&name, spec);
    org.metadata.annotations = Some(annotations);
    Ok(org)
}

/// What a paid `order` becomes, given what `catalog` sells.
pub fn order_crs(api_url: &str, order: &Order, catalog: &Catalog) -> Result<OrderCrs, NoBuyer> {
    let organization = organization(api_url, order)?;
    let namespace = cmp_crds::names::control_namespace(&organization.name_any());
    let order_key = order_key(api_url, &order.id);
    let project = cmp_crds::project::default_project(&organization.name_any());
    let (mut instances, mut grants, mut problems, mut not_ready) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for line in &order.lines {
        let product = match catalog.product(line.sku.as_deref()) {
            Ok(product) => product,
            Err(problem) => {
                problems.push((line.clone(), problem));
                continue;
            }
        };
        let sku = line.sku.clone().unwrap_or_default();
        let (credits, reason) = match product {
            Product::Plan { offering, plan, version } => {
                if let Some(why) = offering_not_ready(offering) {
                    not_ready.push((line.clone(), why));
                }
                let spec = plan_spec(offering.name_any(), plan.id.clone(), version.clone());
                instances.push(instance(api_url, order, &order_key, &namespace, line, spec));
                let shown = if offering.spec.display_name.is_empty() {
                    offering.name_any()
                } else {
                    offering.spec.display_name.clone()
                };
                (
                    plan.included_credits,
                    format!("{shown}, plan {} (included credits), order {}", plan.id, order_label(order)),
                )
            }
            Product::CreditPack(pack) => {
                let shown = pack.display_name.clone().unwrap_or_else(|| pack.sku.clone());
                (pack.credits, format!("{shown} × {}, order {}", line.quantity, order_label(order)))
            }
        };
        let Some(total) = credits.checked_mul(line.quantity) else {
            problems.push((line.clone(), LineProblem::Overflow(sku)));
            continue;
        };
        if total > 0 {
            grants.push(Grant {
                id: grant_id(&order_key, &line.id),
                credits: total,
                reason,
                source: GrantSource::SaleorOrder,
                order_ref: Some(order_ref(order, line)),
                expires_at: None,
            });
        }
    }
    Ok(OrderCrs { order_key, organization, project, instances, grants, problems, not_ready })
}

/// Why `offering` is not Ready, if it is not: the Instances of its plans wait until it is.
pub fn offering_not_ready(offering: &Offering) -> Option<String> {
    let name = offering.name_any();
    let conditions = offering.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match cmp_crds::conditions::find(conditions, cmp_crds::conditions::READY) {
        Some(ready) if ready.status == cmp_crds::conditions::TRUE => None,
        Some(ready) => Some(format!(
            "Offering {name} is not Ready ({}: {}): the line's Instance is created and waits until it is",
            ready.reason, ready.message
        )),
        None => Some(format!(
            "Offering {name} is not Ready (no status yet: is cmp-operator running?): the line's Instance is created and waits until it is"
        )),
    }
}

/// `<order id>/<line id>`, cut to the 255 characters the Wallet allows.
fn order_ref(order: &Order, line: &OrderLine) -> String {
    let mut text = format!("{}/{}", order.id, line.id);
    if text.len() > 255 {
        let mut end = 255;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The Instance a plan line creates: `spec` in `namespace`, labelled with
/// the order's key and annotated with the order and the line.
fn instance(
    api_url: &str,
    order: &Order,
    order_key: &str,
    namespace: &str,
    line: &OrderLine,
    spec: InstanceSpec,
) -> Instance {
    let mut annotations = order_annotations(api_url, order);
    annotations.insert(SALEOR_LINE_ID_ANNOTATION.to_string(), line.id.clone());
    let mut instance = Instance::new(&instance_name(order_key, &line.id), spec);
    instance.metadata.namespace = Some(namespace.to_string());
    instance.metadata.labels = Some(BTreeMap::from([(SALEOR_ORDER_LABEL.to_string(), order_key.to_string())]));
    instance.metadata.annotations = Some(annotations);
    instance
}

/// A new Instance of `plan` of `offering` at `version`, in the default Project, with one API key.
fn plan_spec(offering: String, plan: String, version: String) -> InstanceSpec {
    InstanceSpec {
        project: DEFAULT_PROJECT.into(),
        offering,
        version,
        plan,
        suspended: false,
        api_keys: vec![ApiKeySpec { name: API_KEY_NAME.into(), expires_at: None, revoked: false }],
        connectors: Vec::new(),
        config: BTreeMap::new(),
        deletion_policy: Default::default(),
    }
}

/// The reversals a withdrawal (cancellation or full refund) of the order
/// `order_key` appends to `wallet`: one for each of the order's grants not
/// withdrawn yet that has credits unspent at `now` (what earlier refunds of
/// its lines left). Empty when there is nothing (left) to withdraw.
pub fn withdrawal_reversals(
    order_key: &str,
    order: &Order,
    why: Withdrawal,
    wallet: &Wallet,
    now: Timestamp,
) -> Vec<Reversal> {
    let prefix = format!("{}.", grant_prefix(order_key));
    let consumed = consumed(wallet);
    let existing: Vec<&str> = wallet.spec.reversals.iter().map(|r| r.id.as_str()).collect();
    credits::unspent(&wallet.spec.grants, &wallet.spec.reversals, consumed, now)
        .into_iter()
        .filter(|(id, unspent)| {
            id.starts_with(&prefix) && *unspent > 0 && !existing.contains(&reversal_id(id).as_str())
        })
        .map(|(id, unspent)| Reversal {
            id: reversal_id(id),
            grant: id.to_string(),
            credits: unspent,
            reason: format!("order {} {}: its unspent credits are withdrawn", order_label(order), why.as_str()),
            order_ref: Some(order.id.chars().take(255).collect()),
        })
        .collect()
}

/// What the Wallet's meters (and their compacted total) consumed.
fn consumed(wallet: &Wallet) -> i64 {
    let status = wallet.status.as_ref();
    credits::consumed(
        status.map(|s| s.meters.as_slice()).unwrap_or_default(),
        status.and_then(|s| s.compacted.as_ref()),
    )
}

/// The reversal that withdraws a line's credits for one refund.
pub fn refund_reversal_id(grant_id: &str, refund_id: &str) -> String {
    format!("{grant_id}.refund-{}", &key(&["refund", refund_id])[..10])
}

/// Units refunded per line id, summed over the lines of one refund.
fn refunded_units(refund: &Refund) -> BTreeMap<&str, i64> {
    let mut units = BTreeMap::new();
    for line in &refund.lines {
        let sum: &mut i64 = units.entry(line.line_id.as_str()).or_default();
        *sum = sum.saturating_add(line.quantity);
    }
    units
}

/// The ids of the grants of the lines `refunds` name that carry credits, as `crs` (the paid order) has them.
pub fn refunded_grants(crs: &OrderCrs, refunds: &[Refund]) -> Vec<String> {
    let lines: BTreeSet<&str> = refunds.iter().flat_map(|r| r.lines.iter().map(|l| l.line_id.as_str())).collect();
    let ids: BTreeSet<String> = lines.into_iter().map(|line| grant_id(&crs.order_key, line)).collect();
    crs.grants.iter().filter(|g| ids.contains(&g.id)).map(|g| g.id.clone()).collect()
}

/// The order's line ids whose every unit `refunds` refunded, summed over them.
pub fn lines_refunded_in_full(order: &Order, refunds: &[Refund]) -> BTreeSet<String> {
    let mut units: BTreeMap<&str, i64> = BTreeMap::new();
    for refund in refunds {
        for (line, quantity) in refunded_units(refund) {
            let sum = units.entry(line).or_default();
            *sum = sum.saturating_add(quantity);
        }
    }
    order
        .lines
        .iter()
        .filter(|line| units.get(line.id.as_str()).is_some_and(|refunded| *refunded >= line.quantity))
        .map(|line| line.id.clone())
        .collect()
}

/// The reversals `refunds` of lines of the order `order_key` append to
/// `wallet`: for each refund and line not withdrawn yet, the refunded units'
/// share of the line's grant, at most what the grant has unspent at `now`
/// (never below what was already spent). Keyed by the refund, so two
/// refunds of one line are two withdrawals, and a redelivery none.
pub fn refund_reversals(
    order_key: &str,
    order: &Order,
    refunds: &[Refund],
    wallet: &Wallet,
    now: Timestamp,
) -> Vec<Reversal> {
    let consumed = consumed(wallet);
    let mut reversals = wallet.spec.reversals.clone();
    let mut new = Vec::new();
    for refund in refunds {
        for (line_id, refunded) in refunded_units(refund) {
            let Some(line) = order.lines.iter().find(|l| l.id == line_id) else { continue };
            let grant_id = grant_id(order_key, line_id);
            let Some(grant) = wallet.spec.grants.iter().find(|g| g.id == grant_id) else { continue };
            let id = refund_reversal_id(&grant_id, &refund.id);
            if reversals.iter().any(|r| r.id == id) {
                continue;
            }
            let share = i128::from(grant.credits.max(0)) * i128::from(refunded.min(line.quantity))
                / i128::from(line.quantity.max(1));
            let unspent = credits::unspent(&wallet.spec.grants, &reversals, consumed, now)
                .into_iter()
                .find(|(g, _)| *g == grant_id)
                .map_or(0, |(_, unspent)| unspent);
            let credits = i64::try_from(share).unwrap_or(i64::MAX).min(unspent);
            if credits <= 0 {
                continue;
            }
            let reversal = Reversal {
                id,
                grant: grant_id,
                credits,
                reason: format!(
                    "order {} line {line_id}: {} of {} unit(s) refunded; their unspent credits are withdrawn",
                    order_label(order),
                    refunded.min(line.quantity),
                    line.quantity
                ),
                order_ref: Some(order_ref(order, line)),
            };
            reversals.push(reversal.clone());
            new.push(reversal);
        }
    }
    new
}
