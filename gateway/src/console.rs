//! The buyer console (`--console-client-id`): a small web app the gateway
//! serves at `/console/`, its assets built into the binary. It signs the
//! buyer in with the identity provider (authorization code with PKCE, as
//! the public client named by the flag; the provider must list
//! `<gateway>/console/` as a redirect URI and the gateway's origin as a web
//! origin) and shows what the buyer API answers: their Organizations, each
//! one's credits and grants, its agents with their state, and their API
//! keys (created, rotated and revoked there; a new key's plaintext shown
//! once, in the answer that issued it).
//!
//! The page's Content-Security-Policy lets it run only its own script and
//! talk only to the gateway and the identity provider, and it puts every
//! text from the API into the page as text, never as markup.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

use crate::refusal::{Code, Refusal};
use crate::routes::refused;
use crate::state::Gateway;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

/// What the console's script needs to sign a buyer in: served as `/console/config.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Console {
    /// The identity provider's issuer.
    pub issuer: String,
    /// The public client the console signs in as.
    pub client_id: String,
    /// The provider's authorization endpoint (from its discovery document).
    pub authorization_endpoint: String,
    /// The provider's token endpoint (from its discovery document).
    pub token_endpoint: String,
    /// The provider's logout endpoint, when it has one: signing out of the console ends the provider's session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
}

impl Console {
    /// The console of `client_id` from the issuer's discovery `document`; an error names the missing endpoint.
    pub fn from_discovery(issuer: &str, client_id: &str, document: &serde_json::Value) -> Result<Self, String> {
        let endpoint = |name: &str| {
            document[name]
                .as_str()
                .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
                .map(String::from)
                .ok_or_else(|| format!("the discovery document of {issuer} has no {name}: the console cannot sign in"))
        };
        Ok(Self {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            end_session_endpoint: endpoint("end_session_endpoint").ok(),
        })
    }

    /// The page's Content-Security-Policy: its own script and style, and requests to the gateway and to the
    /// identity provider's token endpoint only.
    pub fn content_security_policy(&self) -> String {
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' {}; \
             form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
            origin(&self.token_endpoint)
        )
    }
}

/// `scheme://host[:port]` of a URL (pure).
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The console's routes (404 `not_found` when it is off).
pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|state| asset(state, "text/html; charset=utf-8", INDEX)))
        .route("/console/app.js", get(|state| asset(state, "text/javascript; charset=utf-8", SCRIPT)))
        .route("/console/app.css", get(|state| asset(state, "text/css; charset=utf-8", STYLE)))
        .route("/console/config.json", get(config))
}

fn console(gateway: &Gateway) -> Result<&Console, Refusal> {
    gateway.console.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "the console is off (--console-client-id)"))
}

async fn asset(State(gateway): State<Arc<Gateway>>, content_type: &'static str, body: &'static str) -> Response {
    match console(&gateway) {
        Ok(console) => with_headers(body.into_response(), content_type, console),
        Err(refusal) => refused(refusal),
    }
}

async fn config(State(gateway): State<Arc<Gateway>>) -> Response {
    match console(&gateway) {
        Ok(console) => with_headers(axum::Json(console.clone()).into_response(), "application/json", console),
        Err(refusal) => refused(refusal),
    }
}

fn with_headers(mut response: Response, content_type: &'static str, console: &Console) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(policy) = HeaderValue::from_str(&console.content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_console_takes_its_endpoints_from_discovery_and_talks_only_to_them() {
        let document = json!({"authorization_endpoint": "https://sso.example/realms/cmp/protocol/openid-connect/auth",
                              "token_endpoint": "https://sso.example:8443/realms/cmp/protocol/openid-connect/token"});
        let console =
            Console::from_discovery("https://sso.example/realms/cmp", "cmp-console", &document).expect("a console");
        assert_eq!(console.end_session_endpoint, None, "optional");
        let policy = console.content_security_policy();
        assert!(policy.contains("connect-src 'self' https://sso.example:8443;"), "{policy}");
        assert!(policy.contains("script-src 'self';") && policy.contains("default-src 'none'"), "{policy}");
        let missing = Console::from_discovery("https://sso.example", "c", &json!({"token_endpoint": "https://x/t"}));
        assert!(missing.expect_err("refused").contains("authorization_endpoint"));
    }

    #[test]
    fn the_script_never_puts_api_text_into_the_page_as_markup() {
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!SCRIPT.contains(sink), "app.js uses {sink}");
        }
    }
}
