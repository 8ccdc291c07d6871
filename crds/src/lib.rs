//! The CMP API, group `cmp.gsv.dev`, version `v1alpha1`.
//!
//! Five custom resources ([`Organization`], [`Project`], [`Offering`],
//! [`Instance`], [`Wallet`]) and the pure helpers that every CMP binary needs
//! with them: conditions ([`conditions`]), credit arithmetic ([`credits`]),
//! API keys ([`apikey`]), an Instance's references ([`references`]) and the names of the namespaces we create
//! ([`names`]).
//!
//! This crate enables no `k8s-openapi` version feature: binaries and tests
//! choose it (see the workspace `Cargo.toml`).

pub mod apikey;
pub mod common;
pub mod conditions;
pub mod connectors;
pub mod credits;
pub mod inputs;
pub mod instance;
pub mod key_requests;
pub mod names;
pub mod offering;
pub mod organization;
pub mod project;
pub mod references;
pub mod refusals;
pub mod runnable;
pub mod runtime_key;
pub mod suspension;
pub mod usage;
pub mod wallet;
pub mod wallet_view;

pub use common::{DeletionPolicy, GROUP, VERSION};
pub use instance::{Instance, InstanceSpec, InstanceStatus};
pub use offering::{Offering, OfferingSpec, OfferingStatus};
pub use organization::{Organization, OrganizationSpec, OrganizationStatus};
pub use project::{Project, ProjectSpec, ProjectStatus};
pub use wallet::{Wallet, WalletSpec, WalletStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CustomResourceDefinition of the API, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Organization::crd(), Project::crd(), Offering::crd(), Instance::crd(), Wallet::crd()]
}

/// The header of every generated CRD file.
pub const GENERATED_HEADER: &str = "# Generated from crds/src by `cargo run -p cmp-crdgen`. Do not edit.\n";

/// The generated CRD files: `(file name, YAML)`, one per kind, named
/// `<kind>.yaml` in lower case. `crdgen` writes them to `crds/` and to the
/// Helm chart's `crds/`; a test compares them with the committed files.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    all_crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.spec.names.kind.to_lowercase());
            Ok((file, format!("{GENERATED_HEADER}{}", serde_yaml::to_string(&crd)?)))
        })
        .collect()
}
