//! The stores' signing keys: each store's JWKS, fetched from
//! `<origin of its API URL>/.well-known/jwks.json`, cached, and fetched again
//! once when a signature names an unknown `kid` or does not verify (the
//! store may have rotated its key), at most once per `min_refetch` per store
//! so a stream of forged requests cannot turn into a stream of fetches.
//!
//! The caller passes only API URLs on its allow-list: a JWKS is never
//! fetched from a URL a request merely names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use crate::signature::{Jwks, JwsHeader, SignatureError, verify_jws};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a store's JWKS could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The API URL has no origin to fetch from.
    #[error("Saleor API URL {0:?} is not an http(s) URL")]
    BadApiUrl(String),
    /// The fetch failed.
    #[error("fetching the JWKS of {url}: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
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

struct Cached {
    jwks: Jwks,
    fetched_at: Instant,
}

/// Every store's cached JWKS.
pub struct JwksCache {
    http: reqwest::Client,
    min_refetch: Duration,
    cached: Mutex<HashMap<String, Cached>>,
    /// One fetch at a time per process, so concurrent misses do not stampede.
    fetching: AsyncMutex<()>,
}

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
        Self { http, min_refetch, cached: Mutex::default(), fetching: AsyncMutex::new(()) }
    }

    fn get(&self, url: &str) -> Option<(Jwks, Instant)> {
        let cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.get(url).map(|c| (c.jwks.clone(), c.fetched_at))
    }

    async fn fetch(&self, url: &str) -> Result<Jwks, JwksError> {
        let failed = |reason: String| JwksError::Fetch { url: url.to_string(), reason };
        let response = self.http.get(url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("the store answered {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(failed(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes")));
        }
        let jwks: Jwks = serde_json::from_slice(&bytes).map_err(|e| failed(format!("not a JWKS: {e}")))?;
        tracing::info!(url, keys = jwks.keys.len(), "fetched the store's JWKS");
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.insert(url.to_string(), Cached { jwks: jwks.clone(), fetched_at: Instant::now() });
        Ok(jwks)
    }

    /// The JWKS of `url`: cached, else fetched; with `refresh`, fetched again unless it was within `min_refetch`.
    async fn jwks(&self, url: &str, refresh: bool) -> Result<Option<Jwks>, JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        match self.get(url) {
            Some((jwks, _)) if !refresh => Ok(Some(jwks)),
            Some((_, at)) if at.elapsed() < self.min_refetch => Ok(None),
            _ => self.fetch(url).await.map(Some),
        }
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
        let check = |jwks: &Jwks| verify_jws(header, encoded_header, signature, body, jwks);
        let first = match self.get(&url) {
            Some((jwks, _)) => jwks,
            None => self.jwks(&url, false).await?.unwrap_or_default(),
        };
        match check(&first) {
            Err(SignatureError::UnknownKid(_) | SignatureError::Mismatch) => match self.jwks(&url, true).await? {
                Some(fresh) => Ok(check(&fresh)?),
                None => Ok(check(&first)?),
            },
            other => Ok(other?),
        }
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
