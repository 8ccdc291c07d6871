//! Forged or broken deliveries are refused with a clear status and code,
//! and touch no object; a key rotation is followed; the app manifest and
//! the registration behave as Saleor expects.

mod support;

use cmp_testenv::saleor::send;
use cmp_testenv::test::TestNamespace;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::Value;
use support::World;

const ROUTE: &str = "order-fully-paid";
const EVENT: &str = "order_fully_paid";

async fn post(w: &World, url: &str, api_url: &str, event: &str, signature: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut headers =
        vec![("saleor-event", event), ("saleor-api-url", api_url), ("saleor-domain", "store.example.com")];
    if let Some(signature) = signature {
        headers.push(("saleor-signature", signature));
    }
    send(&w.http, url, &headers, body).await.expect("answered")
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let script = "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), body).expect("write");
    let out = child.wait_with_output().expect("python3 answers");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn forged_or_broken_deliveries_are_refused_and_change_nothing() {
    let w = World::new("refused").await;
    let webhook = w.webhook(&["--max-body-bytes", "8192"]).await;
    let url = webhook.url(ROUTE);
    let api_url = w.store.api_url().to_string();
    let body = w.fixture("order-fully-paid.json");
    let good = w.store.sign(&body).expect("signed");

    let mut cases: Vec<(&str, (u16, Value), u16, &str)> = Vec::new();
    cases.push(("no signature", post(&w, &url, &api_url, EVENT, None, &body).await, 401, "invalid_signature"));
    let other = w.store.sign(b"{\"order\": {\"id\": \"other\"}}").expect("signed");
    cases.push((
        "another body's signature",
        post(&w, &url, &api_url, EVENT, Some(&other), &body).await,
        401,
        "invalid_signature",
    ));
    let truncated = &good[..good.len() - 12];
    cases.push((
        "a truncated signature",
        post(&w, &url, &api_url, EVENT, Some(truncated), &body).await,
        401,
        "invalid_signature",
    ));
    let (_, rest) = good.split_once("..").expect("a detached JWS");
    let wrong_kid = format!(
        "{}..{rest}",
        base64_url(br#"{"alg":"RS256","b64":false,"crit":["b64"],"kid":"not-a-key-of-this-store","typ":"JWT"}"#)
    );
    // A kid the store's JWKS does not list may be a key rotation under way: never a final 401, which
    // Saleor would not retry, but 503 while it is unknown (the JWKS is refetched, rate-limited).
    cases.push((
        "a kid the store does not list (yet)",
        post(&w, &url, &api_url, EVENT, Some(&wrong_kid), &body).await,
        503,
        "signing_key_unknown",
    ));
    let mut changed = body.clone();
    changed.extend_from_slice(b" ");
    cases.push((
        "a body changed after signing",
        post(&w, &url, &api_url, EVENT, Some(&good), &changed).await,
        401,
        "invalid_signature",
    ));
    let hex = hmac_hex("shared", &body);
    cases.push((
        "HMAC where none is configured",
        post(&w, &url, &api_url, EVENT, Some(&hex), &body).await,
        401,
        "invalid_signature",
    ));
    cases.push((
        "an API URL off the allow-list",
        post(&w, &url, "https://evil.example.com/graphql/", EVENT, Some(&good), &body).await,
        401,
        "api_url_not_allowed",
    ));
    cases.push((
        "a paid body with a cancellation's headers, on the cancellation route",
        post(&w, &webhook.url("order-cancelled"), &api_url, "order_cancelled", Some(&good), &body).await,
        400,
        "event_mismatch",
    ));
    cases.push((
        "an unknown event",
        post(&w, &url, &api_url, "order_updated", Some(&good), &body).await,
        400,
        "unknown_event",
    ));
    cases.push((
        "another event's route",
        post(&w, &webhook.url("order-cancelled"), &api_url, EVENT, Some(&good), &body).await,
        400,
        "event_mismatch",
    ));
    let big = format!("{{\"order\": {{\"id\": \"O1\", \"pad\": \"{}\"}}}}", "x".repeat(9000)).into_bytes();
    let big_signed = w.store.sign(&big).expect("signed");
    cases.push((
        "a body over the limit",
        post(&w, &url, &api_url, EVENT, Some(&big_signed), &big).await,
        413,
        "body_too_large",
    ));
    for (what, broken, expected) in [
        ("malformed JSON", &b"{\"order\": {\"id\": "[..], "malformed_payload"),
        ("no order id", &b"{\"order\": {\"number\": \"1\", \"lines\": []}}"[..], "missing_order_id"),
        ("a JSON array", &b"[{\"id\": \"O1\"}]"[..], "malformed_payload"),
    ] {
        let signature = w.store.sign(broken).expect("signed");
        cases.push((what, post(&w, &url, &api_url, EVENT, Some(&signature), broken).await, 400, expected));
    }
    for (what, (status, answer), expected_status, expected_code) in &cases {
        assert_eq!((*status, code(answer)), (*expected_status, *expected_code), "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{what}: the refusal says why: {answer}");
    }
    assert!(w.organizations().await.is_empty(), "no refused delivery created anything");
    let log = webhook.process.log();
    let logged = log.matches("delivery refused").count() + log.matches("delivery not done; Saleor will retry").count();
    assert!(logged >= cases.len(), "each refusal is logged:\n{log}");
}

#[tokio::test]
async fn a_rotated_store_key_is_fetched_once_and_accepted() {
    let w = World::new("rotate").await;
    let webhook = w.webhook(&[]).await;
    let body = w.fixture("order-created.json");
    let (status, answer) = w.deliver(&webhook, "order-created", "order_created", &body).await;
    assert_eq!(status, 200, "{answer}");
    let fetched = w.store.jwks_fetches();
    assert_eq!(fetched, 1);
    w.store.rotate().expect("rotated");
    // The first check after the rotation must wait out the refetch interval (1 s here).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, answer) = w.deliver(&webhook, "order-created", "order_created", &body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = w.deliver(&webhook, "order-created", "order_created", &body).await;
    assert_eq!(status, 200);
    assert_eq!(w.store.jwks_fetches(), fetched + 1, "one refetch for the new kid, then cached");
}

#[tokio::test]
async fn legacy_hmac_is_accepted_only_where_configured() {
    let w = World::new("hmac").await;
    let webhook = w.webhook(&["--saleor-hmac-secret", "shared-secret"]).await;
    let url = webhook.url("order-created");
    let body = w.fixture("order-created.json");
    let api_url = w.store.api_url().to_string();
    let good = hmac_hex("shared-secret", &body);
    let (status, answer) = post(&w, &url, &api_url, "order_created", Some(&good), &body).await;
    assert_eq!(status, 200, "{answer}");
    let bad = hmac_hex("another-secret", &body);
    let (status, answer) = post(&w, &url, &api_url, "order_created", Some(&bad), &body).await;
    assert_eq!((status, code(&answer)), (401, "invalid_signature"), "{answer}");
}

#[tokio::test]
async fn the_manifest_is_served_and_registration_keeps_the_app_token_in_a_secret() {
    let w = World::new("install").await;
    let ns = TestNamespace::create(&w.client, "webhook-install").await.expect("namespace");
    let webhook = w.webhook(&["--namespace", &ns.name, "--public-url", "https://cmp.example.com"]).await;
    let manifest: Value = w
        .http
        .get(format!("{}/saleor/manifest", webhook.base))
        .send()
        .await
        .expect("manifest")
        .json()
        .await
        .expect("JSON");
    assert_eq!(manifest["tokenTargetUrl"], "https://cmp.example.com/saleor/register");
    assert_eq!(manifest["permissions"], serde_json::json!(["MANAGE_ORDERS", "MANAGE_PRODUCTS"]));
    assert_eq!(manifest["webhooks"].as_array().map(Vec::len), Some(6));
    // The app's page answers (Saleor's dashboard shows it).
    let page = w.http.get(format!("{}/saleor/app", webhook.base)).send().await.expect("the app page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap_or_default().contains("CMP is installed"));

    let register = format!("{}/saleor/register", webhook.base);
    let headers = [("saleor-api-url", "https://evil.example.com/graphql/")];
    let (status, _) = send(&w.http, &register, &headers, br#"{"auth_token": "stolen"}"#).await.expect("answered");
    assert_eq!(status, 401, "only an allow-listed store registers");
    let headers = [("saleor-api-url", w.store.api_url())];
    let secrets = Api::<Secret>::namespaced(w.client.clone(), &ns.name);
    let secret_name = cmp_webhook::manifest::token_secret_name(w.store.api_url());
    // A token the store did not issue to the app (anyone may send the allow-listed header) is not kept.
    let (status, answer) = send(&w.http, &register, &headers, br#"{"auth_token": "made-up"}"#).await.expect("answered");
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("token_rejected")), "{answer}");
    assert!(secrets.get_opt(&secret_name).await.expect("the API server answers").is_none());
    w.store.issue_token("app-token-1");
    let (status, answer) =
        send(&w.http, &register, &headers, br#"{"auth_token": "app-token-1"}"#).await.expect("answered");
    assert_eq!(status, 200, "{answer}");
    let stored = || async {
        let secret = secrets.get(&secret_name).await.expect("the token Secret");
        secret.data.and_then(|d| d.get("authToken").cloned()).expect("authToken").0
    };
    assert_eq!(stored().await, b"app-token-1");
    // A later registration with a token the store refuses leaves the kept one.
    let (status, _) = send(&w.http, &register, &headers, br#"{"auth_token": "stolen"}"#).await.expect("answered");
    assert_eq!(status, 401);
    assert_eq!(stored().await, b"app-token-1", "the old token stays");
    let (status, _) = send(&w.http, &register, &headers, b"{}").await.expect("answered");
    assert_eq!(status, 400, "a registration without a token is refused");
    ns.delete().await.expect("cleanup");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
