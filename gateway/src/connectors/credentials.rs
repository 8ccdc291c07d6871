//! A binding's credential, read by the gateway from OpenBao at the binding's
//! `vaultPath` (inside the tenant's prefix, which the CRD and the operator
//! check, and which is checked again here before any read) and kept for a
//! short while. It goes only into the header the
//! binding names on the request to its MCP server: never into an answer to
//! the runtime, never into a log (errors name where it was looked for).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cmp_core::secrets::{SecretRef, SecretSource};
use cmp_crds::instance::{ConnectorBinding, CredentialPresentation};

/// How long a credential read is reused.
pub const CACHED_FOR: Duration = Duration::from_secs(30);

/// Reads and briefly keeps tenants' credentials.
pub struct Credentials {
    source: Arc<dyn SecretSource>,
    mount: String,
    cache: Mutex<HashMap<SecretRef, (String, Instant)>>,
}

impl Credentials {
    /// Credentials read through `source` from the KV v2 mount `mount`.
    pub fn new(source: Arc<dyn SecretSource>, mount: &str) -> Self {
        Self { source, mount: mount.to_string(), cache: Mutex::default() }
    }

    /// The header and value `binding` of a Project `project` of `organization` presents its credential with. A
    /// `vaultPath` outside that tenant's prefix is never read, whoever asks: the gateway's role reads every tenant's.
    pub async fn presented(
        &self,
        organization: &str,
        project: &str,
        binding: &ConnectorBinding,
    ) -> Result<(String, String), String> {
        if !cmp_crds::connectors::inside_tenant(organization, project, binding) {
            let prefix = cmp_crds::names::connector_prefix(organization, project);
            return Err(format!(
                "the binding {} names {}, outside {prefix}: not read",
                binding.name, binding.vault_path
            ));
        }
        let presentation = binding.credential.clone().unwrap_or_default();
        let CredentialPresentation { header, format, key } = presentation;
        let reference = SecretRef::OpenBao { mount: self.mount.clone(), path: binding.vault_path.clone(), key };
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.get(&reference).filter(|(_, at)| at.elapsed() < CACHED_FOR).map(|(v, _)| v.clone())
        };
        let secret = match cached {
            Some(secret) => secret,
            None => {
                let secret = self
                    .source
                    .read(&reference)
                    .await
                    .map_err(|e| format!("the credential of binding {} could not be read: {e}", binding.name))?;
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                cache.retain(|_, (_, at)| at.elapsed() < CACHED_FOR);
                cache.insert(reference, (secret.clone(), Instant::now()));
                secret
            }
        };
        if secret.contains(['\r', '\n']) {
            return Err(format!(
                "the credential of binding {} holds a line break; it cannot be sent in a header",
                binding.name
            ));
        }
        Ok((header, format.replace("{secret}", &secret)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_core::secrets::FakeSecrets;

    fn binding(credential: Option<serde_json::Value>) -> ConnectorBinding {
        serde_json::from_value(serde_json::json!({
            "name": "desk", "type": "tickets", "vaultPath": "connectors/acme/support/desk", "credential": credential,
        }))
        .expect("a binding")
    }

    #[tokio::test]
    async fn the_credential_is_presented_as_the_binding_says() {
        let fake = Arc::new(FakeSecrets::default());
        let at = |key: &str| SecretRef::OpenBao {
            mount: "secret".into(),
            path: "connectors/acme/support/desk".into(),
            key: key.into(),
        };
        fake.put(at("token"), "t-123");
        fake.put(at("apikey"), "k-456");
        let credentials = Credentials::new(fake, "secret");
        assert_eq!(
            credentials.presented("acme", "support", &binding(None)).await,
            Ok(("Authorization".into(), "Bearer t-123".into()))
        );
        let custom = binding(Some(serde_json::json!({"header": "X-Api-Key", "format": "{secret}", "key": "apikey"})));
        assert_eq!(credentials.presented("acme", "support", &custom).await, Ok(("X-Api-Key".into(), "k-456".into())));
        let missing = binding(Some(serde_json::json!({"key": "nothing"})));
        let error = credentials.presented("acme", "support", &missing).await.expect_err("missing");
        assert!(error.contains("connectors/acme/support/desk") && !error.contains("t-123"), "{error}");
        // Another tenant's binding naming this path is never read, whichever step asks.
        let theft = credentials.presented("globex", "support", &binding(None)).await.expect_err("refused");
        assert!(theft.contains("outside connectors/globex/support/") && !theft.contains("t-123"), "{theft}");
        let sideways = credentials.presented("acme", "sales", &binding(None)).await.expect_err("refused");
        assert!(sideways.contains("outside connectors/acme/sales/"), "{sideways}");
    }
}
