//! The operator's errors. Each says what failed and carries a CamelCase
//! reason for the object's conditions and a label for the error metric.

use cmp_crds::conditions::reasons;

/// A reconcile error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, for example "applying NetworkPolicy cmp-acme-x/cmp-default-deny".
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be converted to or from JSON.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The Organization exists but the operator cannot read it.
    #[error("Organization {organization} cannot be read by the operator ({error}); fix the field the error names")]
    OrganizationInvalid {
        /// The organization.
        organization: String,
        /// Why it cannot be read.
        error: String,
    },
    /// A Project lives outside an organization's control namespace.
    #[error(
        "Project is in namespace {namespace}, which is not an organization's control namespace (cmp-<organization>); move it there"
    )]
    NotInControlNamespace {
        /// Its namespace.
        namespace: String,
    },
    /// A Project's Organization does not exist.
    #[error(
        "Organization {organization} does not exist; create it, or move the Project to an existing organization's namespace"
    )]
    OrganizationNotFound {
        /// The missing organization.
        organization: String,
    },
    /// A Secret with a Dedicated runtime's key name exists, and the operator did not write it.
    #[error(
        "Secret {namespace}/{name} exists but was not written by CMP (it has no label {label}={value}): the runtime would read its key from it and refuse every run the gateway sends; delete it (kubectl delete secret -n {namespace} {name}) and the operator writes the runtime's key"
    )]
    ForeignRuntimeKeySecret {
        /// The runtime namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The label the operator's runtime key Secrets carry.
        label: &'static str,
        /// Its value.
        value: &'static str,
    },
    /// A shared runtime refused or did not answer while the operator removed a flow.
    #[error(
        "{0}; the runtime must answer before the Instance can go (or annotate it cmp.gsv.dev/abandon-cleanup=true to leave its flow behind)"
    )]
    Runtime(String),
    /// The knowledge store refused or did not answer.
    #[error("{0}")]
    Knowledge(String),
    /// Vault/OpenBao refused or did not answer.
    #[error("{0}")]
    Vault(String),
    /// The GitOps writer has not pushed a removal yet.
    #[error(
        "{0}; the removal is retried (or annotate the object cmp.gsv.dev/abandon-cleanup=true to leave its folder in git)"
    )]
    GitOps(#[from] crate::gitops::GitOpsError),
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Every reason [`Error::reason`] gives (and `InvalidObject`, counted for objects that do not parse).
    pub const REASONS: [&'static str; 12] = [
        "Forbidden",
        "Conflict",
        "Invalid",
        "ApiError",
        "EncodingFailed",
        reasons::NOT_IN_CONTROL_NAMESPACE,
        reasons::ORGANIZATION_NOT_FOUND,
        reasons::INVALID_OBJECT,
        reasons::RUNTIME_UNAVAILABLE,
        reasons::VAULT_UNAVAILABLE,
        reasons::KNOWLEDGE_STORE_UNAVAILABLE,
        reasons::GIT_UNREACHABLE,
    ];

    /// The CamelCase reason written to the object's conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 403 => "Forbidden",
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 409 => "Conflict",
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 422 => "Invalid",
            Error::Kube { .. } => "ApiError",
            Error::Encode { .. } => "EncodingFailed",
            Error::NotInControlNamespace { .. } => reasons::NOT_IN_CONTROL_NAMESPACE,
            Error::OrganizationNotFound { .. } => reasons::ORGANIZATION_NOT_FOUND,
            Error::OrganizationInvalid { .. } => reasons::INVALID_OBJECT,
            Error::Runtime(_) => reasons::RUNTIME_UNAVAILABLE,
            Error::ForeignRuntimeKeySecret { .. } => reasons::RUNTIME_KEY_SECRET_FOREIGN,
            Error::Vault(_) => reasons::VAULT_UNAVAILABLE,
            Error::Knowledge(_) => reasons::KNOWLEDGE_STORE_UNAVAILABLE,
            Error::GitOps(_) => reasons::GIT_UNREACHABLE,
        }
    }
}
