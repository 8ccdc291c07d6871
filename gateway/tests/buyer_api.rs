//! The buyer API's keys and Wallet, with tokens from a real Keycloak, the
//! gateway as its chart identity (`gateway.buyerApi.enabled`: impersonation
//! only) and a real operator issuing the keys.
//!
//! - ada (an owner of Organization a) creates a key on her Instance: it is
//!   shown once, in the answer, and it runs the agent (charged); the listing
//!   shows it with no plaintext. She rotates it (the old key is refused, the
//!   new one runs) and revokes it (refused). She reads her Wallet, with the
//!   runs charged.
//! - vic, a Viewer of a, lists the keys and reads the Wallet, but cannot
//!   create, rotate or revoke (403 `not_permitted`); nothing changes.
//! - bob, an owner of Organization b, reads his own Wallet and nothing of
//!   a's: listing, creating, rotating and revoking a's keys and reading a's
//!   Wallet are refused (403 `wrong_tenant`); nothing changes.
//! - Bad input: a malformed key name or body (400), a name already there
//!   (409 `conflict`), an Instance or a key that does not exist (404), an
//!   API key instead of a token (401).

mod support;

use cmp_crds::Organization;
use cmp_testenv::keycloak::{CLIENT, Keycloak};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{OnStandIn, RUN_LABEL, converge, refusal};

#[tokio::test]
async fn buyers_create_rotate_and_revoke_keys_and_read_their_wallet_as_themselves_only() {
    let dir = std::env::temp_dir().join(format!("gw-buyer-api-keycloak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let keycloak = Keycloak::start(&dir, &[("ada", &[]), ("vic", &[]), ("bob", &[])]).await.expect("Keycloak starts");
    let OnStandIn { w, org, runtime: _runtime, operator: _operator, .. } =
        OnStandIn::start("gw-buyer", json!([{"id": "basic", "creditsPerRun": 3}]), 100).await;
    let organizations = Api::<Organization>::all(w.client.clone());
    organizations
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": [{"kind": "User", "name": "vic", "role": "Viewer"}]}})),
        )
        .await
        .expect("vic is a viewer");
    let other = format!("{}-b", w.run);
    let bobs = json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": other, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "bob's", "owners": [{"name": "bob"}], "starterCredits": 7},
    });
    organizations
        .patch(&other, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(bobs))
        .await
        .expect("bob's Organization applies");
    let issuer = keycloak.issuer();
    let flags = ["--oidc-issuer", &issuer, "--oidc-audience", CLIENT, "--oidc-username-claim", "preferred_username"];
    let gw = w.gateway("gw", &[&flags[..], &["--buyer-api"]].concat()).await;
    let http = &w.http;
    let tokens = |name: &'static str| keycloak.token(name);
    let (ada, vic, bob) =
        (tokens("ada").await.expect("ada"), tokens("vic").await.expect("vic"), tokens("bob").await.expect("bob"));
    let keys = |o: &str| format!("{}/v1/me/organizations/{o}/instances/bot/keys", gw.base);
    let get =
        |url: String, token: String| async move { http.get(url).bearer_auth(token).send().await.expect("answered") };
    let post = |url: String, token: String, body: Value| async move {
        http.post(url).bearer_auth(token).json(&body).send().await.expect("answered")
    };
    let bot_spec = || async { w.instances(&org).get("bot").await.expect("bot reads").spec.api_keys };
    let gw = &gw;
    let run = |key: String| async move { gw.post(http, "/v1/runs", &key, &json!({"input_value": "hi"})).await };

    // ada's RoleBindings come from the operator: wait until the API server lets her read.
    let listed = converge("bot's keys, read as ada", || async {
        let answer = get(keys(&org), ada.clone()).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    let body: Value = listed.json().await.expect("JSON");
    assert_eq!(body["keys"][0]["name"], "main");
    assert_eq!(body["keys"][0]["state"], "active");
    assert!(body["keys"][0].get("key").is_none(), "a listing never shows a plaintext: {body}");

    // Created: shown in the answer, and it runs the agent.
    let created = post(keys(&org), ada.clone(), json!({"name": "web"})).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    let web = created["key"].as_str().expect("the plaintext, once").to_string();
    assert_eq!(created["state"], "active");
    let status = w.instances(&org).get("bot").await.expect("bot").status.expect("status");
    let issued = status.api_keys.iter().find(|k| k.name == "web").expect("web issued");
    assert_eq!(issued.hash, cmp_crds::apikey::hash(&web), "the key shown is the key issued");
    assert_eq!(created["publicId"], issued.public_id.as_str());
    let charged = converge("a run with the new key (once the gateway's cache has it)", || async {
        let answer = run(web.clone()).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    assert_eq!(charged.headers()["x-credits-charged"], "3");
    let listed: Value = get(keys(&org), ada.clone()).await.json().await.expect("JSON");
    let web_listed = &listed["keys"].as_array().expect("keys").iter().find(|k| k["name"] == "web").cloned();
    let web_listed = web_listed.as_ref().expect("web listed");
    assert_eq!(web_listed["state"], "active");
    assert!(web_listed.get("key").is_none() && !listed.to_string().contains(&web), "never shown again: {listed}");

    // Refused as vic (a Viewer) and as bob (another tenant), with nothing changed.
    let before = bot_spec().await;
    let viewer_reads = get(keys(&org), vic.clone()).await;
    assert_eq!(viewer_reads.status(), 200, "a Viewer lists the keys");
    for (token, who, code, status) in [(&vic, "vic", "not_permitted", 403), (&bob, "bob", "wrong_tenant", 403)] {
        let create = post(keys(&org), token.clone(), json!({"name": "theirs"})).await;
        assert_eq!(refusal(create).await, (status, code.into()), "{who} creates");
        for verb in ["rotate", "revoke"] {
            let answer = post(format!("{}/web/{verb}", keys(&org)), token.clone(), json!({})).await;
            assert_eq!(refusal(answer).await, (status, code.into()), "{who} {verb}s");
        }
    }
    assert_eq!(refusal(get(keys(&org), bob.clone()).await).await, (403, "wrong_tenant".into()), "bob lists");
    assert_eq!(bot_spec().await, before, "nothing changed");
    assert_eq!(run(web.clone()).await.status(), 200, "web still runs");

    // Bad input: a clear error, and nothing made.
    let bad = [
        (post(keys(&org), ada.clone(), json!({"name": "Not_A_Name"})).await, (400, "malformed_request")),
        (post(keys(&org), ada.clone(), json!({"nom": "x"})).await, (400, "malformed_request")),
        (post(keys(&org), ada.clone(), json!({"name": "web"})).await, (409, "conflict")),
        (post(format!("{}/nokey/rotate", keys(&org)), ada.clone(), json!({})).await, (404, "not_found")),
        (post(keys(&org).replace("/bot/", "/nobody/"), ada.clone(), json!({"name": "x"})).await, (404, "not_found")),
        (post(keys(&org), web.clone(), json!({"name": "x"})).await, (401, "invalid_token")),
    ];
    for (answer, (status, code)) in bad {
        assert_eq!(refusal(answer).await, (status, code.to_string()));
    }
    assert_eq!(bot_spec().await, before, "nothing made by bad input");

    // Rotated: the old key stops, the new one is shown and runs.
    let rotated = post(format!("{}/web/rotate", keys(&org)), ada.clone(), json!({})).await;
    assert_eq!(rotated.status(), 201);
    let rotated: Value = rotated.json().await.expect("JSON");
    let web2 = rotated["key"].as_str().expect("the new plaintext").to_string();
    assert_ne!(web2, web);
    converge("the old key refused", || async { (run(web.clone()).await.status() == 401).then_some(()) }).await;
    converge("the new key runs", || async { (run(web2.clone()).await.status() == 200).then_some(()) }).await;

    // Revoked: refused.
    let revoked = post(format!("{}/web/revoke", keys(&org)), ada.clone(), json!({})).await;
    assert_eq!(revoked.status(), 200);
    converge("the revoked key refused", || async {
        let answer = run(web2.clone()).await;
        (answer.status() == 401).then_some(refusal(answer).await)
    })
    .await;
    let listed: Value = get(keys(&org), ada.clone()).await.json().await.expect("JSON");
    assert!(listed["keys"].as_array().expect("keys").iter().any(|k| k["name"] == "web" && k["state"] == "revoked"));

    // The Wallet: ada and vic read a's, with the runs charged (what the Wallet itself says); bob reads his own and
    // not a's.
    let wallet = |o: &str| format!("{}/v1/me/organizations/{o}/wallet", gw.base);
    let hers: Value = converge("a's Wallet with the runs charged, read as ada", || async {
        let body: Value = get(wallet(&org), ada.clone()).await.json().await.ok()?;
        let recorded = w.wallets(&org).get(&org).await.ok()?.status?.balance;
        (body["balance"] == recorded && recorded < 100).then_some(body)
    })
    .await;
    assert_eq!(hers["granted"], 100);
    assert_eq!(hers["consumed"].as_i64().map(|c| c % 3), Some(0), "runs of 3 credits each: {hers}");
    assert_eq!(hers["organization"], org.as_str());
    let viewed: Value = get(wallet(&org), vic.clone()).await.json().await.expect("JSON");
    assert_eq!(viewed["balance"], hers["balance"], "a Viewer reads the Wallet");
    assert_eq!(refusal(get(wallet(&org), bob.clone()).await).await, (403, "wrong_tenant".into()));
    let his: Value = converge("b's Wallet, read as bob", || async {
        let body: Value = get(wallet(&other), bob.clone()).await.json().await.ok()?;
        (body["balance"] == 7).then_some(body)
    })
    .await;
    assert_eq!(his["organization"], other.as_str());
}
