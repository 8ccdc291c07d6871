//! Validating admission for the rules CEL cannot express, as pure functions
//! of the object, its old version and what was looked up.
//!
//! - An Instance's Project must exist in its namespace, and its Offering,
//!   version and plan must exist (checked on create, and for the version and
//!   plan whenever they change: an Offering removed later never blocks an
//!   update such as a suspension).
//! - A new Instance, or a version change, may not choose a deprecated version.
//! - A new or changed `spec.config` must give the settings its version
//!   declares valid values (undeclared keys are the operator's to report).
//! - Grants with source `SaleorOrder` may be appended only by the provisioner.
//!
//! The Instance rules and their messages are those the operator reports in
//! status ([`cmp_crds::references`]); every message names the field first,
//! as the CEL rules do.

use cmp_crds::references::{project_not_found, resolve_catalog};
use cmp_crds::wallet::GrantSource;
use cmp_crds::{Instance, Offering, Wallet};

/// What the admission of an Instance looked up.
#[derive(Debug, Clone, Copy)]
pub struct InstanceReferences<'a> {
    /// The Project `spec.project` exists in the Instance's namespace.
    pub project_exists: bool,
    /// The Offering `spec.offering`, if it exists.
    pub offering: Option<&'a Offering>,
}

/// Checks an Instance being created (`old` is `None`) or updated, with the
/// rules and messages the operator reports in status
/// ([`cmp_crds::references`]). An update that changes neither the version
/// nor the plan is not checked (project and offering cannot change), and one
/// that keeps the version may keep it deprecated.
pub fn check_instance(new: &Instance, old: Option<&Instance>, refs: InstanceReferences<'_>) -> Result<(), String> {
    let spec = &new.spec;
    let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
    let version_kept = old.is_some_and(|o| o.spec.version == spec.version);
    if old.is_none() && !refs.project_exists {
        return Err(project_not_found(spec, namespace).message);
    }
    // A changed config (or a new Instance's) must give its declared settings valid values; keys the version does
    // not declare are not refused here (an Offering may drop a setting later), the operator reports them in status.
    if old.is_none_or(|o| o.spec.config != spec.config)
        && let Some(version) = refs.offering.and_then(|o| o.version(&spec.version))
    {
        let declared: std::collections::BTreeMap<String, String> = spec
            .config
            .iter()
            .filter(|(key, _)| version.settings.iter().any(|s| &s.name == *key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (_, problems) = cmp_crds::inputs::parse_settings(&version.settings, &declared);
        if !problems.is_empty() {
            return Err(format!("spec.config: {}", problems.join("; ")));
        }
    }
    if version_kept && old.is_some_and(|o| o.spec.plan == spec.plan) {
        return Ok(());
    }
    resolve_catalog(spec, refs.offering, version_kept).map(|_| ()).map_err(|u| u.message)
}

/// Checks a Wallet write by `username`: every grant from `SaleorOrder` that
/// `old` does not hold must come from one of the `provisioners`.
pub fn check_wallet(new: &Wallet, old: Option<&Wallet>, username: &str, provisioners: &[String]) -> Result<(), String> {
    if provisioners.iter().any(|p| p == username) {
        return Ok(());
    }
    let held = |id: &str| old.is_some_and(|o| o.spec.grants.iter().any(|g| g.id == id));
    match new.spec.grants.iter().enumerate().find(|(_, g)| g.source == GrantSource::SaleorOrder && !held(&g.id)) {
        Some((i, grant)) => Err(format!(
            "spec.grants[{i}].source: grant {:?} comes from a SaleorOrder, and only the Saleor provisioner may append those; {username} may append Manual or Refund grants",
            grant.id
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::wallet::{Grant, WalletSpec};

    fn offering() -> Offering {
        serde_yaml::from_str(include_str!("../../examples/20-offering.yaml")).expect("the example Offering")
    }

    fn instance(version: &str, plan: &str) -> Instance {
        let mut i: Instance =
            serde_yaml::from_str(include_str!("../../examples/50-instance.yaml")).expect("the example Instance");
        i.spec.version = version.into();
        i.spec.plan = plan.into();
        i
    }

    fn found(offering: &Offering) -> InstanceReferences<'_> {
        InstanceReferences { project_exists: true, offering: Some(offering) }
    }

    #[test]
    fn a_new_instance_needs_its_project_offering_version_and_plan() {
        let o = offering();
        assert_eq!(check_instance(&instance("1.1.0", "pro"), None, found(&o)), Ok(()));
        let missing_project = InstanceReferences { project_exists: false, offering: Some(&o) };
        assert!(
            check_instance(&instance("1.1.0", "pro"), None, missing_project)
                .is_err_and(|m| m.starts_with("spec.project is "))
        );
        let missing_offering = InstanceReferences { project_exists: true, offering: None };
        assert!(
            check_instance(&instance("1.1.0", "pro"), None, missing_offering)
                .is_err_and(|m| m.starts_with("spec.offering is "))
        );
        assert!(
            check_instance(&instance("9.9.9", "pro"), None, found(&o))
                .is_err_and(|m| m.starts_with("spec.version is ") && m.contains("1.1.0"))
        );
        assert!(
            check_instance(&instance("1.1.0", "gold"), None, found(&o))
                .is_err_and(|m| m.starts_with("spec.plan is ") && m.contains("starter, pro, enterprise"))
        );
    }

    #[test]
    fn a_deprecated_version_cannot_be_chosen_but_can_be_kept() {
        let o = offering();
        let deprecated = instance("1.0.0", "pro");
        assert!(check_instance(&deprecated, None, found(&o)).is_err_and(|m| m.contains("deprecated")));
        assert!(check_instance(&deprecated, Some(&instance("1.1.0", "pro")), found(&o)).is_err(), "nor moved to");
        let mut suspended = deprecated.clone();
        suspended.spec.suspended = true;
        assert_eq!(
            check_instance(&suspended, Some(&deprecated), found(&o)),
            Ok(()),
            "an Instance already on it may stay"
        );
        let gone = InstanceReferences { project_exists: false, offering: None };
        assert_eq!(
            check_instance(&suspended, Some(&deprecated), gone),
            Ok(()),
            "a missing Offering never blocks a suspension"
        );
    }

    #[test]
    fn a_changed_config_must_give_declared_settings_valid_values() {
        let mut o = offering();
        for version in &mut o.spec.versions {
            version.settings = serde_json::from_value(serde_json::json!([
                {"name": "tone", "type": "string", "choices": ["formal", "casual"], "target": {"global": "TONE"}},
            ]))
            .expect("settings");
        }
        let with = |config: &[(&str, &str)]| {
            let mut i = instance("1.1.0", "pro");
            i.spec.config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            i
        };
        assert_eq!(check_instance(&with(&[("tone", "casual")]), None, found(&o)), Ok(()));
        let refused = check_instance(&with(&[("tone", "angry")]), None, found(&o)).expect_err("refused");
        assert!(refused.starts_with("spec.config: ") && refused.contains("formal, casual"), "{refused}");
        assert_eq!(
            check_instance(&with(&[("colour", "blue")]), None, found(&o)),
            Ok(()),
            "an undeclared key is reported in status, not refused"
        );
        // An old Instance whose config an Offering change made invalid is not refused on an unrelated update.
        let old = with(&[("tone", "angry")]);
        let mut suspended = old.clone();
        suspended.spec.suspended = true;
        assert_eq!(check_instance(&suspended, Some(&old), found(&o)), Ok(()));
        assert!(check_instance(&with(&[("tone", "loud")]), Some(&old), found(&o)).is_err(), "but a config change is");
    }

    fn grant(id: &str, source: GrantSource) -> Grant {
        Grant {
            id: id.into(),
            credits: 10,
            reason: String::new(),
            source,
            order_ref: Some("O/L".into()),
            expires_at: None,
        }
    }

    #[test]
    fn only_the_provisioner_appends_saleor_order_grants() {
        let provisioners = vec!["system:serviceaccount:cmp-system:cmp-webhook".to_string()];
        let old = Wallet::new(
            "w",
            WalletSpec { grants: vec![grant("saleor.a.b", GrantSource::SaleorOrder)], ..Default::default() },
        );
        let mut new = old.clone();
        new.spec.grants.push(grant("saleor.c.d", GrantSource::SaleorOrder));
        assert!(
            check_wallet(&new, Some(&old), "alice", &provisioners)
                .is_err_and(|m| m.starts_with("spec.grants[1].source: "))
        );
        assert_eq!(check_wallet(&new, Some(&old), &provisioners[0], &provisioners), Ok(()));
        let mut manual = old.clone();
        manual.spec.grants.push(grant("manual-1", GrantSource::Manual));
        assert_eq!(check_wallet(&manual, Some(&old), "alice", &provisioners), Ok(()), "admins still add manual grants");
        assert!(check_wallet(&old, None, "alice", &provisioners).is_err(), "nor at creation");
    }
}
