//! Paid orders become CRs exactly once, and forged or broken deliveries
//! change nothing: the real webhook binary, the real operator and the real
//! API server, with deliveries signed by PyJWT as Saleor signs them.

mod support;

use cmp_crds::{Instance, Organization, Project, Wallet};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{World, converge};

const PAID: (&str, &str) = ("order-fully-paid", "order_fully_paid");
const CANCELLED: (&str, &str) = ("order-cancelled", "order_cancelled");
const CREATED: (&str, &str) = ("order-created", "order_created");

fn saleor_grants(wallet: &Wallet) -> Vec<(String, i64)> {
    wallet.spec.grants.iter().filter(|g| g.id.starts_with("saleor.")).map(|g| (g.id.clone(), g.credits)).collect()
}

#[tokio::test]
async fn a_paid_order_becomes_crs_exactly_once_however_it_is_delivered() {
    let w = World::new("paid").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;
    let body = w.fixture("order-fully-paid.json");

    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
    assert_eq!(status, 200, "{answer}\n{}", webhook.process.log());
    assert_eq!(answer["grantsAppended"], 2, "{answer}");
    assert_eq!(answer["problems"].as_array().map(Vec::len), Some(1), "the mug is reported: {answer}");

    // Ten more, one after another, then ten at once.
    for _ in 0..10 {
        let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
        assert_eq!((status, answer["grantsAppended"].as_u64()), (200, Some(0)), "{answer}");
    }
    let concurrent = futures::future::join_all((0..10).map(|_| w.deliver(&webhook, PAID.0, PAID.1, &body))).await;
    assert!(concurrent.iter().all(|(status, _)| *status == 200), "{concurrent:?}");
    let appended: u64 = concurrent.iter().filter_map(|(_, a)| a["grantsAppended"].as_u64()).sum();
    assert_eq!(appended, 0);

    let orgs = w.organizations().await;
    assert_eq!(orgs.len(), 1, "exactly one Organization");
    let org = &orgs[0];
    assert_eq!(org.spec.owners[0].name, "ada@example.com");
    let ns = format!("cmp-{}", org.name_any());
    let instances =
        Api::<Instance>::namespaced(w.client.clone(), &ns).list(&ListParams::default()).await.expect("list");
    assert_eq!(instances.items.len(), 1, "one Instance for the one plan line");
    let instance = &instances.items[0];
    assert_eq!((instance.spec.offering.as_str(), instance.spec.plan.as_str()), (w.offering.as_str(), "pro"));
    Api::<Project>::namespaced(w.client.clone(), &ns).get("default").await.expect("the default Project");

    let wallets = Api::<Wallet>::namespaced(w.client.clone(), &ns);
    let wallet = wallets.get(&org.name_any()).await.expect("the Wallet");
    let grants = saleor_grants(&wallet);
    assert_eq!(grants.iter().map(|(_, c)| *c).collect::<Vec<_>>(), vec![5000, 2000], "one grant per line: {grants:?}");
    // The operator's starter credits land once, beside the order's grants.
    let funded = converge("the starter grant and the figures", || async {
        let wallet = wallets.get(&org.name_any()).await.ok()?;
        (wallet.status.as_ref()?.granted == 8000).then_some(wallet)
    })
    .await;
    assert_eq!(funded.spec.grants.iter().filter(|g| g.id == "starter").count(), 1);

    // The operator issues the one API key.
    let key = cmp_crds::names::key_secret_name(&instance.name_any(), "default");
    converge("the API key Secret", || async {
        Api::<Secret>::namespaced(w.client.clone(), &ns).get_opt(&key).await.ok()?
    })
    .await;

    // The unknown SKU is an Event on the Organization and a metric.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(w.client.clone());
    let event = converge("the OrderLineNotProvisioned Event", || async {
        let list =
            events.list(&ListParams::default().fields(&format!("regarding.name={}", org.name_any()))).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("OrderLineNotProvisioned"))
    })
    .await;
    assert!(event.note.unwrap_or_default().contains("CMP-MUG"));
    // One Event for the line, however often the order came (21 payments and a placement after them).
    let (status, _) = w.deliver(&webhook, CREATED.0, CREATED.1, &w.fixture("order-created.json")).await;
    assert_eq!(status, 200);
    let list = events
        .list(&ListParams::default().fields(&format!("regarding.name={}", org.name_any())))
        .await
        .expect("Events list");
    let for_line: Vec<_> =
        list.items.iter().filter(|e| e.reason.as_deref() == Some("OrderLineNotProvisioned")).collect();
    assert_eq!(for_line.len(), 1, "{for_line:?}");
    let metrics = webhook.process.metrics().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l.starts_with("cmp_webhook_order_lines_unprovisioned_total{problem=\"unknown_sku\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_delivery_cut_short_completes_when_saleor_delivers_again() {
    let w = World::new("retry").await;
    // No operator yet: the Organization is created, its Wallet never comes, so the webhook answers 503.
    let webhook = w.webhook(&["--wallet-wait-seconds", "1"]).await;
    let body = w.fixture("order-fully-paid-wrapped.json");
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "provisioning_incomplete");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("cmp-operator is running"), "{answer}");
    assert_eq!(w.organizations().await.len(), 1, "the first step was done");

    let _operator = w.operator();
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["grantsAppended"], 2);
    assert_eq!(answer["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(w.organizations().await.len(), 1);
}

#[tokio::test]
async fn a_cancelled_order_suspends_its_instances_and_withdraws_its_unspent_credits_once() {
    let w = World::new("cancel").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;

    // A cancellation of an order never seen (an unpaid order, the common case) is answered 200 and creates nothing.
    let unpaid = w.body("order-cancelled.json", "OrderCancelled", "CANCELED", "NONE", |order| {
        order["id"] = json!("T3JkZXI6dW5wYWlk");
    });
    let (status, answer) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &unpaid).await;
    assert_eq!((status, answer["unknownOrder"].as_bool()), (200, Some(true)), "{answer}");
    assert!(w.organizations().await.is_empty());

    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &w.fixture("order-fully-paid.json")).await;
    assert_eq!(status, 200, "{answer}");
    let org = answer["organization"].as_str().expect("an organization").to_string();
    let ns = format!("cmp-{org}");
    let wallets = Api::<Wallet>::namespaced(w.client.clone(), &ns);
    converge("the starter grant", || async {
        let wallet = wallets.get(&org).await.ok()?;
        (wallet.status.as_ref()?.granted == 8000).then_some(())
    })
    .await;
    // A gateway replica spent 1,500: the starter's 1,000, then 500 of the plan's included credits.
    let meter = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet", "status": {"meters": [{
        "name": "gateway-test", "consumed": 1500, "runs": 1500, "lease": 0,
        "updatedAt": k8s_openapi::jiff::Timestamp::now().to_string()}]}});
    wallets.patch_status(&org, &PatchParams::apply("cmp-gateway-test"), &Patch::Apply(meter)).await.expect("a meter");

    let (status, answer) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &w.fixture("order-cancelled.json")).await;
    assert_eq!((status, answer["reversalsAppended"].as_u64()), (200, Some(2)), "{answer}");
    let (status, again) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &w.fixture("order-cancelled.json")).await;
    assert_eq!((status, again["reversalsAppended"].as_u64()), (200, Some(0)), "{again}");

    let instances =
        Api::<Instance>::namespaced(w.client.clone(), &ns).list(&ListParams::default()).await.expect("list");
    assert!(
        instances.items.iter().all(|i| cmp_crds::suspension::by_store(i).is_some() && !i.spec.suspended),
        "the order's Instances are suspended by the store, and the buyer's own flag is untouched"
    );
    let wallet = wallets.get(&org).await.expect("the Wallet");
    let withdrawn: Vec<i64> = wallet.spec.reversals.iter().map(|r| r.credits).collect();
    assert_eq!(withdrawn, vec![4500, 2000], "only what was unspent");
    assert_eq!(saleor_grants(&wallet).len(), 2, "the grants are untouched");
    converge("the balance without the withdrawn credits", || async {
        let status = wallets.get(&org).await.ok()?.status?;
        (status.granted == 8000 - 6500 && status.balance == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_placed_order_is_checked_and_creates_nothing() {
    let w = World::new("created").await;
    let webhook = w.webhook(&[]).await;
    let (status, answer) = w.deliver(&webhook, CREATED.0, CREATED.1, &w.fixture("order-created.json")).await;
    assert_eq!(status, 200, "{answer}");
    let problems = answer["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{answer}");
    assert!(problems[0].as_str().unwrap_or_default().contains("CMP-MUG"));
    assert!(w.organizations().await.is_empty(), "nothing is created before payment");
    let body = w.fixture("order-created.json");
    let order = cmp_webhook::payload::parse_order(cmp_webhook::payload::OrderEvent::Created, &body).expect("parses");
    let buyer = cmp_webhook::order_crs::organization_name(w.store.api_url(), &order).expect("a buyer");
    let found = Api::<Organization>::all(w.client.clone()).get_opt(&buyer).await.expect("the API server answers");
    assert!(found.is_none(), "no Organization {buyer} for an order not paid yet");
}
