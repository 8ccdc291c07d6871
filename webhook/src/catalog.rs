//! What a SKU sells: an Offering plan (`spec.plans[].saleorSku`) or a credit
//! pack (the webhook's configuration).
//!
//! Credit packs are declared in the webhook's configuration (a file, from the
//! Helm values), not in the store and not on an Offering. Credits are money:
//! the mapping from a SKU to an amount belongs to the platform team, reviewed
//! in git with the rest of the deployment, where store staff editing product
//! metadata in the dashboard cannot change it. An Offering is one agent,
//! while credits fill the buyer's one Wallet and are spent on any agent, so a
//! pack belongs to no Offering.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cmp_crds::Offering;
use cmp_crds::offering::Plan;
use kube::ResourceExt;
use serde::Deserialize;

/// A SKU that sells credits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditPack {
    /// The Saleor product variant SKU.
    pub sku: String,
    /// Credits per unit bought.
    pub credits: i64,
    /// The name people see in the Wallet's grant reason. Default: the SKU.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The webhook's credit-pack file: `creditPacks: [{sku, credits, displayName}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditPackFile {
    /// The packs on sale.
    #[serde(default)]
    pub credit_packs: Vec<CreditPack>,
}

/// Why the credit-pack file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CreditPackError {
    /// The file cannot be read.
    #[error("cannot read the credit-pack file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file is not valid YAML of the expected shape.
    #[error(
        "the credit-pack file {path} is not valid: {source} (expected `creditPacks: [{{sku, credits, displayName}}]`)"
    )]
    Parse { path: String, source: serde_yaml::Error },
    /// A pack is wrong.
    #[error("the credit-pack file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl CreditPackFile {
    /// Reads and checks the file at `path`: SKUs non-empty and unique, credits positive.
    pub fn load(path: &Path) -> Result<Vec<CreditPack>, CreditPackError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CreditPackError::Read { path: shown.clone(), source })?;
        let file: CreditPackFile =
            serde_yaml::from_str(&text).map_err(|source| CreditPackError::Parse { path: shown.clone(), source })?;
        file.check().map_err(|message| CreditPackError::Invalid { path: shown, message })?;
        Ok(file.credit_packs)
    }

    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, pack) in self.credit_packs.iter().enumerate() {
            if pack.sku.trim().is_empty() {
                return Err(format!("creditPacks[{i}].sku is empty"));
            }
            if pack.credits <= 0 {
                return Err(format!(
                    "creditPacks[{i}] ({}): credits must be a positive whole number, not {}",
                    pack.sku, pack.credits
                ));
            }
            if !seen.insert(pack.sku.as_str()) {
                return Err(format!("creditPacks[{i}]: the SKU {} is listed twice", pack.sku));
            }
        }
        Ok(())
    }
}

/// What a SKU sells.
#[derive(Debug, Clone, PartialEq)]
pub enum Product {
    /// A plan of an Offering: an Instance of its newest version that is not deprecated.
    Plan { offering: Arc<Offering>, plan: Plan, version: String },
    /// A credit pack.
    CreditPack(CreditPack),
}

/// Why a line cannot be provisioned. Reported (log, metric, Event), never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The line has no SKU.
    #[error("the line has no SKU")]
    NoSku,
    /// No plan and no credit pack has the SKU.
    #[error("no Offering plan (spec.plans[].saleorSku) and no credit pack sells SKU {0}")]
    UnknownSku(String),
    /// More than one product claims the SKU.
    #[error("SKU {sku} is claimed by more than one product ({claims}): fix the catalog so that one sells it")]
    AmbiguousSku { sku: String, claims: String },
    /// The Offering has no version that is not deprecated.
    #[error("Offering {offering} sells SKU {sku} but has no version that is not deprecated")]
    NoUsableVersion { sku: String, offering: String },
    /// Credits × quantity does not fit.
    #[error("SKU {0}: the credits of the line overflow")]
    Overflow(String),
}

impl LineProblem {
    /// Every label [`LineProblem::kind`] gives.
    pub const KINDS: [&'static str; 5] = ["no_sku", "unknown_sku", "ambiguous_sku", "no_usable_version", "overflow"];

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LineProblem::NoSku => "no_sku",
            LineProblem::UnknownSku(_) => "unknown_sku",
            LineProblem::AmbiguousSku { .. } => "ambiguous_sku",
            LineProblem::NoUsableVersion { .. } => "no_usable_version",
            LineProblem::Overflow(_) => "overflow",
        }
    }
}

/// Every SKU on sale, built from the Offerings in the cache and the credit packs.
#[derive(Debug, Default)]
pub struct Catalog {
    claims: BTreeMap<String, Vec<Product>>,
}

impl Catalog {
    /// The catalog of `offerings` and `packs`.
    pub fn new(offerings: &[Arc<Offering>], packs: &[CreditPack]) -> Self {
        let mut claims: BTreeMap<String, Vec<Product>> = BTreeMap::new();
        for offering in offerings {
            for plan in &offering.spec.plans {
                if let Some(sku) = &plan.saleor_sku {
                    let version = offering.latest_version().map(|v| v.name.clone()).unwrap_or_default();
                    claims.entry(sku.clone()).or_default().push(Product::Plan {
                        offering: offering.clone(),
                        plan: plan.clone(),
                        version,
                    });
                }
            }
        }
        for pack in packs {
            claims.entry(pack.sku.clone()).or_default().push(Product::CreditPack(pack.clone()));
        }
        Self { claims }
    }

    /// What `sku` sells, or why it cannot be sold.
    pub fn product(&self, sku: Option<&str>) -> Result<&Product, LineProblem> {
        let sku = sku.ok_or(LineProblem::NoSku)?;
        match self.claims.get(sku).map(Vec::as_slice) {
            None | Some([]) => Err(LineProblem::UnknownSku(sku.to_string())),
            Some([Product::Plan { offering, version, .. }]) if version.is_empty() => {
                Err(LineProblem::NoUsableVersion { sku: sku.to_string(), offering: offering.name_any() })
            }
            Some([product]) => Ok(product),
            Some(many) => Err(LineProblem::AmbiguousSku { sku: sku.to_string(), claims: describe(many) }),
        }
    }
}

fn describe(products: &[Product]) -> String {
    products
        .iter()
        .map(|p| match p {
            Product::Plan { offering, plan, .. } => format!("plan {} of Offering {}", plan.id, offering.name_any()),
            Product::CreditPack(_) => "a credit pack".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credit_pack_file_is_checked() {
        let ok: CreditPackFile =
            serde_yaml::from_str("creditPacks:\n  - sku: credits-1000\n    credits: 1000\n").expect("parses");
        assert!(ok.check().is_ok());
        let zero: CreditPackFile = serde_yaml::from_str("creditPacks:\n  - sku: c\n    credits: 0\n").expect("parses");
        assert!(zero.check().is_err_and(|m| m.contains("positive")));
        let twice: CreditPackFile =
            serde_yaml::from_str("creditPacks:\n  - {sku: c, credits: 1}\n  - {sku: c, credits: 2}\n").expect("parses");
        assert!(twice.check().is_err_and(|m| m.contains("listed twice")));
        assert!(
            serde_yaml::from_str::<CreditPackFile>("creditPacks:\n  - {sku: c, credit: 1}\n").is_err(),
            "typos are refused"
        );
    }
}
