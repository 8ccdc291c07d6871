//! The stores' signing keys: each store's JWKS, fetched from
//! `<origin of its API URL>/.well-known/jwks.json`, cached, and fetched again
//! once when a signature names an unknown `kid` or does not verify (the
//! store may have rotated its key), at most once per `min_refetch` per store
//! so a stream of forged requests cannot turn into a stream of fetches.
//!
//! The caller passes only API URLs on its allow-list: a JWKS is never
//! fetched from a URL a request merely names.

use std::time::Duration;

use cmp_core::jwks::CheckError;

use crate::signature::{JwsHeader, SignatureError, verify_jws};

/// Why a store's JWKS could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The API URL has no origin to fetch from.
    #[error("Saleor API URL {0:?} is not an http(s) URL")]
    BadApiUrl(String),
    /// The fetch failed.
    #[error(transparent)]
    Fetch(#[from] cmp_core::jwks::JwksError),
}

/// Why a request is refused, or cannot be checked now.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature is wrong (401).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The keys cannot be fetched (503: Saleor retries).
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Every store's cached JWKS (the shared [`cmp_core::jwks::JwksCache`]).
pub struct JwksCache(cmp_core::jwks::JwksCache);

/// `<scheme>://<host[:port]>/.well-known/jwks.json` for a Saleor API URL such as `https://shop.example/graphql/`.
pub fn jwks_url(api_url: &str) -> Result<String, JwksError> {
    let bad = || JwksError::BadApiUrl(api_url.to_string());
    let (scheme, rest) = api_url.split_once("://").ok_or_else(bad)?;
    if scheme != "https" && scheme != "http" {
        return Err(bad());
    }
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty()).ok_or_else(bad)?;
    Ok(format!("{scheme}://{authority}/.well-known/jwks.json"))
}

impl JwksCache {
    /// A cache that refetches a store's JWKS at most once per `min_refetch`.
    pub fn new(http: reqwest::Client, min_refetch: Duration) -> Self {
        Self(cmp_core::jwks::JwksCache::new(http, min_refetch))
    }

    /// Checks a JWS from the store at `api_url` (on the caller's allow-list) over `body`.
    pub async fn verify(
        &self,
        api_url: &str,
        header: &JwsHeader,
        encoded_header: &str,
        signature: &[u8],
        body: &[u8],
    ) -> Result<(), VerifyError> {
        let url = jwks_url(api_url)?;
        let check = |jwks: &cmp_core::jwks::Jwks| verify_jws(header, encoded_header, signature, body, jwks);
        let rotated = |e: &SignatureError| matches!(e, SignatureError::UnknownKid(_) | SignatureError::Mismatch);
        self.0.check(&url, check, rotated).await.map_err(|e| match e {
            CheckError::Refused(e) => VerifyError::Signature(e),
            CheckError::Jwks(e) => VerifyError::Jwks(JwksError::Fetch(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwks_lives_at_the_origin_of_the_api_url() {
        assert_eq!(
            jwks_url("https://shop.example/graphql/").ok(),
            Some("https://shop.example/.well-known/jwks.json".into())
        );
        assert_eq!(
            jwks_url("http://127.0.0.1:8000/graphql/").ok(),
            Some("http://127.0.0.1:8000/.well-known/jwks.json".into())
        );
        assert!(jwks_url("ftp://shop.example/").is_err());
        assert!(jwks_url("https:///graphql/").is_err());
        assert!(jwks_url("shop.example").is_err());
    }
}
