//! Saleor webhook signatures, checked over the exact raw body before
//! anything is parsed into action.
//!
//! - **JWS** (Saleor's default): `Saleor-Signature` is
//!   `<b64url(header)>..<b64url(signature)>`, RS256 with a detached,
//!   unencoded payload (RFC 7797, `"b64": false`): the signed bytes are
//!   `b64url(header) + "." + raw body`. The key is the JWKS key whose `kid`
//!   matches. A `crit` header is allowed (it must then name only `b64`),
//!   never required.
//! - **Legacy HMAC** (only where a secret is configured): the lower-case hex
//!   of HMAC-SHA256(secret, raw body), 64 characters; compared in constant
//!   time.
//!
//! Rust's `jsonwebtoken` handles neither detached nor unencoded payloads, so
//! the check is done here with `ring`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cmp_core::jwks::KeyError;
use serde::Deserialize;

/// The longest `Saleor-Signature` value accepted (an RS256 signature with a 4096-bit key is about 700 characters).
pub const MAX_SIGNATURE_LEN: usize = 4096;

/// Why a request's signature is refused. Messages never echo key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Saleor-Signature` header.
    #[error("the request has no Saleor-Signature header")]
    Missing,
    /// Not a detached JWS (nor, where configured, an HMAC).
    #[error("Saleor-Signature is malformed: {0}")]
    Malformed(&'static str),
    /// A JWS header the webhook does not accept.
    #[error("Saleor-Signature header is not acceptable: {0}")]
    Header(String),
    /// No JWKS key has the header's `kid` (the caller may refetch the JWKS once).
    #[error("no key of the store's JWKS has kid {0:?}")]
    UnknownKid(String),
    /// The signature does not match the body.
    #[error("Saleor-Signature does not match the request body")]
    Mismatch,
    /// An HMAC signature where no secret is configured.
    #[error("Saleor-Signature is an HMAC, but no shared secret is configured for this store")]
    HmacNotConfigured,
}

/// The protected header of a Saleor JWS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwsHeader {
    /// Must be `RS256`.
    pub alg: String,
    /// The key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Must be false (unencoded payload).
    #[serde(default = "default_b64")]
    pub b64: bool,
    /// Critical extensions; only `b64` is understood.
    #[serde(default)]
    pub crit: Option<Vec<String>>,
}

fn default_b64() -> bool {
    true
}

/// A parsed `Saleor-Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A detached JWS.
    Jws {
        /// Its protected header.
        header: JwsHeader,
        /// The header as sent (base64url), the first part of the signed bytes.
        encoded_header: String,
        /// The signature bytes.
        signature: Vec<u8>,
    },
    /// A legacy HMAC-SHA256.
    Hmac([u8; 32]),
}

/// Parses a `Saleor-Signature` value, telling JWS and HMAC apart by shape.
pub fn parse(value: Option<&str>) -> Result<Signature, SignatureError> {
    let value = value.ok_or(SignatureError::Missing)?.trim();
    if value.len() > MAX_SIGNATURE_LEN {
        return Err(SignatureError::Malformed("it is too long"));
    }
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        let mut tag = [0u8; 32];
        hex::decode_to_slice(value, &mut tag).map_err(|_| SignatureError::Malformed("bad hex"))?;
        return Ok(Signature::Hmac(tag));
    }
    let mut parts = value.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::Malformed("expected <header>..<signature>"));
    };
    if !payload.is_empty() {
        return Err(SignatureError::Malformed("the payload part must be empty (detached)"));
    }
    let header_json =
        URL_SAFE_NO_PAD.decode(header).map_err(|_| SignatureError::Malformed("the header is not base64url"))?;
    let parsed: JwsHeader = serde_json::from_slice(&header_json)
        .map_err(|_| SignatureError::Malformed("the header is not a JSON object with alg"))?;
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| SignatureError::Malformed("the signature is not base64url"))?;
    if signature.is_empty() {
        return Err(SignatureError::Malformed("the signature is empty"));
    }
    Ok(Signature::Jws { header: parsed, encoded_header: header.to_string(), signature })
}

pub use cmp_core::jwks::{Jwk, Jwks};

/// Checks a detached JWS over `body` with the key of `jwks` its header names.
pub fn verify_jws(
    header: &JwsHeader,
    encoded_header: &str,
    signature: &[u8],
    body: &[u8],
    jwks: &Jwks,
) -> Result<(), SignatureError> {
    if header.alg != "RS256" {
        return Err(SignatureError::Header(format!("alg is {:?}; only RS256 is accepted", header.alg)));
    }
    if header.b64 {
        return Err(SignatureError::Header("b64 must be false (Saleor signs the raw body)".into()));
    }
    if let Some(crit) = &header.crit
        && crit.iter().any(|c| c != "b64")
    {
        return Err(SignatureError::Header(format!("crit names extensions the webhook does not understand: {crit:?}")));
    }
    let kid = header.kid.clone().unwrap_or_default();
    let mut signed = Vec::with_capacity(encoded_header.len() + 1 + body.len());
    signed.extend_from_slice(encoded_header.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    cmp_core::jwks::verify_rs256(jwks, &kid, &signed, signature).map_err(|e| match e {
        KeyError::UnknownKid(kid) => SignatureError::UnknownKid(kid),
        KeyError::BadKey(kid) => SignatureError::Header(format!("the JWKS key {kid:?} is not a usable RSA key")),
        KeyError::Mismatch => SignatureError::Mismatch,
    })
}

/// Checks a legacy HMAC-SHA256 over `body`, in constant time.
pub fn verify_hmac(tag: &[u8; 32], body: &[u8], secret: Option<&[u8]>) -> Result<(), SignatureError> {
    let secret = secret.ok_or(SignatureError::HmacNotConfigured)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, tag).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_told_apart_and_bad_values_are_refused_with_the_reason() {
        assert_eq!(parse(None), Err(SignatureError::Missing));
        assert!(matches!(parse(Some(&"a".repeat(64))), Ok(Signature::Hmac(_))));
        assert_eq!(parse(Some("abc")), Err(SignatureError::Malformed("expected <header>..<signature>")));
        assert_eq!(
            parse(Some("e30.e30.e30")),
            Err(SignatureError::Malformed("the payload part must be empty (detached)"))
        );
        assert_eq!(parse(Some("!!..AA")), Err(SignatureError::Malformed("the header is not base64url")));
        assert_eq!(parse(Some(&"A".repeat(MAX_SIGNATURE_LEN + 1))), Err(SignatureError::Malformed("it is too long")));
        // {"alg":"RS256","b64":false} with an empty signature.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","b64":false}"#);
        assert_eq!(parse(Some(&format!("{header}.."))), Err(SignatureError::Malformed("the signature is empty")));
    }

    #[test]
    fn hmac_needs_the_configured_secret_and_the_exact_body() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"shared");
        let tag = hex::encode(ring::hmac::sign(&key, b"{\"a\": 1}").as_ref());
        let Ok(Signature::Hmac(tag)) = parse(Some(&tag)) else { panic!("an HMAC") };
        assert_eq!(verify_hmac(&tag, b"{\"a\": 1}", Some(b"shared")), Ok(()));
        assert_eq!(verify_hmac(&tag, b"{\"a\":1}", Some(b"shared")), Err(SignatureError::Mismatch));
        assert_eq!(verify_hmac(&tag, b"{\"a\": 1}", None), Err(SignatureError::HmacNotConfigured));
    }

    #[test]
    fn headers_other_than_saleors_are_refused() {
        let jwks = Jwks::default();
        let header = |alg: &str, b64: bool, crit: Option<Vec<String>>| JwsHeader {
            alg: alg.into(),
            kid: Some("k".into()),
            b64,
            crit,
        };
        let check = |h: &JwsHeader| verify_jws(h, "e30", b"sig", b"body", &jwks);
        assert!(matches!(check(&header("HS256", false, None)), Err(SignatureError::Header(m)) if m.contains("RS256")));
        assert!(matches!(check(&header("RS256", true, None)), Err(SignatureError::Header(m)) if m.contains("b64")));
        assert!(matches!(check(&header("RS256", false, Some(vec!["exp".into()]))), Err(SignatureError::Header(_))));
        assert_eq!(
            check(&header("RS256", false, None)),
            Err(SignatureError::UnknownKid("k".into())),
            "crit is not required"
        );
    }
}
