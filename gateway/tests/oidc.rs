//! First-party callers with OIDC tokens from a real Keycloak: a member
//! (by group) runs the Organization's Instance through the path route; a
//! user the Organization does not list gets 403 `wrong_tenant`; forged,
//! truncated, foreign-audience and malformed tokens get 401
//! `invalid_token`; a token names no Instance on `/v1/runs` (400); and API
//! keys keep working beside tokens.

mod support;

use cmp_testenv::keycloak::{CLIENT, Keycloak};
use serde_json::json;
use support::{OnStandIn, refusal};

#[tokio::test]
async fn keycloak_tokens_run_the_instances_of_their_callers_organizations_only() {
    let dir = std::env::temp_dir().join(format!("gw-oidc-keycloak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let keycloak = Keycloak::start(&dir, &[("ada", &["acme-devs"]), ("eve", &[])]).await.expect("Keycloak starts");
    let OnStandIn { w, org, key, runtime: _runtime, operator: _operator, .. } =
        OnStandIn::start("gw-oidc", json!([{"id": "basic", "creditsPerRun": 1}]), 100).await;
    kube::Api::<cmp_crds::Organization>::all(w.client.clone())
        .patch(
            &org,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"members": [{"kind": "Group", "name": "acme-devs", "role": "Developer"}]}}),
            ),
        )
        .await
        .expect("the group is a member");
    let issuer = keycloak.issuer();
    let gw = w
        .gateway(
            "gw",
            &["--oidc-issuer", &issuer, "--oidc-audience", CLIENT, "--oidc-username-claim", "preferred_username"],
        )
        .await;
    let http = &w.http;
    let base = gw.base.clone();
    let run = |token: String, path: String| {
        let url = format!("{base}{path}");
        async move { http.post(url).bearer_auth(token).json(&json!({"input_value": "hi"})).send().await.expect("answered") }
    };
    let own = format!("/v1/instances/{org}/bot/runs");

    let ada = keycloak.token("ada").await.expect("ada's token");
    let answer = run(ada.clone(), own.clone()).await;
    assert_eq!(answer.status(), 200, "a member by group runs the Instance");
    assert_eq!(answer.headers()["x-credits-charged"], "1");

    let eve = keycloak.token("eve").await.expect("eve's token");
    assert_eq!(refusal(run(eve, own.clone()).await).await, (403, "wrong_tenant".into()));
    assert!(gw.process.log().contains("security_event=\"wrong_tenant\""));
    assert_eq!(
        refusal(run(ada.clone(), format!("/v1/instances/{org}/nobody/runs")).await).await,
        (404, "not_found".into())
    );
    assert_eq!(refusal(run(ada.clone(), "/v1/runs".into()).await).await, (400, "malformed_request".into()));

    // Forged: the payload changed after signing (another user), signature kept.
    let parts: Vec<&str> = ada.split('.').collect();
    let claims = base64_url(
        &json!({"iss": issuer, "aud": CLIENT, "exp": 4_000_000_000_i64, "preferred_username": "owner"}).to_string(),
    );
    let forged = format!("{}.{claims}.{}", parts[0], parts[2]);
    assert_eq!(refusal(run(forged, own.clone()).await).await, (401, "invalid_token".into()));
    let truncated = ada[..ada.len() - 10].to_string();
    assert_eq!(refusal(run(truncated, own.clone()).await).await, (401, "invalid_token".into()));
    assert_eq!(refusal(run("not-a-jwt".into(), own.clone()).await).await, (401, "invalid_token".into()));

    // A token for another audience: the gateway's client is not in aud without the mapper's client.
    let gw_other = w.gateway("gw-other-aud", &["--oidc-issuer", &issuer, "--oidc-audience", "someone-else"]).await;
    let other =
        http.post(format!("{}{own}", gw_other.base)).bearer_auth(&ada).json(&json!({})).send().await.expect("answered");
    assert_eq!(refusal(other).await, (401, "invalid_token".into()));

    // API keys keep working beside tokens.
    let by_key = gw.post(http, "/v1/runs", &key, &json!({"input_value": "k"})).await;
    assert_eq!(by_key.status(), 200);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
