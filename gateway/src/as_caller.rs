//! The buyer API's reads, made as the caller: each request to the API server
//! carries `Impersonate-User` and `Impersonate-Group` with the caller's user
//! name and groups (from their verified token, named as Organizations list
//! them), so the API server decides by the RBAC the operator gives each
//! Organization's people, and the gateway's own rights (its watch caches)
//! never answer a buyer. Names and groups the API server reserves
//! (`system:`) are never impersonated.

use cmp_crds::names::control_namespace;
use kube::Client;
use kube::core::{ObjectList, Request};
use serde::de::DeserializeOwned;

use crate::oidc::Caller;
use crate::refusal::{Code, Refusal};

/// A client that speaks as one caller.
pub struct AsCaller<'a> {
    client: &'a Client,
    caller: &'a Caller,
}

impl<'a> AsCaller<'a> {
    /// Speaks as `caller`, unless its name or a group is reserved.
    pub fn new(client: &'a Client, caller: &'a Caller) -> Result<Self, Refusal> {
        caller.not_reserved()?;
        Ok(Self { client, caller })
    }

    /// Lists `K` (a namespaced kind) in `organization`'s control namespace, as the caller: 403 `wrong_tenant` when
    /// the API server refuses them.
    pub async fn list_in<K>(&self, organization: &str) -> Result<Vec<K>, Refusal>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let url = K::url_path(&(), Some(&control_namespace(organization)));
        let mut request = Request::new(url)
            .list(&Default::default())
            .map_err(|e| Refusal::new(Code::MalformedRequest, e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert("impersonate-user", header_value(&self.caller.username)?);
        for group in &self.caller.groups {
            headers.append("impersonate-group", header_value(group)?);
        }
        match self.client.request::<ObjectList<K>>(request).await {
            Ok(list) => Ok(list.items),
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => Err(Refusal::new(
                Code::WrongTenant,
                format!("Organization {organization} does not list you (or it does not exist)"),
            )),
            Err(error) => {
                tracing::warn!(%error, organization, "a buyer API read failed");
                let mut refusal =
                    Refusal::new(Code::GatewayNotReady, "the API server did not answer the read: try again shortly");
                refusal.retry_after = Some(2);
                Err(refusal)
            }
        }
    }
}

fn header_value(text: &str) -> Result<axum::http::HeaderValue, Refusal> {
    axum::http::HeaderValue::from_str(text)
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
}
