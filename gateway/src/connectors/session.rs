//! MCP session ids that work on every replica without sticky routing: the
//! id the gateway gives a runtime is signed, and carries the run, the
//! binding and the MCP server's own session id. Any replica checks it with
//! the shared secret and continues the session with the MCP server; a
//! session id of another run (another tenant's included) or another binding
//! is refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jsonrpc::{Reason, RpcError};
use crate::signed::Signer;

/// The prefix of a session id.
pub const SESSION_PREFIX: &str = "cmps_";

/// What a session id says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The run that opened it.
    pub run: String,
    /// The binding it is open on.
    pub binding: String,
    /// The MCP server's session id, if it gave one.
    pub upstream: Option<String>,
}

/// Signs and checks session ids.
pub struct Sessions(Signer);

impl Sessions {
    /// Session ids signed under `secret`, shared by every replica.
    pub fn new(secret: &[u8]) -> Self {
        Self(Signer::new(secret, "mcp-session", SESSION_PREFIX))
    }

    /// The session id of `claims`.
    pub fn sign(&self, claims: &SessionClaims) -> String {
        self.0.sign(claims)
    }

    /// The session `id` proves, if it was opened by run `run` on `binding`.
    pub fn verify(&self, id: &str, run: &str, binding: &str) -> Result<SessionClaims, RpcError> {
        let unknown = |why: &str| {
            RpcError::new(
                &Value::Null,
                Reason::UnknownSession,
                format!("the Mcp-Session-Id {why}: initialize a new session"),
            )
        };
        let claims: SessionClaims = self.0.verify(id).ok_or_else(|| unknown("is not one this gateway gave"))?;
        if claims.run != run || claims.binding != binding {
            return Err(unknown("belongs to another run or binding"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_continues_only_for_its_run_and_binding() {
        let (a, b) = (Sessions::new(b"shared"), Sessions::new(b"shared"));
        let claims = SessionClaims { run: "run_1".into(), binding: "desk".into(), upstream: Some("u-1".into()) };
        let id = a.sign(&claims);
        assert_eq!(b.verify(&id, "run_1", "desk"), Ok(claims), "another replica continues it");
        assert_eq!(b.verify(&id, "run_2", "desk").expect_err("another run").reason, Reason::UnknownSession);
        assert_eq!(b.verify(&id, "run_1", "crm").expect_err("another binding").reason, Reason::UnknownSession);
        assert!(Sessions::new(b"other").verify(&id, "run_1", "desk").is_err());
    }
}
