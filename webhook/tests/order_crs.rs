//! The order → CR mapping, over the recorded payloads of `examples/saleor/`
//! and the Offerings of `examples/`.

use std::path::PathBuf;
use std::sync::Arc;

use cmp_crds::Offering;
use cmp_crds::wallet::{GrantSource, Meter, Wallet, WalletSpec, WalletStatus};
use cmp_webhook::catalog::{Catalog, CreditPackFile, LineProblem};
use cmp_webhook::order_crs::{self, API_KEY_NAME, DEFAULT_PROJECT};
use cmp_webhook::order_state::Withdrawal;
use cmp_webhook::payload::{OrderEvent, Refund, RefundedLine, parse_order};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

const API_URL: &str = "https://store.example.com/graphql/";

fn examples() -> PathBuf {
    cmp_testenv::workspace_root().join("examples")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(examples().join("saleor").join(name)).expect("the fixture exists")
}

fn offering(file: &str) -> Arc<Offering> {
    let text = std::fs::read_to_string(examples().join(file)).expect("the example exists");
    Arc::new(serde_yaml::from_str(&text).expect("the example is an Offering"))
}

fn catalog() -> Catalog {
    let packs = CreditPackFile::load(&examples().join("saleor/credit-packs.yaml")).expect("the credit packs load");
    Catalog::new(&[offering("20-offering.yaml"), offering("25-offering-local-echo.yaml")], &packs)
}

#[test]
fn a_paid_order_becomes_the_buyers_organization_instances_and_grants() {
    let order = parse_order(OrderEvent::FullyPaid, &fixture("order-fully-paid.json")).expect("parses");
    let crs = order_crs::order_crs(API_URL, &order, &catalog()).expect("maps");

    let org = &crs.organization;
    assert!(org.name_any().starts_with("buyer-") && org.name_any().len() == 22, "{}", org.name_any());
    assert_eq!(org.spec.owners.len(), 1);
    assert_eq!(org.spec.owners[0].name, "ada@example.com", "the buyer owns the organization");
    assert_eq!(org.spec.billing_email.as_deref(), Some("ada@example.com"));
    assert_eq!(org.spec.starter_credits, None, "starter credits are the operator's default, granted once by it");

    let ns = format!("cmp-{}", org.name_any());
    assert_eq!(crs.project.name_any(), DEFAULT_PROJECT);
    assert_eq!(crs.project.namespace().as_deref(), Some(ns.as_str()));

    assert_eq!(crs.instances.len(), 1, "one plan line, one Instance");
    let instance = &crs.instances[0];
    assert_eq!(instance.namespace().as_deref(), Some(ns.as_str()));
    assert_eq!((instance.spec.offering.as_str(), instance.spec.plan.as_str()), ("support-assistant", "pro"));
    assert_eq!(instance.spec.version, "1.1.0", "the newest version that is not deprecated");
    assert_eq!(instance.spec.project, DEFAULT_PROJECT);
    assert_eq!(instance.spec.api_keys.len(), 1);
    assert_eq!(instance.spec.api_keys[0].name, API_KEY_NAME);
    assert_eq!(instance.labels().get(cmp_crds::names::SALEOR_ORDER_LABEL), Some(&crs.order_key));

    let credits: Vec<i64> = crs.grants.iter().map(|g| g.credits).collect();
    assert_eq!(credits, vec![5000, 2000], "the plan's included credits, and a 1,000-credit pack × 2");
    assert!(crs.grants.iter().all(|g| g.source == GrantSource::SaleorOrder && g.order_ref.is_some()));
    assert!(crs.grants.iter().all(|g| g.id.starts_with(&format!("saleor.{}.", crs.order_key))));
    assert!(crs.grants[1].reason.contains("1,000 credits × 2") && crs.grants[1].reason.contains("#1042"));

    assert_eq!(crs.problems.len(), 1, "the mug is reported, not dropped");
    assert_eq!(crs.problems[0].1, LineProblem::UnknownSku("CMP-MUG".into()));
}

#[test]
fn both_payload_shapes_and_every_redelivery_give_the_same_crs() {
    let catalog = catalog();
    let top = parse_order(OrderEvent::FullyPaid, &fixture("order-fully-paid.json")).expect("parses");
    let wrapped = parse_order(OrderEvent::FullyPaid, &fixture("order-fully-paid-wrapped.json")).expect("parses");
    let first = order_crs::order_crs(API_URL, &top, &catalog).expect("maps");
    assert_eq!(first, order_crs::order_crs(API_URL, &wrapped, &catalog).expect("maps"));
    assert_eq!(first, order_crs::order_crs(API_URL, &top, &catalog).expect("maps"), "names come from the order alone");
    let other_store = order_crs::order_crs("https://other.example.com/graphql/", &top, &catalog).expect("maps");
    assert_ne!(first.organization.name_any(), other_store.organization.name_any(), "user ids are per store");
    assert_ne!(first.instances[0].name_any(), other_store.instances[0].name_any());
}

#[test]
fn a_guest_is_known_by_the_lower_case_email() {
    let order = parse_order(OrderEvent::FullyPaid, &fixture("order-fully-paid-guest.json")).expect("parses");
    let crs = order_crs::order_crs(API_URL, &order, &catalog()).expect("maps");
    assert_eq!(order_crs::buyer(&order).as_deref(), Ok("email:guest.buyer@example.com"));
    assert_eq!(crs.organization.spec.owners[0].name, "Guest.Buyer@example.com");
    assert_eq!(crs.instances.len(), 1);
    assert_eq!((crs.instances[0].spec.offering.as_str(), crs.instances[0].spec.version.as_str()), ("echo", "2"));
    assert_eq!(crs.grants[0].credits, 100, "the Echo plan's included credits");
    assert!(crs.problems.is_empty());
}

#[test]
fn an_order_with_no_buyer_is_refused() {
    let order = parse_order(OrderEvent::FullyPaid, br#"{"order": {"id": "O1", "lines": []}}"#).expect("parses");
    assert!(order_crs::order_crs(API_URL, &order, &catalog()).is_err_and(|e| e.to_string().contains("names no buyer")));
}

#[test]
fn a_sku_claimed_twice_is_reported_not_guessed() {
    let packs = vec![cmp_webhook::catalog::CreditPack { sku: "ECHO-FREE".into(), credits: 5, display_name: None }];
    let catalog = Catalog::new(&[offering("25-offering-local-echo.yaml")], &packs);
    let order = parse_order(OrderEvent::FullyPaid, &fixture("order-fully-paid-guest.json")).expect("parses");
    let crs = order_crs::order_crs(API_URL, &order, &catalog).expect("maps");
    assert!(crs.instances.is_empty() && crs.grants.is_empty());
    assert!(matches!(&crs.problems[0].1, LineProblem::AmbiguousSku { sku, .. } if sku == "ECHO-FREE"));
}

/// The paid fixture's grants in a Wallet whose meters consumed `consumed` (after a 1,000-credit starter grant).
fn wallet_of(crs: &order_crs::OrderCrs, consumed: i64) -> Wallet {
    let mut grants = vec![cmp_crds::wallet::Grant {
        id: "starter".into(),
        credits: 1000,
        reason: String::new(),
        source: GrantSource::Starter,
        order_ref: None,
        expires_at: None,
    }];
    grants.extend(crs.grants.clone());
    let mut wallet = Wallet::new("w", WalletSpec { grants, ..WalletSpec::default() });
    wallet.status = Some(WalletStatus {
        meters: vec![Meter {
            name: "gw".into(),
            consumed,
            runs: consumed,
            lease: 0,
            lease_expires_at: None,
            updated_at: None,
        }],
        ..WalletStatus::default()
    });
    wallet
}

fn refund(id: &str, line: &str, quantity: i64) -> Refund {
    Refund { id: id.into(), lines: vec![RefundedLine { line_id: line.into(), quantity }] }
}

#[test]
fn a_refund_of_lines_withdraws_their_share_once_per_refund_never_below_what_was_spent() {
    let order = parse_order(OrderEvent::Refunded, &fixture("order-fully-paid.json")).expect("parses");
    let crs = order_crs::order_crs(API_URL, &order, &catalog()).expect("maps");
    let (plan_line, pack_line) = (order.lines[0].id.clone(), order.lines[1].id.clone());
    assert_eq!((order.lines[1].quantity, crs.grants[1].credits), (2, 2000), "the pack line: 2 units of 1,000");
    // 6,500 consumed: the starter's 1,000, the plan's 5,000, then 500 of the pack's 2,000.
    let mut wallet = wallet_of(&crs, 6500);
    let now = Timestamp::now();

    let first = vec![refund("RnVsZmlsbG1lbnQ6MQ==", &pack_line, 1)];
    let reversals = order_crs::refund_reversals(&crs.order_key, &order, &first, &wallet, now);
    assert_eq!(
        reversals.iter().map(|r| (r.grant.as_str(), r.credits)).collect::<Vec<_>>(),
        [(crs.grants[1].id.as_str(), 1000)]
    );
    assert_eq!(reversals[0].id, order_crs::refund_reversal_id(&crs.grants[1].id, "RnVsZmlsbG1lbnQ6MQ=="));
    wallet.spec.reversals.extend(reversals);
    assert!(
        order_crs::refund_reversals(&crs.order_key, &order, &first, &wallet, now).is_empty(),
        "a redelivered refund withdraws nothing more"
    );

    // The store lists every refund of the order: the first again, and a second of the other unit.
    let both = vec![first[0].clone(), refund("RnVsZmlsbG1lbnQ6Mg==", &pack_line, 1)];
    let second = order_crs::refund_reversals(&crs.order_key, &order, &both, &wallet, now);
    assert_eq!(second.iter().map(|r| r.credits).collect::<Vec<_>>(), [500], "only what is unspent: 500 were spent");
    wallet.spec.reversals.extend(second);
    assert!(order_crs::lines_refunded_in_full(&order, &both).contains(&pack_line));
    assert!(!order_crs::lines_refunded_in_full(&order, &first).contains(&pack_line), "one unit of two");

    // A full refund afterwards withdraws what is left of the plan's grant only (the pack's is spent or withdrawn).
    let rest = order_crs::withdrawal_reversals(&crs.order_key, &order, Withdrawal::FullyRefunded, &wallet, now);
    assert!(rest.is_empty(), "the plan's 5,000 were spent: {rest:?}");
    let wallet = wallet_of(&crs, 1000);
    let plan = vec![refund("R3JhbnRlZFJlZnVuZDox", &plan_line, 1)];
    let reversals = order_crs::refund_reversals(&crs.order_key, &order, &plan, &wallet, now);
    assert_eq!(
        reversals.iter().map(|r| r.credits).collect::<Vec<_>>(),
        [5000],
        "a refunded plan line: its included credits"
    );
    assert!(order_crs::lines_refunded_in_full(&order, &plan).contains(&plan_line));
    let unknown = vec![refund("R", "not-a-line-of-the-order", 1)];
    assert!(order_crs::refund_reversals(&crs.order_key, &order, &unknown, &wallet, now).is_empty());
}

#[test]
fn a_cancellation_withdraws_only_the_orders_unspent_credits_once() {
    let order = parse_order(OrderEvent::Cancelled, &fixture("order-cancelled.json")).expect("parses");
    let crs = order_crs::order_crs(API_URL, &order, &catalog()).expect("maps");
    // 1,500 consumed: the starter grant's 1,000, then 500 of the plan's 5,000.
    let mut wallet = wallet_of(&crs, 1500);
    let now = Timestamp::now();
    let reversals = order_crs::withdrawal_reversals(&crs.order_key, &order, Withdrawal::Cancelled, &wallet, now);
    let withdrawn: Vec<(String, i64)> = reversals.iter().map(|r| (r.grant.clone(), r.credits)).collect();
    assert_eq!(withdrawn, vec![(crs.grants[0].id.clone(), 4500), (crs.grants[1].id.clone(), 2000)]);
    assert!(reversals.iter().all(|r| r.id == order_crs::reversal_id(&r.grant)));

    wallet.spec.reversals = reversals;
    assert!(
        order_crs::withdrawal_reversals(&crs.order_key, &order, Withdrawal::Cancelled, &wallet, now).is_empty(),
        "a redelivered cancellation withdraws nothing more"
    );
    let other = order_crs::order_key(API_URL, "another-order");
    wallet.spec.reversals.clear();
    assert!(
        order_crs::withdrawal_reversals(&other, &order, Withdrawal::FullyRefunded, &wallet, now).is_empty(),
        "only the order's own grants"
    );
}
