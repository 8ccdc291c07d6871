//! An Instance's connector bindings: each must lie inside its Project's
//! `connectors/<org>/<project>/` (else nothing of the runtime is written),
//! and each binding's secret is reported as found or missing. Pure: what
//! Vault held is what the operator last saw there.

use std::collections::BTreeMap;
use std::time::Duration;

use cmp_crds::Instance;
use cmp_crds::conditions::{NewCondition, READY, reasons};
use cmp_crds::instance::{ConnectorSecret, ConnectorStatus};
use k8s_openapi::jiff::Timestamp;

use crate::shell::elapsed;
use crate::vault::connectors::SecretCheck;

/// How soon a secret seen missing, or not seen at all, is looked at again.
pub const MISSING_RECHECK: Duration = Duration::from_secs(10);
/// How often a secret seen present is looked at again (it may be deleted).
pub const FOUND_RECHECK: Duration = Duration::from_secs(300);

/// What the connector side decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectorsState {
    /// `status.connectors`.
    pub status: Vec<ConnectorStatus>,
    /// A binding outside the tenant's prefix: the condition that refuses the runtime.
    pub outside_tenant: Option<NewCondition<'static>>,
    /// Bindings whose secret is missing: the `Ready` condition that says so.
    pub missing: Option<NewCondition<'static>>,
    /// Paths to look at in Vault now.
    pub check: Vec<String>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

/// The connector side of `instance`, in Organization `organization`, with
/// Vault configured or not, given the last looks at each path.
pub fn connectors(
    instance: &Instance,
    organization: &str,
    vault: bool,
    checks: &BTreeMap<String, SecretCheck>,
    now: Timestamp,
) -> ConnectorsState {
    let prefix = cmp_crds::names::connector_prefix(organization, &instance.spec.project);
    let mut state = ConnectorsState::default();
    let mut outside = Vec::new();
    let mut missing = Vec::new();
    for binding in &instance.spec.connectors {
        let path = &binding.vault_path;
        let (secret, message) = if !path.starts_with(&prefix) {
            outside.push(format!("{} ({path})", binding.name));
            (ConnectorSecret::OutsideTenant, format!("{path} is not inside {prefix}: refused"))
        } else if !vault {
            let message = "no Vault/OpenBao is configured: start the operator with --vault-addr <address>";
            (ConnectorSecret::Unknown, message.to_string())
        } else {
            let check = checks.get(path);
            let due = match check.map(|c| &c.found) {
                None => true,
                Some(Ok(true)) => check.is_some_and(|c| elapsed(c.at, now) >= FOUND_RECHECK),
                Some(_) => check.is_some_and(|c| elapsed(c.at, now) >= MISSING_RECHECK),
            };
            if due {
                state.check.push(path.clone());
            }
            let next = if matches!(check.map(|c| &c.found), Some(Ok(true))) { FOUND_RECHECK } else { MISSING_RECHECK };
            state.requeue = Some(state.requeue.map_or(next, |r| r.min(next)));
            match check.map(|c| &c.found) {
                Some(Ok(true)) => (ConnectorSecret::Found, String::new()),
                Some(Ok(false)) => {
                    missing.push(path.clone());
                    (ConnectorSecret::Missing, format!("no secret at {path}: write it there (KV v2)"))
                }
                Some(Err(e)) => (ConnectorSecret::Unknown, e.clone()),
                None => (ConnectorSecret::Unknown, "not looked at yet".to_string()),
            }
        };
        state.status.push(ConnectorStatus { name: binding.name.clone(), vault_path: path.clone(), secret, message });
    }
    if !outside.is_empty() {
        let message = format!(
            "spec.connectors {} lie outside this Project's {prefix}: each vaultPath must start with it; nothing is committed until they do",
            outside.join(", ")
        );
        state.outside_tenant = Some(NewCondition::new(READY, false, reasons::CONNECTOR_OUTSIDE_TENANT, message));
    }
    if !missing.is_empty() {
        let message = format!(
            "no secret at {}: write the connector credentials there; the runtime's Vault agent waits for them",
            missing.join(", ")
        );
        state.missing = Some(NewCondition::new(READY, false, reasons::CONNECTOR_SECRET_MISSING, message));
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::instance::ConnectorBinding;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn instance(paths: &[&str]) -> Instance {
        let mut i = crate::fixtures::instance("support");
        i.spec.connectors = paths
            .iter()
            .enumerate()
            .map(|(n, p)| ConnectorBinding {
                name: format!("c{n}"),
                type_: "http".into(),
                vault_path: (*p).into(),
                allowed_tools: vec![],
                url: None,
                credential: None,
                timeout_seconds: 30,
            })
            .collect();
        i
    }

    fn seen(path: &str, found: Result<bool, String>, secs: i64) -> BTreeMap<String, SecretCheck> {
        BTreeMap::from([(path.to_string(), SecretCheck { found, at: at(secs) })])
    }

    #[test]
    fn a_path_outside_the_project_is_refused_naming_it() {
        let other_project = "connectors/acme/sales/crm";
        let other_org = "connectors/globex/support/crm";
        let own_prefix_lookalike = "connectors/acme/support-2/crm";
        let state = connectors(
            &instance(&[other_project, other_org, own_prefix_lookalike]),
            "acme",
            true,
            &BTreeMap::new(),
            at(1),
        );
        let refusal = state.outside_tenant.expect("refused");
        assert_eq!(refusal.reason, "ConnectorOutsideTenant");
        for path in [other_project, other_org, own_prefix_lookalike] {
            assert!(refusal.message.contains(path), "{}", refusal.message);
        }
        assert!(refusal.message.contains("connectors/acme/support/"), "names the allowed prefix");
        assert!(state.status.iter().all(|c| c.secret == ConnectorSecret::OutsideTenant));
        assert!(state.check.is_empty(), "Vault is not asked about another tenant's path");
    }

    #[test]
    fn a_binding_inside_the_project_is_looked_at_then_found_or_missing() {
        let path = "connectors/acme/support/crm";
        let i = instance(&[path]);
        let first = connectors(&i, "acme", true, &BTreeMap::new(), at(1));
        assert!(first.outside_tenant.is_none());
        assert_eq!(first.check, vec![path.to_string()]);
        assert_eq!(first.status[0].secret, ConnectorSecret::Unknown);

        let missing = connectors(&i, "acme", true, &seen(path, Ok(false), 1), at(2));
        assert_eq!(missing.status[0].secret, ConnectorSecret::Missing);
        let ready = missing.missing.expect("Ready says so");
        assert_eq!(ready.reason, "ConnectorSecretMissing");
        assert!(ready.message.contains(path), "{}", ready.message);
        assert!(missing.check.is_empty(), "not again before the recheck");
        assert_eq!(missing.requeue, Some(MISSING_RECHECK));
        assert_eq!(connectors(&i, "acme", true, &seen(path, Ok(false), 1), at(12)).check.len(), 1);

        let found = connectors(&i, "acme", true, &seen(path, Ok(true), 1), at(2));
        assert_eq!(found.status[0].secret, ConnectorSecret::Found);
        assert!(found.missing.is_none());
        assert_eq!(found.requeue, Some(FOUND_RECHECK));

        let unreachable = connectors(&i, "acme", true, &seen(path, Err("refused".into()), 1), at(2));
        assert_eq!(
            (unreachable.status[0].secret, unreachable.status[0].message.as_str()),
            (ConnectorSecret::Unknown, "refused")
        );
    }

    #[test]
    fn without_vault_a_binding_is_unknown_and_says_how_to_configure_it() {
        let state = connectors(&instance(&["connectors/acme/support/crm"]), "acme", false, &BTreeMap::new(), at(1));
        assert_eq!(state.status[0].secret, ConnectorSecret::Unknown);
        assert!(state.status[0].message.contains("--vault-addr"));
        assert!(state.check.is_empty() && state.requeue.is_none());
    }
}
