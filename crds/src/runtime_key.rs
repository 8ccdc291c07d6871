//! The API key of a Dedicated runtime: one per Instance, derived from the
//! Offering's runtime key (`spec.runtime.apiKeySecretRef`).
//!
//! The gateway, which reads the Offering's key, and the operator, which gives
//! each Dedicated runtime its key in a Secret of the runtime namespace,
//! compute the same one, so the gateway needs no access to runtime
//! namespaces. A tenant who reads their runtime's key learns nothing that
//! opens another tenant's runtime, nor the Offering's key: it is an HMAC.

use ring::hmac;

/// The Secret in the runtime namespace that holds an Instance's runtime key.
pub fn secret_name(instance: &str) -> String {
    format!("{instance}-runtime-key")
}

/// The key of that Secret's data, which the runtime reads as `LANGFLOW_API_KEY`.
pub const SECRET_DATA_KEY: &str = "api-key";

/// The annotation on that Secret with [`fingerprint`] of the key it holds:
/// the operator compares it, never reading the key back, to replace the
/// Secret when the Offering's key was rotated.
pub const FINGERPRINT_ANNOTATION: &str = "cmp.gsv.dev/runtime-key-fingerprint";

/// A fingerprint of a runtime key (the first 16 hex digits of its SHA-256):
/// tells keys apart without showing them.
pub fn fingerprint(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// The runtime key of the Instance with uid `instance_uid`, from the
/// Offering's key: HMAC-SHA256 over a label and the uid, in hex. The uid, not
/// the name: a re-created Instance of the same name gets another key.
pub fn for_instance(offering_key: &str, instance_uid: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, offering_key.as_bytes());
    let tag = hmac::sign(&key, format!("cmp.gsv.dev/runtime-key/{instance_uid}").as_bytes());
    format!("cmprt_{}", hex::encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_instance_and_offering_key() {
        let key = for_instance("offering-key", "uid-1");
        assert_eq!(key, for_instance("offering-key", "uid-1"), "the gateway and the operator compute the same key");
        assert_ne!(key, for_instance("offering-key", "uid-2"), "another Instance, another key");
        assert_ne!(key, for_instance("rotated-key", "uid-1"), "a rotated Offering key changes it");
        assert!(!key.contains("offering-key"), "the Offering's key does not show");
        assert!(key.starts_with("cmprt_") && key.len() == 6 + 64, "{key}");
    }

    #[test]
    fn the_hmac_is_rfc_4231s() {
        // RFC 4231 test case 2, through the same primitive.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(hex::encode(tag.as_ref()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
