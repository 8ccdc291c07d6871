//! The webhook acts only on an order's true state, as its signed body says
//! it: the real webhook binary (as the chart's identity), the real operator
//! and API server, with bodies of the new query shape signed by PyJWT.
//! Each test is a regression of a finding against a real Saleor 3.21 store.

mod support;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::chart_identity::DEFAULT_NAMESPACE;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use support::{World, converge};

const ROUTES: [(&str, &str); 6] = [
    ("order-created", "order_created"),
    ("order-confirmed", "order_confirmed"),
    ("order-fully-paid", "order_fully_paid"),
    ("order-cancelled", "order_cancelled"),
    ("order-refunded", "order_refunded"),
    ("order-fully-refunded", "order_fully_refunded"),
];
const PAID: (&str, &str) = ROUTES[2];
const CANCELLED: (&str, &str) = ROUTES[3];
const REFUNDED: (&str, &str) = ROUTES[4];
const FULLY_REFUNDED: (&str, &str) = ROUTES[5];

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

/// The record of a withdrawn order, if the webhook kept one.
async fn record(w: &World, body: &[u8]) -> Option<ConfigMap> {
    let order = cmp_webhook::payload::parse_order(cmp_webhook::payload::OrderEvent::Cancelled, body).expect("parses");
    let key = cmp_webhook::order_crs::order_key(w.store.api_url(), &order.id);
    Api::<ConfigMap>::namespaced(w.client.clone(), DEFAULT_NAMESPACE)
        .get_opt(&cmp_webhook::order_record::record_name(&key))
        .await
        .expect("the API server answers")
}

async fn instances(w: &World, org: &str) -> Vec<Instance> {
    let ns = cmp_crds::names::control_namespace(org);
    Api::<Instance>::namespaced(w.client.clone(), &ns).list(&ListParams::default()).await.expect("list").items
}

#[tokio::test]
async fn a_signed_body_acts_only_on_its_own_route_and_only_as_far_as_the_order_is_paid() {
    let w = World::new("replay").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;

    // The genuine ORDER_CREATED body of an unpaid order, posted to every route with matching headers.
    let unpaid = w.body("order-created.json", "OrderCreated", "UNFULFILLED", "NONE", |_| {});
    for (route, event) in ROUTES {
        let (status, answer) = w.deliver(&webhook, route, event, &unpaid).await;
        if route == "order-created" {
            assert_eq!(status, 200, "{answer}");
        } else {
            assert_eq!((status, code(&answer)), (400, "event_mismatch"), "{route}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("OrderCreated"), "{answer}");
        }
    }
    // Every event's signed body posted to every other event's route (with that route's headers): refused.
    for (n, signed) in
        ["OrderCreated", "OrderConfirmed", "OrderFullyPaid", "OrderCancelled", "OrderRefunded", "OrderFullyRefunded"]
            .into_iter()
            .enumerate()
    {
        let body = w.body("order-fully-paid.json", signed, "CANCELED", "FULL", |order| {
            order["id"] = json!(format!("T3JkZXI6bWF0cml4-{n}"));
        });
        for (route, event) in ROUTES.into_iter().filter(|(_, event)| *event != ROUTES[n].1) {
            let (status, answer) = w.deliver(&webhook, route, event, &body).await;
            assert_eq!((status, code(&answer)), (400, "event_mismatch"), "{signed} on {route}: {answer}");
        }
    }
    // Its ORDER_FULLY_PAID body while nothing is charged (as no genuine store sends it): nothing is done.
    let not_charged = w.body("order-fully-paid.json", "OrderFullyPaid", "UNFULFILLED", "NONE", |_| {});
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &not_charged).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["nothingDone"].as_str().unwrap_or_default().contains("chargeStatus is NONE"), "{answer}");
    assert!(w.organizations().await.is_empty(), "no refused or unpaid delivery created anything");

    // The order paid: provisioned. Its paid body posted to the withdrawing routes changes nothing.
    let paid = w.fixture("order-fully-paid.json");
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &paid).await;
    assert_eq!(status, 200, "{answer}");
    let org = answer["organization"].as_str().unwrap_or_else(|| panic!("an Organization: {answer}")).to_string();
    for (route, event) in [CANCELLED, REFUNDED, FULLY_REFUNDED] {
        let (status, answer) = w.deliver(&webhook, route, event, &paid).await;
        assert_eq!((status, code(&answer)), (400, "event_mismatch"), "{route}: {answer}");
    }
    // A cancellation the store does not show (status still UNFULFILLED) withdraws nothing either.
    let not_cancelled = w.body("order-cancelled.json", "OrderCancelled", "UNFULFILLED", "FULL", |_| {});
    let (status, answer) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &not_cancelled).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["nothingDone"].as_str().unwrap_or_default().contains("not CANCELED"), "{answer}");
    assert!(record(&w, &paid).await.is_none(), "nothing is remembered");
    let found = instances(&w, &org).await;
    assert_eq!(found.len(), 1);
    assert!(cmp_crds::suspension::of_instance(&found[0], None).is_none(), "the paid order's Instance still runs");
    let wallet = Api::<Wallet>::namespaced(w.client.clone(), &cmp_crds::names::control_namespace(&org))
        .get(&org)
        .await
        .expect("the Wallet");
    assert!(wallet.spec.reversals.is_empty(), "no credit was withdrawn");
}

#[tokio::test]
async fn a_cancellation_that_arrives_first_wins_and_a_body_of_an_older_install_is_kept_by_saleor() {
    let w = World::new("first").await;
    // A record past its retention (400 days by default) is swept when the webhook starts.
    let expired_order = w.body("order-cancelled.json", "OrderCancelled", "CANCELED", "NONE", |order| {
        order["id"] = json!(format!("{}-expired", w.run));
    });
    let parsed =
        cmp_webhook::payload::parse_order(cmp_webhook::payload::OrderEvent::Cancelled, &expired_order).expect("parses");
    let key = cmp_webhook::order_crs::order_key(w.store.api_url(), &parsed.id);
    let long_ago = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(24 * 401);
    let old_record = cmp_webhook::order_record::record(
        DEFAULT_NAMESPACE,
        w.store.api_url(),
        &key,
        &parsed,
        cmp_webhook::order_state::Withdrawal::Cancelled,
        long_ago,
    );
    let records = Api::<ConfigMap>::namespaced(w.client.clone(), DEFAULT_NAMESPACE);
    records.create(&Default::default(), &old_record).await.expect("an expired record");
    let webhook = w.webhook(&[]).await;
    converge("the expired record swept", || async { record(&w, &expired_order).await.is_none().then_some(()) }).await;

    // A body of the queries an older install sends: no event, no status. Never acted on; Saleor keeps it (503).
    let mut old: Value = serde_json::from_slice(&w.fixture("order-fully-paid.json")).expect("JSON");
    old.as_object_mut().expect("an object").remove("__typename");
    old["order"].as_object_mut().expect("an object").remove("status");
    let old = serde_json::to_vec(&old).expect("JSON");
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &old).await;
    assert_eq!((status, code(&answer)), (503, "order_state_unknown"), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("__typename") && message.contains("order.status"), "names what is missing: {message}");
    let metrics = webhook.process.metrics().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l == "cmp_webhook_saleor_deliveries_state_unknown_total{event=\"order_fully_paid\"} 1"),
        "{metrics}"
    );
    let (status, answer) = w.deliver(&webhook, "order-created", "order_created", &old).await;
    assert_eq!(status, 200, "a check creates nothing, so an older body is still checked: {answer}");
    // No app token was registered for this store, so its webhooks cannot be updated: counted and logged.
    converge("the sync counted without a token", || async {
        let metrics = webhook.process.metrics().await?;
        metrics.contains("cmp_webhook_store_webhook_syncs_total{result=\"no_token\"} 1").then_some(())
    })
    .await;

    // CMP was down: the store cancelled the unpaid order, then (wrongly) took a payment. The cancellation
    // arrives first, is answered 2xx and remembered; the payment then provisions nothing.
    let cancelled = w.body("order-cancelled.json", "OrderCancelled", "CANCELED", "NONE", |_| {});
    let (status, answer) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &cancelled).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["unknownOrder"].as_bool(), answer["remembered"].as_bool()), (Some(true), Some(true)));
    let kept = record(&w, &cancelled).await.expect("the cancellation is recorded");
    assert_eq!(kept.data.as_ref().and_then(|d| d.get("state")).map(String::as_str), Some("Cancelled"));
    let paid = w.fixture("order-fully-paid.json");
    for _ in 0..2 {
        let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &paid).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["nothingDone"].as_str().unwrap_or_default().contains("cancelled"), "{answer}");
    }
    assert!(w.organizations().await.is_empty(), "a cancelled order is never provisioned");
    // A second cancellation keeps the first record.
    let (status, _) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &cancelled).await;
    assert_eq!(status, 200);
    let again = record(&w, &cancelled).await.expect("still recorded");
    assert_eq!(again.resource_version(), kept.resource_version(), "the first record is kept, not rewritten");
}

#[tokio::test]
async fn no_paid_order_is_lost_in_a_rolling_key_rotation() {
    let w = World::new("rolling").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;
    let order = |n: usize| {
        w.body("order-fully-paid-guest.json", "OrderFullyPaid", "UNFULFILLED", "FULL", |order| {
            order["id"] = json!(format!("T3JkZXI6cm9sbGluZy0{n}"));
        })
    };
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &order(1)).await;
    assert_eq!(status, 200, "{answer}");

    // The store signs with a new key before its JWKS lists it: 503 (Saleor retries), never a final 401.
    let rotated = w.store.rotate_unpublished().expect("rotated");
    let mut held = Vec::new();
    for n in [2, 3] {
        let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &order(n)).await;
        assert_eq!((status, code(&answer)), (503, "signing_key_unknown"), "order {n}: {answer}");
        held.push(n);
    }
    // The store serves the new key; Saleor's retries (past the refetch interval) go through.
    w.store.set(rotated);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for n in held {
        let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &order(n)).await;
        assert_eq!(status, 200, "order {n}: {answer}");
    }
    // A known key whose signature does not match stays 401.
    let signature = w.store.sign(&order(4)).expect("signed");
    let (status, answer) = cmp_testenv::saleor::send(
        &w.http,
        &webhook.url(PAID.0),
        &[("saleor-event", PAID.1), ("saleor-api-url", w.store.api_url()), ("saleor-signature", &signature)],
        &order(5),
    )
    .await
    .expect("answered");
    assert_eq!((status, code(&answer)), (401, "invalid_signature"), "{answer}");
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &order(4)).await;
    assert_eq!(status, 200, "{answer}");
    let orgs = w.organizations().await;
    assert_eq!(orgs.len(), 1, "one guest buyer");
    assert_eq!(instances(&w, &orgs[0].name_any()).await.len(), 4, "every paid order has its Instance");
}

#[tokio::test]
async fn refunds_withdraw_the_refunded_lines_and_a_full_refund_acts_as_a_cancellation() {
    let w = World::new("refund").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;
    let paid = w.fixture("order-fully-paid.json");
    let order: Value = serde_json::from_slice(&paid).expect("JSON");
    let pack_line = order["order"]["lines"][1]["id"].as_str().expect("the pack line").to_string();
    let fulfillment = |id: &str, quantity: i64| json!({"id": id, "status": "REFUNDED", "lines": [{"id": format!("{id}-1"), "quantity": quantity, "orderLine": {"id": pack_line}}]});
    let one = w.body("order-fully-paid.json", "OrderRefunded", "UNFULFILLED", "OVERCHARGED", |order| {
        order["fulfillments"] = json!([fulfillment("RnVsZmlsbG1lbnQ6MQ==", 1)]);
    });
    // The refund arrives before the payment (CMP was down for both): 503, nothing is created, Saleor keeps it.
    let (status, answer) = w.deliver(&webhook, REFUNDED.0, REFUNDED.1, &one).await;
    assert_eq!((status, code(&answer)), (503, "order_not_provisioned_yet"), "{answer}");
    assert!(w.organizations().await.is_empty(), "nothing was created for the refund");

    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &paid).await;
    assert_eq!(status, 200, "{answer}");
    let org = answer["organization"].as_str().unwrap_or_else(|| panic!("an Organization: {answer}")).to_string();

    // "Refund products": one of the two credit packs. Withdrawn once, however often it is delivered.
    let (status, answer) = w.deliver(&webhook, REFUNDED.0, REFUNDED.1, &one).await;
    assert_eq!((status, answer["reversalsAppended"].as_u64()), (200, Some(1)), "{answer}");
    let (status, answer) = w.deliver(&webhook, REFUNDED.0, REFUNDED.1, &one).await;
    assert_eq!((status, answer["reversalsAppended"].as_u64()), (200, Some(0)), "a redelivery: {answer}");
    // An amount-only refund names no line: nothing is withdrawn, and the answer says why.
    let amount_only = w.body("order-fully-paid.json", "OrderRefunded", "UNFULFILLED", "PARTIAL", |_| {});
    let (status, answer) = w.deliver(&webhook, REFUNDED.0, REFUNDED.1, &amount_only).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["nothingDone"].as_str().unwrap_or_default().contains("amount-only"), "{answer}");

    // Refunded in full (a fulfilled order cannot be cancelled): as a cancellation, and remembered.
    let full = w.body("order-fully-paid.json", "OrderFullyRefunded", "FULFILLED", "NONE", |order| {
        order["fulfillments"] = json!([fulfillment("RnVsZmlsbG1lbnQ6MQ==", 1)]);
    });
    let (status, answer) = w.deliver(&webhook, FULLY_REFUNDED.0, FULLY_REFUNDED.1, &full).await;
    assert_eq!((status, answer["reversalsAppended"].as_u64()), (200, Some(2)), "{answer}");
    assert!(
        instances(&w, &org)
            .await
            .iter()
            .all(|i| cmp_crds::suspension::by_store(i) == Some("order #1042 refunded in full")),
        "the order's Instance is suspended by the store"
    );
    let wallets = Api::<Wallet>::namespaced(w.client.clone(), &cmp_crds::names::control_namespace(&org));
    let wallet = wallets.get(&org).await.expect("the Wallet");
    let withdrawn: Vec<i64> = wallet.spec.reversals.iter().map(|r| r.credits).collect();
    assert_eq!(withdrawn, [1000, 5000, 1000], "the refunded pack, then what the order had left");
    converge("the balance without the order's credits", || async {
        let status = wallets.get(&org).await.ok()?.status?;
        (status.granted == 8000 - 7000).then_some(())
    })
    .await;
    let kept = record(&w, &full).await.expect("the full refund is recorded");
    assert_eq!(kept.data.as_ref().and_then(|d| d.get("state")).map(String::as_str), Some("FullyRefunded"));
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &paid).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["nothingDone"].as_str().unwrap_or_default().contains("refunded in full"), "{answer}");
}

#[tokio::test]
async fn a_store_installed_before_gets_its_webhooks_brought_up_to_date_with_the_app_token() {
    use cmp_webhook::manifest::subscription_query;
    use cmp_webhook::payload::OrderEvent;
    let w = World::new("resync").await;
    let webhook = w.webhook(&[]).await;
    w.store.issue_token("app-token-resync");
    let (status, answer) = cmp_testenv::saleor::send(
        &w.http,
        &format!("{}/saleor/register", webhook.base),
        &[("saleor-api-url", w.store.api_url())],
        br#"{"auth_token": "app-token-resync"}"#,
    )
    .await
    .expect("answered");
    assert_eq!(status, 200, "{answer}");
    // What an install of the earlier manifest made: three webhooks without the event's type or the order's state.
    let old = |id: &str, event: OrderEvent| {
        json!({"id": id, "name": "CMP", "isActive": true,
            "targetUrl": format!("http://cmp.old.example.com/saleor/webhooks/{}", event.route_segment()),
            "asyncEvents": [{"eventType": event.manifest_name()}],
            "subscriptionQuery": format!("subscription {{ event {{ ... on {} {{ order {{ id }} }} }} }}", event.graphql_type())})
    };
    w.store.set_webhooks(vec![
        old("W1", OrderEvent::Created),
        old("W2", OrderEvent::FullyPaid),
        old("W3", OrderEvent::Cancelled),
    ]);

    let mut body: Value = serde_json::from_slice(&w.fixture("order-fully-paid.json")).expect("JSON");
    body.as_object_mut().expect("an object").remove("__typename");
    let body = serde_json::to_vec(&body).expect("JSON");
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
    assert_eq!((status, code(&answer)), (503, "order_state_unknown"), "{answer}");
    let hooks = converge("the store's webhooks up to date", || async {
        let hooks = w.store.webhooks();
        let current = OrderEvent::ALL.into_iter().all(|event| {
            hooks.iter().any(|h| {
                h["subscriptionQuery"].as_str() == Some(subscription_query(event).as_str())
                    && h["asyncEvents"] == json!([{"eventType": event.manifest_name()}])
                    && h["targetUrl"].as_str().is_some_and(|url| url.ends_with(event.route_segment()))
            })
        });
        (current && hooks.len() == 6).then_some(hooks)
    })
    .await;
    let ids: Vec<&str> = hooks.iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(&ids[..3], ["W1", "W2", "W3"], "the installed webhooks are updated in place, keeping their deliveries");
    assert_eq!(w.store.mutations(), 6, "three updated, three created");
    let created = &hooks[3];
    assert_eq!(
        created["targetUrl"].as_str(),
        Some("http://127.0.0.1:8090/saleor/webhooks/order-confirmed"),
        "a new webhook delivers to --public-url (its default here): {created}"
    );
    // Another older body at once: answered 503 again, and no second sync within the interval (the gate
    // decides before the answer, and counts what it skipped).
    let (status, _) = w.deliver(&webhook, PAID.0, PAID.1, &body).await;
    assert_eq!(status, 503);
    let metrics = webhook.process.metrics().await.unwrap_or_default();
    assert!(metrics.contains("cmp_webhook_store_webhook_syncs_total{result=\"skipped_recent\"} 1"), "{metrics}");
    assert!(metrics.contains("cmp_webhook_store_webhook_syncs_total{result=\"updated\"} 1"), "{metrics}");
    assert_eq!(w.store.mutations(), 6);
}

#[tokio::test]
async fn a_buyer_cannot_undo_the_stores_suspension_and_keeps_their_own_flag() {
    use cmp_crds::names::{STORE_SUSPENSION_ANNOTATION, control_namespace};
    use kube::api::{Patch, PatchParams, PostParams};
    cmp_testenv::chart_identity::apply_policies(&cmp_testenv::test::test_kubeconfig(), "store-suspension")
        .expect("the chart's store-suspension policy");
    let w = World::new("undo").await;
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;
    let (status, answer) = w.deliver(&webhook, PAID.0, PAID.1, &w.fixture("order-fully-paid.json")).await;
    assert_eq!(status, 200, "{answer}");
    let org = answer["organization"].as_str().unwrap_or_else(|| panic!("an Organization: {answer}")).to_string();
    let name = answer["instances"][0].as_str().expect("an Instance").to_string();
    let ns = control_namespace(&org);
    let (status, answer) = w.deliver(&webhook, CANCELLED.0, CANCELLED.1, &w.fixture("order-cancelled.json")).await;
    assert_eq!(status, 200, "{answer}");

    // The buyer: the order's e-mail, the Organization's owner, with the admin role in its namespace.
    let buyer = cmp_testenv::test::client_as("ada@example.com", &[]).await;
    let as_buyer = Api::<Instance>::namespaced(buyer, &ns);
    let lift = Patch::Merge(json!({"metadata": {"annotations": {STORE_SUSPENSION_ANNOTATION: null}}}));
    let refusal = converge("the buyer refused lifting the store's suspension", || async {
        match as_buyer.patch(&name, &PatchParams::default().dry_run(), &lift).await {
            Err(kube::Error::Api(status)) if status.message.contains("only the store's provisioner") => Some(status),
            _ => None,
        }
    })
    .await;
    assert!(refusal.message.contains("order #1042 cancelled"), "the refusal names the suspension: {refusal:?}");
    assert!(as_buyer.patch(&name, &PatchParams::default(), &lift).await.is_err());
    let rewrite = Patch::Merge(json!({"metadata": {"annotations": {STORE_SUSPENSION_ANNOTATION: ""}}}));
    assert!(as_buyer.patch(&name, &PatchParams::default(), &rewrite).await.is_err(), "nor blanking it");
    // Their own flag is theirs: set and cleared, the store's suspension holds.
    for own in [true, false] {
        let flag = Patch::Merge(json!({"spec": {"suspended": own}}));
        as_buyer.patch(&name, &PatchParams::default(), &flag).await.expect("the buyer's own spec.suspended");
    }
    let instance = as_buyer.get(&name).await.expect("the buyer reads their Instance");
    assert_eq!(cmp_crds::suspension::by_store(&instance), Some("order #1042 cancelled"));
    assert!(!instance.spec.suspended);
    // Nor can they make a suspension of their own look like the store's.
    let mut copy: Instance = serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "copy", "namespace": ns, "annotations": {STORE_SUSPENSION_ANNOTATION: "made up"}},
        "spec": {"project": "default", "offering": w.offering, "version": "1", "plan": "pro"}
    }))
    .expect("an Instance");
    assert!(as_buyer.create(&PostParams::default(), &copy).await.is_err(), "creating one with it is refused");
    copy.metadata.annotations = None;
    copy.metadata.name = Some("mine".into());
    as_buyer.create(&PostParams::default(), &copy).await.expect("an Instance without it is the buyer's to create");

    // The operator says the Instance does not serve, and why.
    let admin = Api::<Instance>::namespaced(w.client.clone(), &ns);
    converge("Ready=False SuspendedByStore", || async {
        let status = admin.get(&name).await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == "SuspendedByStore").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_suspension_the_provisioner_wrote_in_spec_before_moves_to_the_stores_annotation() {
    use cmp_crds::names::{PROVISIONER_MANAGER, SALEOR_ORDER_LABEL, SALEOR_ORDER_NUMBER_ANNOTATION};
    use kube::api::{Patch, PatchParams, PostParams};
    let w = World::new("moved").await;
    let ns = cmp_testenv::test::TestNamespace::create(&w.client, "moved").await.expect("a namespace");
    let instance = |name: &str| -> Instance {
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": name, "namespace": ns.name, "labels": {SALEOR_ORDER_LABEL: w.run},
                "annotations": {SALEOR_ORDER_NUMBER_ANNOTATION: "77"}},
            "spec": {"project": "default", "offering": w.offering, "version": "1", "plan": "pro"}
        }))
        .expect("an Instance")
    };
    let api = Api::<Instance>::namespaced(w.client.clone(), &ns.name);
    let by = |manager: &str| PatchParams { field_manager: Some(manager.into()), ..PatchParams::default() };
    let suspend = Patch::Merge(json!({"spec": {"suspended": true}}));
    // As the provisioner suspended a cancelled order's Instance before, and as a buyer suspends their own.
    for (name, manager) in [("cancelled", PROVISIONER_MANAGER), ("own", "kubectl-edit")] {
        api.create(
            &PostParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PostParams::default() },
            &instance(name),
        )
        .await
        .expect("created");
        api.patch(name, &by(manager), &suspend).await.expect("suspended");
    }
    let _webhook = w.webhook(&[]).await;
    let moved = converge("the provisioner's suspension moved", || async {
        let moved = api.get("cancelled").await.ok()?;
        cmp_crds::suspension::by_store(&moved).is_some().then_some(moved)
    })
    .await;
    assert_eq!(cmp_crds::suspension::by_store(&moved), Some("order #77 cancelled"));
    assert!(!moved.spec.suspended, "spec.suspended is the buyer's again");
    let own = api.get("own").await.expect("the buyer's");
    assert!(own.spec.suspended && cmp_crds::suspension::by_store(&own).is_none(), "the buyer's own suspension stays");
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn a_paid_line_whose_offering_is_not_ready_is_reported_once_on_the_organization() {
    use cmp_crds::Offering;
    use kube::api::{Patch, PatchParams};
    let w = World::new("unready").await;
    // A version whose artifact cannot match: the Offering is never Ready.
    let offerings = Api::<Offering>::all(w.client.clone());
    let mut offering = offerings.get(&w.offering).await.expect("the Offering");
    offering.spec.versions[0].artifact.sha256 = "0".repeat(64);
    offering.metadata.managed_fields = None;
    offering.status = None;
    offerings
        .patch(&w.offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(&offering))
        .await
        .expect("the Offering changes");
    let _operator = w.operator();
    let webhook = w.webhook(&[]).await;
    let paid = w.fixture("order-fully-paid.json");
    let mut answer = Value::Null;
    for _ in 0..2 {
        let (status, delivered) = w.deliver(&webhook, PAID.0, PAID.1, &paid).await;
        assert_eq!(status, 200, "{delivered}");
        answer = delivered;
    }
    let waiting = answer["waiting"].as_array().expect("waiting lines");
    assert_eq!(waiting.len(), 1, "the plan line: {answer}");
    assert!(waiting[0].as_str().unwrap_or_default().contains("is not Ready"), "{answer}");
    assert_eq!(answer["instances"].as_array().map(Vec::len), Some(1), "its Instance is created and waits");
    let org = answer["organization"].as_str().expect("an Organization");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(w.client.clone(), "default");
    let found = events
        .list(&ListParams::default().fields(&format!("regarding.name={org}")))
        .await
        .expect("Events list")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("OrderLineOfferingNotReady"))
        .count();
    assert_eq!(found, 1, "one Event for the line, however often it is delivered");
    let metrics = webhook.process.metrics().await.unwrap_or_default();
    assert!(metrics.contains("cmp_webhook_order_lines_offering_not_ready_total 2"), "{metrics}");
}
