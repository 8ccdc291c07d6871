//! The buyer console in a real browser (Debian's headless Chromium through
//! ChromeDriver), signing in through a real Keycloak's login page as the
//! public client `cmp-console` (authorization code with PKCE), beside a
//! real operator and the gateway as its chart identity.
//!
//! ada signs in, sees her Organization (whose display name carries markup
//! and script: shown as text, nothing of it runs), her agent and its state,
//! and her credits; she creates a key, which the page shows once and which
//! runs the agent; after a reload the key is listed and its plaintext is
//! nowhere in the page. An access token that stopped verifying is renewed
//! with the refresh token; signing out ends Keycloak's session too. A
//! screenshot of the console is kept in
//! `<target>/tmp/test-artefacts/console.png`.

mod support;

use cmp_crds::Organization;
use cmp_testenv::browser::Browser;
use cmp_testenv::keycloak::{CLIENT, CONSOLE_CLIENT, Keycloak};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{OnStandIn, converge};

const HOSTILE_NAME: &str = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>Acme";

#[tokio::test]
async fn a_buyer_signs_in_sees_their_agent_and_credits_and_gets_a_key_shown_once() {
    let dir = std::env::temp_dir().join(format!("gw-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let keycloak = Keycloak::start(&dir, &[("ada", &[])]).await.expect("Keycloak starts");
    let OnStandIn { w, org, runtime: _runtime, operator: _operator, .. } =
        OnStandIn::start("gw-console", json!([{"id": "basic", "creditsPerRun": 2}]), 100).await;
    Api::<Organization>::all(w.client.clone())
        .patch(&org, &PatchParams::default(), &Patch::Merge(json!({"spec": {"displayName": HOSTILE_NAME}})))
        .await
        .expect("the display name changes");
    let issuer = keycloak.issuer();
    let flags = [
        "--oidc-issuer",
        &issuer,
        "--oidc-audience",
        CLIENT,
        "--oidc-username-claim",
        "preferred_username",
        "--buyer-api",
        "--console-client-id",
        CONSOLE_CLIENT,
    ];
    let gw = w.gateway("gw", &flags).await;

    let browser = Browser::start(&dir.join("browser")).await.expect("Chromium starts");
    let console = format!("{}/console/", gw.base);
    browser.goto(&console).await.expect("the console loads");
    let sign_in = browser.wait_for("#sign-in-button", 30).await.expect("a sign-in button");
    browser.click(&sign_in).await.expect("click");

    // Keycloak's own login page.
    let username = browser.wait_for("#username", 60).await.expect("Keycloak's login form");
    assert!(browser.url().await.expect("url").starts_with(&issuer), "on the identity provider's page");
    browser.type_into(&username, "ada").await.expect("typed");
    let password = browser.wait_for("#password", 5).await.expect("a password field");
    browser.type_into(&password, "ada-pass").await.expect("typed");
    browser.click(&browser.wait_for("#kc-login", 5).await.expect("a log-in button")).await.expect("click");

    // Back on the console, signed in. ada owns other Organizations of the shared test cluster: she picks this
    // one (the console remembers it); its RoleBindings may take a moment, so reload until the agent shows.
    let option = browser.wait_for(&format!("#organization option[value='{org}']"), 30).await.expect("her Organization");
    browser.click(&option).await.expect("picked");
    let agent = "article[data-instance='bot']";
    converge("the console showing ada's agent", || async {
        if browser.wait_for(agent, 10).await.is_ok() {
            return Some(());
        }
        browser.goto(&console).await.ok()?;
        None
    })
    .await;
    let page = browser.text_of_page().await.expect("the page's text");
    assert!(page.contains("Signed in as ada"), "{page}");
    assert!(page.contains(HOSTILE_NAME), "the display name shown as text: {page}");
    assert!(page.contains("Ready"), "the agent's state: {page}");
    let injected = browser
        .execute(
            "return [document.title, document.querySelectorAll('img').length, document.querySelectorAll('script').length]",
            json!([]),
        )
        .await
        .expect("the page answers");
    assert_eq!(injected, json!(["CMP console", 0, 1]), "nothing of the name ran or became markup");

    // A key, shown once.
    let name = browser.wait_for("#key-name-bot", 5).await.expect("the new key's name field");
    browser.type_into(&name, "browser").await.expect("typed");
    let create = browser.wait_for(&format!("{agent} button[type='submit']"), 5).await.expect("a create button");
    browser.click(&create).await.expect("click");
    let shown = browser.wait_for("output[data-key-plaintext='browser']", 40).await.expect("the key shown");
    let key = browser.text(&shown).await.expect("its text");
    let status = w.instances(&org).get("bot").await.expect("bot").status.expect("status");
    let issued = status.api_keys.iter().find(|k| k.name == "browser").expect("issued");
    assert_eq!(issued.hash, cmp_crds::apikey::hash(&key), "the key shown is the key issued");
    converge("a run with the key from the console", || async {
        let answer = gw.post(&w.http, "/v1/runs", &key, &json!({"input_value": "hi"})).await;
        (answer.status() == 200).then_some(())
    })
    .await;
    let artefact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artefacts/console.png");
    browser.screenshot(&artefact).await.expect("a screenshot");
    eprintln!("the console's screenshot: {}", artefact.display());

    // After a reload: listed, never shown again; the balance is the Wallet's.
    browser.goto(&console).await.expect("reloads");
    browser.wait_for(&format!("{agent} tr[data-key='browser']"), 30).await.expect("the key listed");
    let anywhere = browser
        .execute("return document.documentElement.outerHTML.includes(arguments[0])", json!([key]))
        .await
        .expect("the page answers");
    assert_eq!(anywhere, json!(false), "the plaintext is nowhere in the page after a reload");
    converge("the run charged to the Wallet", || async {
        (w.wallets(&org).get(&org).await.ok()?.status?.balance < 100).then_some(())
    })
    .await;
    converge("the console's balance at the Wallet's", || async {
        browser.goto(&console).await.ok()?;
        let shown = browser.wait_for("#balance", 20).await.ok()?;
        let text = browser.text(&shown).await.ok()?;
        let recorded = w.wallets(&org).get(&org).await.ok()?.status?.balance;
        (text == recorded.to_string()).then_some(())
    })
    .await;

    // An access token that no longer verifies is renewed with the refresh token, without signing in again.
    browser
        .execute("sessionStorage.setItem('cmp.console.token', 'not-a-token-any-more')", json!([]))
        .await
        .expect("the token spoiled");
    browser.goto(&console).await.expect("reloads");
    browser.wait_for(agent, 30).await.expect("the agent, with a renewed token");

    // Signing out ends the provider's session too: the next sign-in asks for the password again.
    browser.click(&browser.wait_for("#sign-out", 5).await.expect("a sign-out button")).await.expect("click");
    let again = browser.wait_for("#sign-in-button", 30).await.expect("signed out, back on the console");
    assert!(browser.url().await.expect("url").starts_with(&console), "back on the console");
    browser.click(&again).await.expect("click");
    browser.wait_for("#username", 30).await.expect("Keycloak asks for the password again");

    // Last (its chart identity, without the buyer API, replaces the first gateway's): no console without the flag.
    let without = w.gateway("gw-off", &[]).await;
    let off = w.http.get(format!("{}/console/", without.base)).send().await.expect("answered");
    assert_eq!(off.status(), 404, "no console without --console-client-id");
}
