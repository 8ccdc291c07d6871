//! Tokens any replica can check with no call and no shared store: a prefix,
//! then base64url of a JSON payload and of its HMAC-SHA256. Each use (widget
//! sessions, run tokens, MCP session ids) signs with its own key, derived
//! from the secret every replica shares and the use's name, so a token made
//! for one use is never accepted as another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Signs and checks the tokens of one use.
pub struct Signer {
    key: ring::hmac::Key,
    prefix: &'static str,
}

impl Signer {
    /// The signer of tokens starting `prefix`, for the use `purpose`, under `secret`.
    pub fn new(secret: &[u8], purpose: &str, prefix: &'static str) -> Self {
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let derived = ring::hmac::sign(&root, purpose.as_bytes());
        Self { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()), prefix }
    }

    /// The token of `payload`.
    pub fn sign<T: Serialize>(&self, payload: &T) -> String {
        // Serializing a plain struct of strings and numbers cannot fail.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.key, payload.as_bytes()).as_ref());
        format!("{}{payload}.{tag}", self.prefix)
    }

    /// The payload of `token`, if this signer made it.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let (payload, tag) = token.strip_prefix(self.prefix)?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_only_by_the_signer_of_its_use_and_secret() {
        let runs = Signer::new(b"secret", "run", "cmpr_");
        let token = runs.sign(&("run-1", 7));
        assert_eq!(runs.verify::<(String, i64)>(&token), Some(("run-1".into(), 7)));
        assert_eq!(Signer::new(b"secret", "session", "cmpr_").verify::<(String, i64)>(&token), None, "another use");
        assert_eq!(Signer::new(b"other", "run", "cmpr_").verify::<(String, i64)>(&token), None, "another secret");
        let (payload, tag) = token.split_once('.').expect("two parts");
        assert_eq!(runs.verify::<(String, i64)>(&format!("{payload}x.{tag}")), None, "forged");
        assert_eq!(runs.verify::<(String, i64)>("cmpr_"), None);
    }
}
