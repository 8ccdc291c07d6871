//! The process-wide TLS crypto provider.
//!
//! Two rustls crypto providers are compiled into our binaries: `ring` (kube,
//! reqwest 0.12, rcgen) and `aws-lc-rs` (reqwest 0.13, under vaultrs). With
//! both, rustls cannot pick a default and panics on the first TLS client
//! built without an explicit provider. Every binary and test client calls
//! [`install_crypto_provider`] first, which settles it on `ring`.

/// Installs `ring` as the process's default rustls provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    // Err means a provider is already installed: that is the goal either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
