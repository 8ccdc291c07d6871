//! What can go wrong, each saying what to do.

/// An error of `kubectl cmp`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the kubeconfig: {0} (set KUBECONFIG, or pick a context with --context)")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("the Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("{kind} {name} not found in namespace {namespace}: check the name, or pass -n <namespace>")]
    NotFound { kind: &'static str, name: String, namespace: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Timeout(String),
    #[error("the gateway at {url}: {source} (is it running? pass --gateway or set CMP_GATEWAY_URL)")]
    Gateway { url: String, source: reqwest::Error },
    #[error("writing the output: {0}")]
    Output(String),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}
