//! Sign-up on first login, with tokens from a real Keycloak and the gateway
//! as the chart's identity (`gateway.signup.enabled`), beside a real
//! operator. The gateway's user name claim is `email`, as a platform whose
//! store orders own Organizations by e-mail sets it.
//!
//! - ada's first `GET /v1/me` creates her Organization (owner: her verified
//!   address, the starter credits configured, the default Project); the
//!   operator grants the credits once; her next calls, and two at once of a
//!   new user, make no second one.
//! - bob, whose address owns an Organization a store order made, gets that
//!   one and no new one.
//! - mallory, whose account claims bob's address unverified, is refused
//!   (403 `unverified_account`) and nothing is created.
//! - An API key, a forged token and no credential are refused (401), and a
//!   replica over `--signup-per-minute` answers 429 and creates nothing.
//! - The buyer API reads as the caller (`--buyer-api`, impersonation): ada
//!   lists her Organization's Instances once the operator's RoleBindings let
//!   her, and is refused bob's (403 `wrong_tenant`), and bob the other way
//!   round.

mod support;

use cmp_crds::names::SIGNUP_SUBJECT_ANNOTATION;
use cmp_crds::{Organization, Project};
use cmp_testenv::keycloak::{Account, CLIENT, Keycloak};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{RUN_LABEL, World, converge, refusal};

const STARTER: i64 = 250;

/// The Organizations of this run whose owners include `email`.
async fn owned_by(w: &World, email: &str) -> Vec<Organization> {
    let selector = format!("{RUN_LABEL}={}", w.run);
    let all = Api::<Organization>::all(w.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("Organizations list");
    all.items.into_iter().filter(|o| o.spec.owners.iter().any(|owner| owner.name == email)).collect()
}

#[tokio::test]
async fn a_first_login_signs_up_once_and_a_verified_store_buyer_gets_their_own_organization() {
    let w = World::new("gw-signup").await;
    let _operator = w.operator();
    let email = |name: &str| format!("{name}-{}@example.com", w.run);
    let accounts: Vec<Account> = ["ada", "bob", "cy", "dee", "eve"]
        .into_iter()
        .map(|name| Account { email: email(name), ..Account::new(name, &["buyers"]) })
        .chain([Account { email: email("bob"), email_verified: false, ..Account::new("mallory", &[]) }])
        .collect();
    let dir = std::env::temp_dir().join(format!("gw-signup-keycloak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let keycloak = Keycloak::start_with(&dir, &accounts).await.expect("Keycloak starts");
    let issuer = keycloak.issuer();
    let label = format!("{RUN_LABEL}={}", w.run);
    let flags = |per_minute: &'static str| {
        [
            "--oidc-issuer",
            issuer.as_str(),
            "--oidc-audience",
            CLIENT,
            "--oidc-username-claim",
            "email",
            "--signup",
            "--signup-starter-credits",
            "250",
            "--signup-organization-label",
            label.as_str(),
            "--signup-per-minute",
            per_minute,
        ]
    };
    let gw = w.gateway("gw", &[&flags("30")[..], &["--buyer-api"]].concat()).await;
    let http = &w.http;
    let me = |base: String, token: String| async move {
        http.get(format!("{base}/v1/me")).bearer_auth(token).send().await.expect("the gateway answers")
    };

    // A store order made bob's Organization, owned by his e-mail address, before he ever signed in.
    let store_org = format!("{}-store", w.run);
    let org = json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": store_org, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "bob's store order", "owners": [{"name": email("bob")}]},
    });
    Api::<Organization>::all(w.client.clone())
        .patch(&store_org, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(org))
        .await
        .expect("the store's Organization applies");

    // ada's first call signs her up.
    let ada = keycloak.token("ada").await.expect("ada's token");
    let first = me(gw.base.clone(), ada.clone()).await;
    assert_eq!(first.status(), 201, "the first call creates");
    let body: Value = first.json().await.expect("JSON");
    assert_eq!(body["user"], email("ada"));
    assert_eq!(body["signedUp"], true);
    let created = body["organizations"][0]["name"].as_str().expect("an Organization").to_string();
    assert!(created.starts_with("user-"), "{body}");
    assert_eq!(body["organizations"][0]["role"], "Owner");
    assert_eq!(body["organizations"][0]["displayName"], "ada Test");
    assert_eq!(body["organizations"][0]["namespace"], format!("cmp-{created}"));

    let orgs = owned_by(&w, &email("ada")).await;
    assert_eq!(orgs.len(), 1, "one Organization for ada");
    let org = &orgs[0];
    assert_eq!(org.name_any(), created);
    assert_eq!(org.spec.starter_credits, Some(STARTER));
    assert_eq!(org.spec.billing_email.as_deref(), Some(email("ada").as_str()));
    assert!(org.annotations()[SIGNUP_SUBJECT_ANNOTATION].starts_with(&format!("{issuer}#")));
    let projects = Api::<Project>::namespaced(w.client.clone(), &format!("cmp-{created}"));
    assert!(projects.get_opt("default").await.expect("read").is_some(), "the default Project is there");
    let wallet = converge("ada's Wallet with the starter credits", || async {
        let wallet = w.wallets(&created).get_opt(&created).await.ok().flatten()?;
        (wallet.status.as_ref()?.balance == STARTER).then_some(wallet)
    })
    .await;
    assert_eq!(wallet.spec.grants.iter().map(|g| g.credits).sum::<i64>(), STARTER, "granted once");

    // Later calls find it, and make nothing more.
    let again = converge("ada's Organization in the gateway's cache", || async {
        let answer = me(gw.base.clone(), ada.clone()).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    let body: Value = again.json().await.expect("JSON");
    assert_eq!(body["signedUp"], false);
    assert_eq!(body["organizations"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["organizations"][0]["name"], created.as_str());
    assert_eq!(owned_by(&w, &email("ada")).await.len(), 1);

    // A sign-up whose default Project is missing (as when the operator was too slow for the first call) gets it
    // on the next call.
    projects.delete("default", &Default::default()).await.expect("the Project deletes");
    converge("ada's default Project made again by a later call", || async {
        me(gw.base.clone(), ada.clone()).await;
        projects.get_opt("default").await.ok().flatten()
    })
    .await;

    // Two first calls at once (cy): one Organization.
    let cy = keycloak.token("cy").await.expect("cy's token");
    let (a, b) = tokio::join!(me(gw.base.clone(), cy.clone()), me(gw.base.clone(), cy.clone()));
    let statuses = [a.status().as_u16(), b.status().as_u16()];
    let names: Vec<Value> = [a.json::<Value>().await.expect("JSON"), b.json::<Value>().await.expect("JSON")]
        .iter()
        .map(|body| body["organizations"][0]["name"].clone())
        .collect();
    assert!(statuses.iter().all(|s| [200, 201].contains(s)), "{statuses:?}");
    assert_eq!(names[0], names[1], "both calls answer the same Organization");
    assert_eq!(owned_by(&w, &email("cy")).await.len(), 1, "one Organization for cy");

    // bob's verified address owns the store's Organization: that is his, and no new one is made.
    let bob = keycloak.token("bob").await.expect("bob's token");
    let answer = me(gw.base.clone(), bob).await;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["signedUp"], false);
    assert_eq!(body["organizations"][0]["name"], store_org.as_str());
    assert_eq!(body["organizations"][0]["role"], "Owner");
    assert_eq!(owned_by(&w, &email("bob")).await.len(), 1, "only the store's");

    // mallory claims bob's address without verifying it: refused, and nothing is made.
    let mallory = keycloak.token("mallory").await.expect("mallory's token");
    assert_eq!(refusal(me(gw.base.clone(), mallory).await).await, (403, "unverified_account".into()));
    assert_eq!(owned_by(&w, &email("bob")).await.len(), 1, "mallory made nothing");

    // Credentials that are not a valid token of the issuer.
    let key_like = format!("{}someid_somesecret", cmp_crds::apikey::PREFIX);
    assert_eq!(refusal(me(gw.base.clone(), key_like).await).await, (401, "invalid_token".into()));
    let parts: Vec<&str> = ada.split('.').collect();
    let claims = base64_url(
        &json!({"iss": "https://elsewhere.example/realms/cmp", "aud": CLIENT, "exp": 4_000_000_000_i64,
                "sub": "x", "email": email("eve"), "email_verified": true})
        .to_string(),
    );
    let forged = format!("{}.{claims}.{}", parts[0], parts[2]);
    assert_eq!(refusal(me(gw.base.clone(), forged).await).await, (401, "invalid_token".into()));
    let bare = http.get(format!("{}/v1/me", gw.base)).send().await.expect("answered");
    assert_eq!(refusal(bare).await.0, 401);
    assert!(owned_by(&w, &email("eve")).await.is_empty(), "no Organization for refused calls");

    // The buyer API reads as the caller: the API server answers by the Organizations' RBAC.
    let instance = json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "bot", "namespace": format!("cmp-{created}")},
        "spec": {"project": "default", "offering": "not-in-the-catalog", "version": "1.0.0", "plan": "basic",
                 "apiKeys": [{"name": "main"}]},
    });
    Api::<cmp_crds::Instance>::namespaced(w.client.clone(), &format!("cmp-{created}"))
        .patch("bot", &PatchParams::apply("cmp-tests").force(), &Patch::Apply(instance))
        .await
        .expect("ada's Instance applies");
    let bob = keycloak.token("bob").await.expect("bob's token");
    let instances_of = |base: String, token: String, org: String| async move {
        let url = format!("{base}/v1/me/organizations/{org}/instances");
        http.get(url).bearer_auth(token).send().await.expect("the gateway answers")
    };
    let listed = converge("ada's Instances, read as ada (once the operator's RoleBindings are there)", || async {
        let answer = instances_of(gw.base.clone(), ada.clone(), created.clone()).await;
        if answer.status() != 200 {
            return None;
        }
        let body: Value = answer.json().await.ok()?;
        (body["instances"].as_array()?.len() == 1).then_some(body)
    })
    .await;
    let bot = &listed["instances"][0];
    assert_eq!(bot["name"], "bot");
    assert_eq!(bot["offering"], "not-in-the-catalog");
    assert_eq!(bot["apiKeys"], json!(["main"]));
    assert_eq!(bot["ready"], false, "its Offering is not in the catalog");
    assert_eq!(bot["runs"], format!("/v1/instances/{created}/bot/runs"));
    let theirs = instances_of(gw.base.clone(), ada.clone(), store_org.clone()).await;
    assert_eq!(refusal(theirs).await, (403, "wrong_tenant".into()), "ada reads nothing of bob's");
    let own = converge("bob's Instances, read as bob", || async {
        let answer = instances_of(gw.base.clone(), bob.clone(), store_org.clone()).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    let body: Value = own.json().await.expect("JSON");
    assert_eq!(body["instances"], json!([]), "bob's Organization has none, and ada's are not his");
    let hers = instances_of(gw.base.clone(), bob.clone(), created.clone()).await;
    assert_eq!(refusal(hers).await, (403, "wrong_tenant".into()), "bob reads nothing of ada's");
    let malformed = instances_of(gw.base.clone(), ada.clone(), "Not_A_Name".into()).await;
    assert_eq!(refusal(malformed).await, (404, "not_found".into()));

    // A replica allowed one sign-up a minute: dee signs up, eve is told to come back, and nothing is made for her.
    let slow = w.gateway("gw-slow", &flags("1")).await;
    let off = instances_of(slow.base.clone(), ada.clone(), created.clone()).await;
    assert_eq!(refusal(off).await, (404, "not_found".into()), "a replica without --buyer-api does not read");
    let dee = keycloak.token("dee").await.expect("dee's token");
    assert_eq!(me(slow.base.clone(), dee).await.status(), 201);
    let eve = keycloak.token("eve").await.expect("eve's token");
    let limited = me(slow.base.clone(), eve).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(refusal(limited).await, (429, "rate_limited".into()));
    assert!(owned_by(&w, &email("eve")).await.is_empty());
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
