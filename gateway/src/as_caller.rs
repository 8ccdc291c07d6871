//! The buyer API's requests, made as the caller: each request to the API
//! server carries `Impersonate-User` and `Impersonate-Group` with the
//! caller's user name and groups (from their verified token, named as
//! Organizations list them), so the API server decides by the RBAC the
//! operator gives each Organization's people, and the gateway's own rights
//! (its watch caches) never answer a buyer. Names and groups the API server
//! reserves (`system:`) are never impersonated.
//!
//! [`as_caller`] wraps the gateway's client, so the caller's requests share
//! its connections; the headers are added to every request it sends.

use axum::http::{HeaderMap, HeaderValue};
use kube::Client;

use crate::oidc::Caller;
use crate::refusal::{Code, Refusal};

/// A client whose every request speaks as `caller`, unless its name or a group is reserved.
pub fn as_caller(client: &Client, caller: &Caller) -> Result<Client, Refusal> {
    caller.not_reserved()?;
    let mut headers = HeaderMap::new();
    headers.insert("impersonate-user", header_value(&caller.username)?);
    for group in &caller.groups {
        headers.append("impersonate-group", header_value(group)?);
    }
    let inner = client.clone();
    let service = tower::service_fn(move |mut request: axum::http::Request<kube::client::Body>| {
        let inner = inner.clone();
        for (name, value) in &headers {
            request.headers_mut().append(name, value.clone());
        }
        async move { inner.send(request).await }
    });
    Ok(Client::new(service, client.default_namespace()))
}

/// What the API server's refusal of a request made as the caller means to them; `what` names what was asked
/// (for example "reading Instance bot of Organization acme"). The caller was listed by the Organization before
/// anything was asked as them, so a 403 is their role, not their tenancy.
pub fn refusal(error: kube::Error, organization: &str, what: &str) -> Refusal {
    if let kube::Error::Api(e) = &error {
        tracing::info!(organization, what, code = e.code, reason = %e.message, "the API server refused a buyer's request");
    }
    match error {
        kube::Error::Api(e) if e.code == 403 => Refusal::new(
            Code::NotPermitted,
            format!(
                "your role in Organization {organization} does not allow {what} (or its RoleBindings are being \
                 made: try again shortly); its admins can change your role"
            ),
        ),
        kube::Error::Api(e) if e.code == 404 => Refusal::new(Code::NotFound, format!("{what}: not found")),
        kube::Error::Api(e) if e.code == 409 || e.code == 422 => Refusal::new(
            Code::Conflict,
            format!("{what}: it changed meanwhile ({}); read it again and retry", e.message),
        ),
        error => {
            tracing::warn!(%error, organization, what, "a buyer API request to the API server failed");
            let mut refusal = Refusal::new(
                Code::GatewayNotReady,
                format!("{what}: the API server did not answer; try again shortly"),
            );
            refusal.retry_after = Some(2);
            refusal
        }
    }
}

fn header_value(text: &str) -> Result<HeaderValue, Refusal> {
    HeaderValue::from_str(text)
        .map_err(|_| Refusal::new(Code::InvalidToken, "the token's user name or a group is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, groups: &[&str]) -> Caller {
        Caller {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            subject: None,
            display_name: None,
        }
    }

    #[test]
    fn reserved_names_and_groups_are_never_impersonated() {
        assert!(caller("ada@example.com", &["acme-devs"]).not_reserved().is_ok());
        for (name, groups) in [("system:admin", &[][..]), ("ada", &["system:masters"][..])] {
            let refused = caller(name, groups).not_reserved().expect_err("refused");
            assert_eq!(refused.code, Code::InvalidToken, "{name} {groups:?}");
            assert!(refused.message.contains("system:"), "{}", refused.message);
        }
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status { code, message: "m".into(), ..Default::default() }.boxed())
    }

    #[test]
    fn the_api_servers_refusals_become_the_buyer_apis() {
        let shown = |code| refusal(api_error(code), "acme", "creating a key").code;
        assert_eq!(shown(403), Code::NotPermitted);
        assert_eq!(shown(404), Code::NotFound);
        assert_eq!(shown(409), Code::Conflict);
        assert_eq!(shown(422), Code::Conflict);
        assert_eq!(shown(500), Code::GatewayNotReady);
        assert!(refusal(api_error(403), "acme", "creating a key").message.contains("Organization acme"));
    }
}
