//! Flow artifacts: fetched from `file://` or `http(s)://` and checked
//! against the sha256 their Offering pins, then against what their version's
//! `inputs` name ([`cmp_crds::inputs::check_flow`]). What was checked is remembered
//! (the outcome for the Offering's status, the verified bytes for uploads),
//! so a verified artifact is not fetched again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cmp_crds::offering::{ArtifactState, CallerInput};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

/// The largest artifact the operator fetches.
pub const MAX_ARTIFACT_BYTES: usize = 16 * 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How many verified artifacts are kept in memory for uploads.
const KEPT_ARTIFACTS: usize = 64;

/// Why an artifact cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    /// It could not be fetched.
    #[error("artifact {url} could not be fetched: {reason}; check that the operator can reach it")]
    Unreachable {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Its content does not hash to the pinned sha256.
    #[error(
        "artifact {url} has sha256 {actual}, but spec pins {expected}; publish the pinned file or correct the sha256"
    )]
    Mismatch {
        /// The URL.
        url: String,
        /// The pinned sha256.
        expected: String,
        /// The sha256 of what was fetched.
        actual: String,
    },
}

impl ArtifactError {
    /// The state an Offering reports for this error.
    pub fn state(&self) -> ArtifactState {
        match self {
            Self::Unreachable { .. } => ArtifactState::Unreachable,
            Self::Mismatch { .. } => ArtifactState::Mismatch,
        }
    }
}

/// The outcome of one check of an artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// What was found.
    pub state: ArtifactState,
    /// The error, for `Mismatch` and `Unreachable`.
    pub message: String,
    /// When.
    pub at: Timestamp,
}

type ArtifactKey = (String, String);

/// What an outcome is remembered under: the artifact, and the declarations it was checked against.
fn outcome_key(url: &str, sha256: &str, inputs: &[CallerInput]) -> ArtifactKey {
    let declared = if inputs.is_empty() { String::new() } else { serde_json::to_string(inputs).unwrap_or_default() };
    (url.to_string(), format!("{sha256}{declared}"))
}

/// Fetches and checks artifacts, remembering what it found.
pub struct Artifacts {
    http: reqwest::Client,
    checked: Mutex<HashMap<ArtifactKey, Checked>>,
    verified: Mutex<HashMap<ArtifactKey, Arc<Vec<u8>>>>,
}

impl Default for Artifacts {
    fn default() -> Self {
        Self::new(crate::flows::http_client(FETCH_TIMEOUT))
    }
}

impl Artifacts {
    /// Artifacts fetched with `http`.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http, checked: Mutex::default(), verified: Mutex::default() }
    }

    /// The last outcome of checking `url` against `sha256` and `inputs`, if it was checked by this process.
    pub fn checked(&self, url: &str, sha256: &str, inputs: &[CallerInput]) -> Option<Checked> {
        let checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.get(&outcome_key(url, sha256, inputs)).cloned()
    }

    /// Fetches `url`, checks it against `sha256` and the flow against `inputs`, and remembers the outcome.
    pub async fn check(&self, url: &str, sha256: &str, inputs: &[CallerInput]) -> Checked {
        let result = self.fetch_verified(url, sha256).await;
        let at = Timestamp::now();
        let checked = match &result {
            Ok(flow) => match cmp_crds::inputs::check_flow(inputs, flow) {
                Ok(()) => Checked { state: ArtifactState::Verified, message: String::new(), at },
                Err(why) => Checked {
                    state: ArtifactState::Invalid,
                    message: format!(
                        "artifact {url}: {why}; the publisher fixes the version's inputs or the flow (a new version)"
                    ),
                    at,
                },
            },
            Err(error) => Checked { state: error.state(), message: error.to_string(), at },
        };
        let mut all = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = all.insert(outcome_key(url, sha256, inputs), checked.clone());
        // A retry that finds the same as before is not news.
        if previous.is_some_and(|p| p.state == checked.state) {
            tracing::debug!(url, state = ?checked.state, message = %checked.message, "checked artifact again");
        } else {
            tracing::info!(url, state = ?checked.state, message = %checked.message, "checked artifact");
        }
        checked
    }

    /// The content of `url`, verified against `sha256`: from memory when it was verified before.
    pub async fn fetch_verified(&self, url: &str, sha256: &str) -> Result<Arc<Vec<u8>>, ArtifactError> {
        let key = (url.to_string(), sha256.to_string());
        if let Some(bytes) = self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(bytes.clone());
        }
        let bytes = fetch(&self.http, url).await?;
        verify(url, sha256, &bytes)?;
        let bytes = Arc::new(bytes);
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= KEPT_ARTIFACTS {
            verified.clear();
        }
        verified.insert(key, bytes.clone());
        Ok(bytes)
    }
}

/// Checks `bytes` against the pinned `sha256`.
pub fn verify(url: &str, sha256: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual == sha256 {
        Ok(())
    } else {
        Err(ArtifactError::Mismatch { url: url.to_string(), expected: sha256.to_string(), actual })
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, ArtifactError> {
    let unreachable = |reason: String| ArtifactError::Unreachable { url: url.to_string(), reason };
    if let Some(path) = url.strip_prefix("file://") {
        let metadata = tokio::fs::metadata(path).await.map_err(|e| unreachable(e.to_string()))?;
        if metadata.len() > MAX_ARTIFACT_BYTES as u64 {
            return Err(unreachable(format!("it is larger than {MAX_ARTIFACT_BYTES} bytes")));
        }
        return tokio::fs::read(path).await.map_err(|e| unreachable(e.to_string()));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(unreachable("the operator fetches only file://, http:// and https:// URLs".into()));
    }
    let mut response = http.get(url).send().await.map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("the server answered {}", response.status())));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(e.to_string()))? {
        if bytes.len() + chunk.len() > MAX_ARTIFACT_BYTES {
            return Err(unreachable(format!("it is larger than {MAX_ARTIFACT_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_names_both_hashes() {
        let error = verify("file:///f", &"0".repeat(64), b"flow").expect_err("mismatch");
        let message = error.to_string();
        assert!(message.contains(&"0".repeat(64)), "{message}");
        assert!(message.contains(&hex::encode(Sha256::digest(b"flow"))), "{message}");
        assert_eq!(error.state(), ArtifactState::Mismatch);
    }

    #[tokio::test]
    async fn a_file_is_fetched_verified_and_remembered() {
        let dir = std::env::temp_dir().join(format!("cmp-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("flow.json");
        std::fs::write(&path, b"{}").expect("write");
        let url = format!("file://{}", path.display());
        let sha = hex::encode(Sha256::digest(b"{}"));
        let artifacts = Artifacts::default();
        assert_eq!(artifacts.check(&url, &sha, &[]).await.state, ArtifactState::Verified);
        std::fs::remove_file(&path).expect("remove");
        assert!(artifacts.fetch_verified(&url, &sha).await.is_ok(), "served from memory, not fetched again");
        let missing = artifacts.check(&format!("{url}.gone"), &sha, &[]).await;
        assert_eq!(missing.state, ArtifactState::Unreachable);
        let _ = std::fs::remove_dir_all(dir);
    }
}
