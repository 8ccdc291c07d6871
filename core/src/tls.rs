//! TLS: the process-wide crypto provider, and one way to serve HTTPS.
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

/// Loads a PEM certificate chain and key into a TLS server configuration (HTTP/2 and HTTP/1.1).
pub fn server_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not make a TLS identity")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// When the first certificate in the PEM file `cert` expires, in seconds since the Unix epoch.
pub fn not_after(cert: &std::path::Path) -> anyhow::Result<i64> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .next()
        .with_context(|| format!("{} holds no PEM certificate", cert.display()))?
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| anyhow::anyhow!("{} is not an X.509 certificate: {e}", cert.display()))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// Serves `router` over TLS on `listener` until `shutdown` completes; `what` names the endpoint in logs.
pub async fn serve(
    what: &'static str,
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tracing::info!(addr = ?listener.local_addr().ok(), what, "serving over TLS");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, what, "accepting a connection");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %peer, what, "a TLS handshake failed");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%error, %peer, what, "a connection ended with an error");
            }
        });
    }
}
