//! JSON Web Key Sets: RS256 checks against a JWKS, and a cache of JWKS
//! documents by URL that is fetched again once when a signature names an
//! unknown `kid` or does not verify (the issuer may have rotated its key), at
//! most once per `min_refetch` per URL, so a stream of forged requests cannot
//! turn into a stream of fetches. Shared by the webhook (Saleor's detached
//! signatures) and the gateway (OIDC tokens).
//!
//! Callers pass only URLs they trust (an allow-list, or configuration): a
//! JWKS is never fetched from a URL a request merely names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use tokio::sync::Mutex as AsyncMutex;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// One RSA key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Jwk {
    /// Must be `RSA`.
    pub kty: String,
    /// The key id.
    #[serde(default)]
    pub kid: Option<String>,
    /// `sig` or `enc`; an `enc` key never verifies a signature.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    /// The modulus, base64url.
    #[serde(default)]
    pub n: String,
    /// The exponent, base64url.
    #[serde(default)]
    pub e: String,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Jwks {
    /// Its keys.
    pub keys: Vec<Jwk>,
}

/// Why an RS256 signature does not verify against a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No signing RSA key has the `kid` (the caller may refetch the JWKS once).
    #[error("no key of the JWKS has kid {0:?}")]
    UnknownKid(String),
    /// The key is not a usable RSA key.
    #[error("the JWKS key {0:?} is not a usable RSA key")]
    BadKey(String),
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks an RS256 `signature` over `signed` with the signing key `kid` of `jwks`.
pub fn verify_rs256(jwks: &Jwks, kid: &str, signed: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let key = jwks
        .keys
        .iter()
        .find(|k| k.kty == "RSA" && k.kid.as_deref() == Some(kid) && k.use_.as_deref() != Some("enc"))
        .ok_or_else(|| KeyError::UnknownKid(kid.to_string()))?;
    let n = URL_SAFE_NO_PAD.decode(&key.n).map_err(|_| KeyError::BadKey(kid.to_string()))?;
    let e = URL_SAFE_NO_PAD.decode(&key.e).map_err(|_| KeyError::BadKey(kid.to_string()))?;
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed, signature)
        .map_err(|_| KeyError::Mismatch)
}

/// Why a JWKS could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fetching the JWKS of {url}: {reason}")]
pub struct JwksError {
    /// The JWKS URL.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// A check refused by the keys (`Refused`), or one that cannot be made now (`Jwks`).
#[derive(Debug, thiserror::Error)]
pub enum CheckError<E> {
    /// The check failed against the freshest keys.
    #[error(transparent)]
    Refused(E),
    /// The keys cannot be fetched.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

struct Cached {
    jwks: Jwks,
    fetched_at: Instant,
}

/// Cached JWKS documents, by URL.
pub struct JwksCache {
    http: reqwest::Client,
    min_refetch: Duration,
    cached: Mutex<HashMap<String, Cached>>,
    /// One fetch at a time per process, so concurrent misses do not stampede.
    fetching: AsyncMutex<()>,
}

impl JwksCache {
    /// A cache that fetches a URL again at most once per `min_refetch`.
    pub fn new(http: reqwest::Client, min_refetch: Duration) -> Self {
        Self { http, min_refetch, cached: Mutex::default(), fetching: AsyncMutex::new(()) }
    }

    fn get(&self, url: &str) -> Option<(Jwks, Instant)> {
        let cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cached.get(url).map(|c| (c.jwks.clone(), c.fetched_at))
    }

    async fn fetch(&self, url: &str) -> Result<Jwks, JwksError> {
        let failed = |reason: String| JwksError { url: url.to_string(), reason };
        let response = self.http.get(url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("answered {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(failed(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes")));
        }
        let jwks: Jwks = serde_json::from_slice(&bytes).map_err(|e| failed(format!("not a JWKS: {e}")))?;
        tracing::info!(url, keys = jwks.keys.len(), "fetched a JWKS");
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

    /// Runs `check` against the JWKS of `url`; when it fails in a way
    /// `refetch_on` says a rotated key explains, once more against a fresh
    /// fetch (rate-limited).
    pub async fn check<T, E>(
        &self,
        url: &str,
        check: impl Fn(&Jwks) -> Result<T, E>,
        refetch_on: impl Fn(&E) -> bool,
    ) -> Result<T, CheckError<E>> {
        let first = match self.get(url) {
            Some((jwks, _)) => jwks,
            None => self.jwks(url, false).await?.unwrap_or_default(),
        };
        match check(&first) {
            Err(error) if refetch_on(&error) => match self.jwks(url, true).await? {
                Some(fresh) => check(&fresh).map_err(CheckError::Refused),
                None => Err(CheckError::Refused(error)),
            },
            other => other.map_err(CheckError::Refused),
        }
    }
}

/// Whether a failed RS256 check may be explained by a rotated key.
pub fn rotated(error: &KeyError) -> bool {
    matches!(error, KeyError::UnknownKid(_) | KeyError::Mismatch)
}
