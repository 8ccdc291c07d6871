//! An Instance's connector bindings: each must lie inside its Project's
//! `connectors/<org>/<project>/` (else nothing of the runtime is written);
//! each binding's secret is reported as found or missing, its MCP server as
//! allowed or not (the platform's allow-list, [`cmp_crds::connectors`]), and
//! its tools as its `allowedTools` within the Offering's bound. The gateway,
//! which alone holds the credentials, probes each callable binding's MCP
//! server (`status.connectorProbes`): a server that did not answer, or that
//! lacks an allowed tool, is named too. Whether all of it can be called is
//! the `ConnectorsReady` condition. Pure: what Vault held is what the
//! operator last saw there, and a probe is used only for the binding it probed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cmp_crds::conditions::{CONNECTORS_READY, NewCondition, READY, reasons};
use cmp_crds::connectors::{HostPattern, UrlCheck, allowed_tools, check_url, fingerprint};
use cmp_crds::instance::{ConnectorDestination, ConnectorProbe, ConnectorSecret, ConnectorStatus};
use cmp_crds::{Instance, OfferingSpec};
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
    /// `ConnectorsReady`, when the Instance has bindings.
    pub callable: Option<NewCondition<'static>>,
    /// Paths to look at in Vault now.
    pub check: Vec<String>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

/// What the connector side is judged against.
pub struct Bounds<'a> {
    /// The Instance's Offering, when it can be read (its connectors bound the tools).
    pub offering: Option<&'a OfferingSpec>,
    /// The platform's allow-list of connector hosts.
    pub allowed_hosts: &'a [HostPattern],
}

/// The connector side of `instance`, in Organization `organization`, with
/// Vault configured or not, given the last looks at each path.
pub fn connectors(
    instance: &Instance,
    organization: &str,
    vault: bool,
    checks: &BTreeMap<String, SecretCheck>,
    bounds: &Bounds<'_>,
    now: Timestamp,
) -> ConnectorsState {
    let prefix = cmp_crds::names::connector_prefix(organization, &instance.spec.project);
    let mut state = ConnectorsState::default();
    let mut outside = Vec::new();
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    for binding in &instance.spec.connectors {
        let path = &binding.vault_path;
        let (secret, message) = if !cmp_crds::connectors::inside_tenant(organization, &instance.spec.project, binding) {
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
        let tools = allowed_tools(bounds.offering, binding);
        let (destination, problem) = match check_url(binding, bounds.allowed_hosts) {
            UrlCheck::Allowed => match denied(instance, binding) {
                Some(why) => (ConnectorDestination::Denied, Some(Problem::Denied(why))),
                None => (ConnectorDestination::Allowed, None),
            },
            UrlCheck::NoUrl => (ConnectorDestination::NoUrl, Some(Problem::NoUrl)),
            UrlCheck::Malformed => {
                (ConnectorDestination::NotAllowed, Some(Problem::Host("its url is not http(s)".into())))
            }
            UrlCheck::NotAllowed(host) => (ConnectorDestination::NotAllowed, Some(Problem::Host(host))),
        };
        let problem = problem
            .or_else(|| (!tools.beyond_offering.is_empty()).then(|| Problem::Tools(tools.beyond_offering.clone())))
            .or_else(|| probed(instance, binding, &tools.allowed));
        if let Some(problem) = problem {
            problems.push((binding.name.clone(), problem));
        }
        state.status.push(ConnectorStatus {
            name: binding.name.clone(),
            vault_path: path.clone(),
            secret,
            message,
            destination: Some(destination),
            allowed_tools: tools.allowed.into_iter().collect(),
        });
    }
    state.callable = callable(instance, &problems, &missing, bounds.allowed_hosts);
    if !outside.is_empty() {
        let message = format!(
            "spec.connectors {} lie outside this Project's {prefix}: each vaultPath must start with it; nothing is committed until they do",
            outside.join(", ")
        );
        state.outside_tenant = Some(NewCondition::new(READY, false, reasons::CONNECTOR_OUTSIDE_TENANT, message));
    }
    state
}

/// Why a binding cannot be called.
enum Problem {
    NoUrl,
    Host(String),
    Denied(String),
    Tools(Vec<String>),
    NotAnswering(String),
    ToolsMissing(Vec<String>),
}

/// What the gateway's last probe of this very binding says is wrong, if anything.
/// Why the gateway refused to connect to the binding's server as it is (its host resolved to a denied address), if
/// its last probe says so: the operator reports it, the gateway refuses every call to it anyway.
fn denied(instance: &Instance, binding: &cmp_crds::instance::ConnectorBinding) -> Option<String> {
    let probes = instance.status.as_ref().map(|s| s.connector_probes.as_slice()).unwrap_or_default();
    let probe = probes.iter().find(|p| p.name == binding.name && p.binding == fingerprint(binding))?;
    probe.refused.then(|| probe.message.clone())
}

fn probed(
    instance: &Instance,
    binding: &cmp_crds::instance::ConnectorBinding,
    allowed: &BTreeSet<String>,
) -> Option<Problem> {
    let probes = instance.status.as_ref().map(|s| s.connector_probes.as_slice()).unwrap_or_default();
    let probe: &ConnectorProbe = probes.iter().find(|p| p.name == binding.name && p.binding == fingerprint(binding))?;
    if !probe.answered {
        return Some(Problem::NotAnswering(probe.message.clone()));
    }
    let missing: Vec<String> = allowed.iter().filter(|t| !probe.tools.contains(t)).cloned().collect();
    (!missing.is_empty()).then_some(Problem::ToolsMissing(missing))
}

/// `ConnectorsReady`: the first problem of each kind, named with its bindings.
fn callable(
    instance: &Instance,
    problems: &[(String, Problem)],
    missing: &[String],
    allowed: &[HostPattern],
) -> Option<NewCondition<'static>> {
    if instance.spec.connectors.is_empty() {
        return None;
    }
    let named = |pick: fn(&Problem) -> Option<String>| -> Vec<String> {
        problems.iter().filter_map(|(name, p)| pick(p).map(|what| format!("{name}{what}"))).collect()
    };
    let no_url = named(|p| matches!(p, Problem::NoUrl).then(String::new));
    let hosts = named(|p| match p {
        Problem::Host(host) => Some(format!(" ({host})")),
        _ => None,
    });
    let denied = named(|p| match p {
        Problem::Denied(why) => Some(format!(" ({why})")),
        _ => None,
    });
    let tools = named(|p| match p {
        Problem::Tools(tools) => Some(format!(" ({})", tools.join(", "))),
        _ => None,
    });
    let silent = named(|p| match p {
        Problem::NotAnswering(why) => Some(format!(" ({why})")),
        _ => None,
    });
    let lacking = named(|p| match p {
        Problem::ToolsMissing(tools) => Some(format!(" ({})", tools.join(", "))),
        _ => None,
    });
    let allowed = if allowed.is_empty() {
        "empty".to_string()
    } else {
        allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let condition = if !no_url.is_empty() {
        (
            reasons::CONNECTOR_WITHOUT_URL,
            format!(
                "bindings {} name no MCP server: set spec.connectors[].url; until then the agent cannot call their tools",
                no_url.join(", ")
            ),
        )
    } else if !hosts.is_empty() {
        (
            reasons::CONNECTOR_HOST_NOT_ALLOWED,
            format!(
                "bindings {} point at hosts off the platform's allow-list ({allowed}): the gateway refuses every call; point them at an allowed host or ask the platform operator to allow it",
                hosts.join(", ")
            ),
        )
    } else if !denied.is_empty() {
        (
            reasons::CONNECTOR_DESTINATION_DENIED,
            format!(
                "bindings {} point at hosts that resolve to addresses no binding may reach (the gateway checked after DNS resolution): it refuses every call; point them at a server outside the cluster's networks",
                denied.join("; ")
            ),
        )
    } else if !tools.is_empty() {
        (
            reasons::CONNECTOR_TOOLS_BEYOND_OFFERING,
            format!(
                "bindings {} allow tools their Offering does not allow for their type: those stay refused; remove them from allowedTools",
                tools.join(", ")
            ),
        )
    } else if !missing.is_empty() {
        (
            reasons::CONNECTOR_SECRET_MISSING,
            format!("no secret at {}: write the connector credentials there", missing.join(", ")),
        )
    } else if !silent.is_empty() {
        (
            reasons::CONNECTOR_NOT_ANSWERING,
            format!(
                "the MCP servers of bindings {} did not answer the gateway's probe with their own credential: fix the server, its url or its credential",
                silent.join("; ")
            ),
        )
    } else if !lacking.is_empty() {
        (
            reasons::CONNECTOR_TOOLS_MISSING,
            format!(
                "bindings {} allow tools their MCP server does not list: calls to them will fail; remove them from allowedTools or add them to the server",
                lacking.join(", ")
            ),
        )
    } else {
        return Some(NewCondition::new(
            CONNECTORS_READY,
            true,
            reasons::CONNECTORS_CALLABLE,
            "every binding names an allowed MCP server and its credential is in place",
        ));
    };
    Some(NewCondition::new(CONNECTORS_READY, false, condition.0, condition.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::instance::ConnectorBinding;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    const NO_BOUNDS: Bounds<'static> = Bounds { offering: None, allowed_hosts: &[] };

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
            &NO_BOUNDS,
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
        let mut i = instance(&[path]);
        i.spec.connectors[0].url = Some("https://desk.example.com/mcp".into());
        let hosts: Vec<HostPattern> = vec!["desk.example.com".parse().expect("a host")];
        let bounds = Bounds { offering: None, allowed_hosts: &hosts };
        let first = connectors(&i, "acme", true, &BTreeMap::new(), &NO_BOUNDS, at(1));
        assert!(first.outside_tenant.is_none());
        assert_eq!(first.check, vec![path.to_string()]);
        assert_eq!(first.status[0].secret, ConnectorSecret::Unknown);

        let missing = connectors(&i, "acme", true, &seen(path, Ok(false), 1), &bounds, at(2));
        assert_eq!(missing.status[0].secret, ConnectorSecret::Missing);
        let ready = missing.callable.clone().expect("ConnectorsReady says so");
        assert_eq!(ready.status, "False", "the agent runs; its tools cannot be called");
        assert_eq!(ready.reason, "ConnectorSecretMissing");
        assert!(ready.message.contains(path), "{}", ready.message);
        assert!(missing.check.is_empty(), "not again before the recheck");
        assert_eq!(missing.requeue, Some(MISSING_RECHECK));
        assert_eq!(connectors(&i, "acme", true, &seen(path, Ok(false), 1), &NO_BOUNDS, at(12)).check.len(), 1);

        let found = connectors(&i, "acme", true, &seen(path, Ok(true), 1), &bounds, at(2));
        assert_eq!(found.status[0].secret, ConnectorSecret::Found);
        assert_eq!(found.callable.expect("a condition").reason, reasons::CONNECTORS_CALLABLE);
        assert_eq!(found.requeue, Some(FOUND_RECHECK));

        let unreachable = connectors(&i, "acme", true, &seen(path, Err("refused".into()), 1), &NO_BOUNDS, at(2));
        assert_eq!(
            (unreachable.status[0].secret, unreachable.status[0].message.as_str()),
            (ConnectorSecret::Unknown, "refused")
        );
    }

    #[test]
    fn without_vault_a_binding_is_unknown_and_says_how_to_configure_it() {
        let state =
            connectors(&instance(&["connectors/acme/support/crm"]), "acme", false, &BTreeMap::new(), &NO_BOUNDS, at(1));
        assert_eq!(state.status[0].secret, ConnectorSecret::Unknown);
        assert!(state.status[0].message.contains("--vault-addr"));
        assert!(state.check.is_empty() && state.requeue.is_none());
    }

    #[test]
    fn connectors_ready_names_what_keeps_a_binding_from_being_called() {
        let mut i = instance(&["connectors/acme/support/crm"]);
        let offering: cmp_crds::OfferingSpec = {
            let mut o = crate::fixtures::offering(cmp_crds::offering::RuntimeMode::Shared, vec![]).spec;
            o.connectors = serde_json::from_value(serde_json::json!([{"type": "http", "tools": ["get_ticket"]}]))
                .expect("connectors");
            o
        };
        let hosts: Vec<HostPattern> = vec!["*.example.com".parse().expect("a pattern")];
        let bounds = Bounds { offering: Some(&offering), allowed_hosts: &hosts };
        let found = seen("connectors/acme/support/crm", Ok(true), 1);
        let reason = |i: &Instance| {
            let state = connectors(i, "acme", true, &found, &bounds, at(2));
            let c = state.callable.expect("a condition");
            (c.status.to_string(), c.reason.to_string(), c.message.to_string(), state.status)
        };
        let (status, why, message, _) = reason(&i);
        assert_eq!((status.as_str(), why.as_str()), ("False", reasons::CONNECTOR_WITHOUT_URL), "{message}");
        assert!(message.contains("c0"), "{message}");
        i.spec.connectors[0].url = Some("https://tools.evil.net/mcp".into());
        let (_, why, message, status) = reason(&i);
        assert_eq!(why, reasons::CONNECTOR_HOST_NOT_ALLOWED, "{message}");
        assert!(message.contains("tools.evil.net") && message.contains("*.example.com"), "{message}");
        assert_eq!(status[0].destination, Some(ConnectorDestination::NotAllowed));
        i.spec.connectors[0].url = Some("https://desk.example.com/mcp".into());
        i.spec.connectors[0].allowed_tools = vec!["get_ticket".into(), "drop_tables".into()];
        let (_, why, message, status) = reason(&i);
        assert_eq!(why, reasons::CONNECTOR_TOOLS_BEYOND_OFFERING, "{message}");
        assert!(message.contains("drop_tables"), "{message}");
        assert_eq!(status[0].allowed_tools, vec!["get_ticket".to_string()], "only what the Offering allows");
        i.spec.connectors[0].allowed_tools = vec!["get_ticket".into()];
        let (state, why, _, status) = reason(&i);
        assert_eq!((state.as_str(), why.as_str()), ("True", reasons::CONNECTORS_CALLABLE));
        assert_eq!(status[0].destination, Some(ConnectorDestination::Allowed));

        // The gateway's probes: one of this very binding counts, one of an earlier binding does not.
        let probe = |binding: &ConnectorBinding, answered: bool, tools: &[&str]| ConnectorProbe {
            name: binding.name.clone(),
            binding: cmp_crds::connectors::fingerprint(binding),
            probed_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1)),
            answered,
            refused: false,
            tools: tools.iter().map(|t| t.to_string()).collect(),
            message: if answered { String::new() } else { "the MCP server answered 401".into() },
        };
        let probed = |i: &Instance, p: ConnectorProbe| {
            let mut i = i.clone();
            i.status.get_or_insert_default().connector_probes = vec![p];
            i
        };
        let silent = probed(&i, probe(&i.spec.connectors[0], false, &[]));
        let (state, why, message, _) = reason(&silent);
        assert_eq!((state.as_str(), why.as_str()), ("False", reasons::CONNECTOR_NOT_ANSWERING), "{message}");
        assert!(message.contains("c0 (the MCP server answered 401)"), "{message}");
        // A probe the gateway refused to make: the host resolves to a denied address.
        let mut refused = probe(&i.spec.connectors[0], false, &[]);
        refused.refused = true;
        refused.message = "the binding's host desk.example.com resolves to 10.0.0.7:443, inside the denied network 10.0.0.0/8: a connector may not reach it".into();
        let (state, why, message, status) = reason(&probed(&i, refused));
        assert_eq!((state.as_str(), why.as_str()), ("False", reasons::CONNECTOR_DESTINATION_DENIED), "{message}");
        assert!(message.contains("c0 (the binding's host desk.example.com resolves to 10.0.0.7:443"), "{message}");
        assert_eq!(status[0].destination, Some(ConnectorDestination::Denied));
        let lacking = probed(&i, probe(&i.spec.connectors[0], true, &["create_ticket"]));
        let (_, why, message, _) = reason(&lacking);
        assert_eq!(why, reasons::CONNECTOR_TOOLS_MISSING, "{message}");
        assert!(message.contains("c0 (get_ticket)"), "{message}");
        let complete = probed(&i, probe(&i.spec.connectors[0], true, &["create_ticket", "get_ticket"]));
        assert_eq!(reason(&complete).1, reasons::CONNECTORS_CALLABLE);
        let mut earlier = i.spec.connectors[0].clone();
        earlier.url = Some("https://old.example.com/mcp".into());
        let stale = probed(&i, probe(&earlier, false, &[]));
        assert_eq!(
            reason(&stale).1,
            reasons::CONNECTORS_CALLABLE,
            "a probe of the binding before it moved is not used"
        );
        assert!(
            connectors(&instance(&[]), "acme", true, &found, &bounds, at(2)).callable.is_none(),
            "no bindings, no condition"
        );
    }
}
