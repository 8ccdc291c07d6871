//! API keys: `cmp_<publicId>_<secret>`.
//!
//! The public id (12 base62 characters) is used to find the key; the secret
//! (43 base62 characters, about 256 bits) proves it. Only a hash of the whole
//! key is stored (in Instance status); the plaintext is shown once.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Prefix of every key.
pub const PREFIX: &str = "cmp";
/// Length of the public id.
pub const PUBLIC_ID_LEN: usize = 12;
/// Length of the secret part (43 base62 characters hold 256 bits).
pub const SECRET_LEN: usize = 43;
/// Prefix of a stored hash.
pub const HASH_PREFIX: &str = "sha256:";

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not an API key. The messages never echo the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyError {
    /// Not three `_`-separated parts starting with `cmp`.
    #[error("API key is malformed: expected cmp_<publicId>_<secret>")]
    Malformed,
    /// The public id has the wrong length or characters.
    #[error("API key is malformed: the public id must be {PUBLIC_ID_LEN} base62 characters")]
    BadPublicId,
    /// The secret has the wrong length or characters.
    #[error("API key is malformed: the secret must be {SECRET_LEN} base62 characters")]
    BadSecret,
}

/// A freshly generated key. The plaintext must be shown once and then dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The public id, for lookup.
    pub public_id: String,
    /// The whole key, `cmp_<publicId>_<secret>`.
    pub plaintext: String,
    /// The hash to store.
    pub hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("public_id", &self.public_id)
            .field("plaintext", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

/// A key split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The public id.
    pub public_id: &'a str,
    /// The secret part.
    pub secret: &'a str,
}

fn random_base62(rng: &mut impl Rng, len: usize) -> String {
    (0..len).map(|_| BASE62[rng.random_range(0..BASE62.len())] as char).collect()
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Generates a new key from the thread-local CSPRNG.
pub fn generate() -> GeneratedKey {
    generate_with(&mut rand::rng())
}

/// Generates a new key from the given random source.
pub fn generate_with(rng: &mut impl Rng) -> GeneratedKey {
    let public_id = random_base62(rng, PUBLIC_ID_LEN);
    let secret = random_base62(rng, SECRET_LEN);
    let plaintext = format!("{PREFIX}_{public_id}_{secret}");
    let hash = hash(&plaintext);
    GeneratedKey { public_id, plaintext, hash }
}

/// Splits a key into its public id and secret, checking the format.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, ApiKeyError> {
    let mut parts = key.split('_');
    let (Some(PREFIX), Some(public_id), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiKeyError::Malformed);
    };
    if public_id.len() != PUBLIC_ID_LEN || !is_base62(public_id) {
        return Err(ApiKeyError::BadPublicId);
    }
    if secret.len() != SECRET_LEN || !is_base62(secret) {
        return Err(ApiKeyError::BadSecret);
    }
    Ok(ParsedKey { public_id, secret })
}

/// The stored form of a key: `sha256:<64 hex>` of the whole key.
pub fn hash(key: &str) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// True when `key` is well-formed and hashes to `stored` (compared in constant time).
pub fn verify(key: &str, stored: &str) -> bool {
    if parse(key).is_err() {
        return false;
    }
    let computed = hash(key);
    computed.len() == stored.len() && computed.bytes().zip(stored.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        let parsed = parse(&key.plaintext).expect("generated key parses");
        assert_eq!(parsed.public_id, key.public_id);
        assert_eq!(parsed.secret.len(), SECRET_LEN);
        assert!(verify(&key.plaintext, &key.hash));
        assert!(key.hash.starts_with(HASH_PREFIX) && key.hash.len() == HASH_PREFIX.len() + 64);
    }

    #[test]
    fn two_keys_differ() {
        assert_ne!(generate().plaintext, generate().plaintext);
    }

    #[test]
    fn debug_output_never_shows_the_plaintext() {
        let key = generate();
        assert!(!format!("{key:?}").contains(&key.plaintext));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let good = generate().plaintext;
        assert_eq!(parse(""), Err(ApiKeyError::Malformed));
        assert_eq!(parse("sk_abc_def"), Err(ApiKeyError::Malformed));
        assert_eq!(parse(&format!("{good}_extra")), Err(ApiKeyError::Malformed));
        assert_eq!(parse("cmp_short_x"), Err(ApiKeyError::BadPublicId));
        assert_eq!(parse(&format!("cmp_{}_{}", "A".repeat(12), "b".repeat(42))), Err(ApiKeyError::BadSecret));
        assert_eq!(parse(&format!("cmp_{}_{}", "A-".repeat(6), "b".repeat(43))), Err(ApiKeyError::BadPublicId));
    }

    #[test]
    fn a_changed_key_does_not_verify() {
        let key = generate();
        let mut tampered = key.plaintext.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(!verify(&tampered, &key.hash));
        assert!(!verify("not a key", &key.hash));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn any_well_formed_key_round_trips(id in "[0-9A-Za-z]{12}", secret in "[0-9A-Za-z]{43}") {
            let key = format!("cmp_{id}_{secret}");
            let parsed = parse(&key).expect("well-formed");
            prop_assert_eq!(parsed.public_id, id.as_str());
            prop_assert!(verify(&key, &hash(&key)));
        }
    }
}
