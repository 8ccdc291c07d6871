//! OpenBao (Vault) KV v2 reads as a process's own identity: a token given
//! to it, or a Kubernetes-auth login with its ServiceAccount token, made
//! when first needed, again before the login's lease runs out, and again
//! once when OpenBao answers 403 (the token was revoked or expired early).
//! The gateway reads connector credentials this way as `cmp.gateway.connectors`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::secrets::{SecretError, SecretRef, SecretSource};

/// How the process proves who it is to OpenBao.
#[derive(Debug, Clone)]
pub enum OpenBaoAuth {
    /// A token (development, tests).
    Token(String),
    /// A Kubernetes-auth login: the auth method's path, the role, and the file of the ServiceAccount token.
    Kubernetes {
        /// The auth method's path, for example "kubernetes".
        mount: String,
        /// The role, for example "cmp.gateway.connectors".
        role: String,
        /// The projected ServiceAccount token.
        jwt_file: PathBuf,
    },
}

/// KV v2 reads from OpenBao at `addr` as the identity of `auth`.
pub struct OpenBaoReader {
    addr: String,
    auth: OpenBaoAuth,
    session: tokio::sync::Mutex<Option<(VaultClient, Instant)>>,
}

impl OpenBaoReader {
    /// A reader of OpenBao at `addr`, logging in with `auth` when first used.
    pub fn new(addr: &str, auth: OpenBaoAuth) -> Self {
        Self { addr: addr.to_string(), auth, session: tokio::sync::Mutex::new(None) }
    }

    async fn login(&self) -> Result<(VaultClient, Instant), String> {
        let settings = |token: &str| {
            VaultClientSettingsBuilder::default()
                .address(&self.addr)
                .token(token)
                .timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| format!("the OpenBao address {} is not usable: {e}", self.addr))
        };
        match &self.auth {
            OpenBaoAuth::Token(token) => {
                let client = VaultClient::new(settings(token)?).map_err(|e| e.to_string())?;
                Ok((client, Instant::now() + Duration::from_secs(365 * 24 * 3600)))
            }
            OpenBaoAuth::Kubernetes { mount, role, jwt_file } => {
                let jwt = std::fs::read_to_string(jwt_file).map_err(|e| {
                    format!(
                        "reading the ServiceAccount token {}: {e} (is the token projected into the pod?)",
                        jwt_file.display()
                    )
                })?;
                let mut client = VaultClient::new(settings("")?).map_err(|e| e.to_string())?;
                let auth = vaultrs::auth::kubernetes::login(&client, mount, role, jwt.trim()).await.map_err(|e| {
                    format!("logging in to OpenBao as role {role} with Kubernetes auth at {mount}: {e}")
                })?;
                vaultrs::client::Client::set_token(&mut client, &auth.client_token);
                let lease = Duration::from_secs(auth.lease_duration.max(60));
                Ok((client, Instant::now() + lease * 4 / 5))
            }
        }
    }

    async fn read_kv(&self, reference: &SecretRef, mount: &str, path: &str, key: &str) -> Result<String, SecretError> {
        let unreadable = |reason: String| SecretError::Unreadable { what: reference.to_string(), reason };
        for attempt in 0..2 {
            let mut session = self.session.lock().await;
            if session.as_ref().is_none_or(|(_, renew_at)| Instant::now() >= *renew_at) {
                *session = Some(self.login().await.map_err(unreadable)?);
            }
            let Some((client, _)) = session.as_ref() else { continue };
            let read: Result<HashMap<String, String>, ClientError> = vaultrs::kv2::read(client, mount, path).await;
            match read {
                Ok(data) => {
                    return data
                        .get(key)
                        .map(|v| v.trim().to_string())
                        .ok_or_else(|| SecretError::Missing(reference.to_string()));
                }
                Err(ClientError::APIError { code: 404, .. }) => {
                    return Err(SecretError::Missing(reference.to_string()));
                }
                Err(ClientError::APIError { code: 403, .. }) if attempt == 0 => *session = None,
                Err(error) => return Err(unreadable(error.to_string())),
            }
        }
        Err(unreadable(
            "OpenBao refused the read after a fresh login (permission denied): check the role's policy".into(),
        ))
    }
}

impl SecretSource for OpenBaoReader {
    fn read<'a>(&'a self, reference: &'a SecretRef) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            match reference {
                SecretRef::OpenBao { mount, path, key } => self.read_kv(reference, mount, path, key).await,
                SecretRef::Kubernetes { .. } => Err(SecretError::Unreadable {
                    what: reference.to_string(),
                    reason: "this reader reads OpenBao only".into(),
                }),
            }
        })
    }
}
