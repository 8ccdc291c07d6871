//! That every rule of the chart's RBAC is used: the other half of least
//! privilege. (The first half, that the rules are enough, is the integration
//! tests running each binary as its chart identity.)
//!
//! `cargo xtask test` runs the suite against a control plane that audits
//! every ServiceAccount's requests ([`crate::ControlPlane::start_audited`]).
//! Afterwards [`report`] sets each verb of each rule the chart renders with
//! every option on ([`grants`]) against the requests RBAC allowed through
//! that kind of role for that component ([`read_uses`]). A verb is used when
//! it was called, or, for the operator, when the Roles it gives people grant
//! it (RBAC lets only a holder grant a right). Anything else is a rule to
//! remove, or a call no test makes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::BufRead;
use std::path::Path;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;

use crate::Error;
use crate::chart_identity::{COMPONENTS, Component};

/// One verb on one resource that one of a component's roles grants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Whose role.
    pub component: &'static str,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// The role's name as rendered.
    pub role: String,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The resource, with `/subresource` when it names one.
    pub resource: String,
    /// The verb.
    pub verb: String,
    /// The rule's `resourceNames`, when it narrows to them.
    pub resource_names: Vec<String>,
}

impl Grant {
    fn key(&self) -> UseKey {
        UseKey {
            component: self.component,
            role_kind: self.role_kind.clone(),
            api_group: self.api_group.clone(),
            resource: self.resource.clone(),
            verb: self.verb.clone(),
        }
    }
}

/// A request RBAC allowed: which component, through which kind of its roles,
/// which verb on which resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UseKey {
    /// The component whose ServiceAccount made it.
    pub component: &'static str,
    /// The kind of the role that allowed it.
    pub role_kind: String,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The resource, with `/subresource`.
    pub resource: String,
    /// The verb (`create` too for a patch or update that created the object).
    pub verb: String,
}

/// Each `(group, resource, verb)` that `rule` grants.
pub fn verbs_of(rule: &PolicyRule) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for group in rule.api_groups.iter().flatten() {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                all.push((group.clone(), resource.clone(), verb.clone()));
            }
        }
    }
    all
}

/// Every verb every role of the three components grants, from a rendering of the chart.
pub fn grants(rendered: &str) -> Result<Vec<Grant>, Error> {
    let mut all = Vec::new();
    for object in crate::chart_identity::documents(rendered)? {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let Some(component) = crate::chart_identity::component_of(&object) else { continue };
        let role = object["metadata"]["name"].as_str().unwrap_or_default();
        let rules: Vec<PolicyRule> = serde_yaml::from_value(object["rules"].clone())
            .map_err(|e| Error::Process(format!("the rules of {kind} {role} do not parse: {e}")))?;
        for rule in &rules {
            for (api_group, resource, verb) in verbs_of(rule) {
                all.push(Grant {
                    component: component.name(),
                    role_kind: kind.to_string(),
                    role: role.to_string(),
                    api_group,
                    resource,
                    verb,
                    resource_names: rule.resource_names.clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(all)
}

/// The fields of an audit event (`audit.k8s.io/v1`) that say who did what and who allowed it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    verb: String,
    user: AuditUser,
    /// Set when the component acted as someone else (and was allowed to).
    impersonated_user: Option<ImpersonatedUser>,
    object_ref: Option<ObjectRef>,
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Debug, Deserialize)]
struct ImpersonatedUser {
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    #[serde(default)]
    api_group: String,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    code: Option<u16>,
}

/// What one audit log line says was used: nothing unless RBAC allowed a
/// request of a chart component's ServiceAccount on a resource through one of
/// that component's roles. A patch or update that created its object (201)
/// used `create` too: the API server checks that verb inside the handler.
fn uses_in(line: &str) -> Vec<UseKey> {
    let Ok(event) = serde_json::from_str::<AuditEvent>(line) else { return Vec::new() };
    let Some(account) = event.user.username.strip_prefix("system:serviceaccount:") else { return Vec::new() };
    let account = account.rsplit(':').next().unwrap_or_default();
    let Some(component) = COMPONENTS.iter().map(|c| c.name()).find(|c| {
        let own = format!("cmp-{c}");
        account == own || account.ends_with(&format!("-{own}"))
    }) else {
        return Vec::new();
    };
    // An impersonated request used the component's `impersonate` on users (and on groups, when it named any),
    // which only its ClusterRole grants; what the request itself did was authorized as the impersonated user.
    if let Some(impersonated) = &event.impersonated_user {
        let impersonate = |resource: &str| UseKey {
            component,
            role_kind: "ClusterRole".into(),
            api_group: String::new(),
            resource: resource.into(),
            verb: "impersonate".into(),
        };
        let groups = (!impersonated.groups.is_empty()).then(|| impersonate("groups"));
        return std::iter::once(impersonate("users")).chain(groups).collect();
    }
    if event.annotations.get("authorization.k8s.io/decision").map(String::as_str) != Some("allow") {
        return Vec::new();
    }
    let reason = event.annotations.get("authorization.k8s.io/reason").map(String::as_str).unwrap_or_default();
    let Some(role_kind) = allowing_role_kind(reason, component) else { return Vec::new() };
    let Some(object) = event.object_ref else { return Vec::new() };
    let Some(resource) = object.resource else { return Vec::new() };
    let resource = match object.subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    let created = event.response_status.and_then(|s| s.code) == Some(201);
    let mut verbs = vec![event.verb.clone()];
    if created && (event.verb == "patch" || event.verb == "update") {
        verbs.push("create".into());
    }
    verbs
        .into_iter()
        .map(|verb| UseKey {
            component,
            role_kind: role_kind.to_string(),
            api_group: object.api_group.clone(),
            resource: resource.clone(),
            verb,
        })
        .collect()
}

/// The kind of role RBAC's reason names (`... of ClusterRole "x" to ...`),
/// when it is one of `component`'s (its name holds `cmp-<component>`).
fn allowing_role_kind(reason: &str, component: &str) -> Option<&'static str> {
    let own = format!("cmp-{component}");
    ["ClusterRole", "Role"].into_iter().find(|kind| {
        let marker = format!(" of {kind} \"");
        reason.find(&marker).is_some_and(|at| {
            let name = &reason[at + marker.len()..];
            name.split('"').next().is_some_and(|name| name.contains(&own))
        })
    })
}

/// Counts the uses in every file of an audit log directory (the log and its rotations).
pub fn read_uses(audit_dir: &Path) -> Result<BTreeMap<UseKey, u64>, Error> {
    let mut counts = BTreeMap::new();
    let entries = std::fs::read_dir(audit_dir).map_err(|source| Error::Io { path: audit_dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: audit_dir.to_path_buf(), source })?.path();
        let file = std::fs::File::open(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|source| Error::Io { path: path.clone(), source })?;
            for key in uses_in(&line) {
                *counts.entry(key).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// How a granted verb was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Called this many times.
    Called(u64),
    /// Never called, but granted on to people by the operator's Roles.
    GrantedOn,
    /// Neither.
    Unused,
}

/// Every granted verb with its usage.
#[derive(Debug)]
pub struct Report {
    /// The grants, in chart order, with how each was used.
    pub rows: Vec<(Grant, Usage)>,
}

/// Sets `grants` against `uses`. `granted_on` lists `(group, resource, verb)`
/// that the operator's Roles give people in Organizations' namespaces, which
/// only its ClusterRole can hold for it.
pub fn report(
    grants: Vec<Grant>,
    uses: &BTreeMap<UseKey, u64>,
    granted_on: &BTreeSet<(String, String, String)>,
) -> Report {
    let rows = grants
        .into_iter()
        .map(|grant| {
            let usage = match uses.get(&grant.key()) {
                Some(n) => Usage::Called(*n),
                None if grant.component == Component::Operator.name()
                    && grant.role_kind == "ClusterRole"
                    && granted_on.contains(&(grant.api_group.clone(), grant.resource.clone(), grant.verb.clone())) =>
                {
                    Usage::GrantedOn
                }
                None => Usage::Unused,
            };
            (grant, usage)
        })
        .collect();
    Report { rows }
}

impl Report {
    /// The grants nobody used.
    pub fn unused(&self) -> Vec<&Grant> {
        self.rows.iter().filter(|(_, usage)| *usage == Usage::Unused).map(|(grant, _)| grant).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (grant, usage) in &self.rows {
            let group = if grant.api_group.is_empty() { "core" } else { grant.api_group.as_str() };
            let names = if grant.resource_names.is_empty() {
                String::new()
            } else {
                format!(" (only {})", grant.resource_names.join(", "))
            };
            let usage = match usage {
                Usage::Called(n) => format!("{n} calls"),
                Usage::GrantedOn => "granted on to people by the operator's Roles".into(),
                Usage::Unused => "UNUSED".into(),
            };
            writeln!(
                f,
                "  {:<8} {} {:<24} {:<7} {group}/{}{names}: {usage}",
                grant.component, grant.role_kind, grant.role, grant.verb, grant.resource
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cmp-gateway, labels: {app.kubernetes.io/component: gateway}}
rules:
  - apiGroups: [cmp.gsv.dev]
    resources: [wallets/status]
    verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cmp-gateway-runtime-key-k, namespace: d, labels: {app.kubernetes.io/component: gateway}}
rules:
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [k]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cmp-operator, labels: {app.kubernetes.io/component: operator}}
rules:
  - apiGroups: ["", apps]
    resources: [pods]
    verbs: [get, delete]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: cmp-gateway, labels: {app.kubernetes.io/component: gateway}}
"#;

    fn event(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        code: u16,
        reason: &str,
    ) -> String {
        serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user, "groups": ["system:serviceaccounts"]},
            "objectRef": {"resource": resource, "subresource": sub, "apiGroup": group, "namespace": "n", "name": "x"},
            "responseStatus": {"code": code},
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": reason},
        })
        .to_string()
    }

    #[test]
    fn each_verb_of_each_rule_of_each_components_roles_is_a_grant() {
        let all = grants(RENDERED).expect("parses");
        let shown: Vec<String> = all
            .iter()
            .map(|g| {
                format!(
                    "{} {} {}/{} {} {:?}",
                    g.component, g.role_kind, g.api_group, g.resource, g.verb, g.resource_names
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "gateway ClusterRole cmp.gsv.dev/wallets/status patch []",
                "gateway Role /secrets get [\"k\"]",
                "operator ClusterRole /pods get []",
                "operator ClusterRole /pods delete []",
                "operator ClusterRole apps/pods get []",
                "operator ClusterRole apps/pods delete []",
            ]
        );
    }

    #[test]
    fn an_allowed_request_of_a_components_account_through_its_role_is_a_use() {
        let line = event(
            "system:serviceaccount:cmp-run7:run7-cmp-gateway",
            "patch",
            "cmp.gsv.dev",
            "wallets",
            Some("status"),
            200,
            r#"RBAC: allowed by ClusterRoleBinding "run7-cmp-gateway" of ClusterRole "run7-cmp-gateway" to ServiceAccount "run7-cmp-gateway/cmp-run7""#,
        );
        let uses = uses_in(&line);
        assert_eq!(
            uses,
            [UseKey {
                component: "gateway",
                role_kind: "ClusterRole".into(),
                api_group: "cmp.gsv.dev".into(),
                resource: "wallets/status".into(),
                verb: "patch".into(),
            }]
        );
    }

    #[test]
    fn a_request_made_as_someone_else_used_the_components_impersonate_on_users_and_groups() {
        let mut line: serde_json::Value = serde_json::from_str(&event(
            "system:serviceaccount:cmp-system:cmp-gateway",
            "list",
            "cmp.gsv.dev",
            "instances",
            None,
            200,
            r#"RBAC: allowed by RoleBinding "cmp-admin/cmp-acme" of Role "cmp-admin" to User "ada@example.com""#,
        ))
        .expect("json");
        line["impersonatedUser"] = serde_json::json!({"username": "ada@example.com", "groups": ["buyers"]});
        let uses: Vec<(String, String, String)> =
            uses_in(&line.to_string()).into_iter().map(|u| (u.role_kind, u.resource, u.verb)).collect();
        let expected = |resource: &str| ("ClusterRole".to_string(), resource.to_string(), "impersonate".to_string());
        assert_eq!(uses, [expected("users"), expected("groups")], "and not the list, which was ada's");
        line["impersonatedUser"]["groups"] = serde_json::json!([]);
        assert_eq!(uses_in(&line.to_string()).len(), 1, "no group named: only users");
    }

    #[test]
    fn a_patch_that_created_its_object_used_create_too() {
        let line = event(
            "system:serviceaccount:cmp-system:cmp-operator",
            "patch",
            "",
            "resourcequotas",
            None,
            201,
            r#"RBAC: allowed by ClusterRoleBinding "cmp-operator" of ClusterRole "cmp-operator" to ServiceAccount "cmp-operator/cmp-system""#,
        );
        let verbs: Vec<String> = uses_in(&line).into_iter().map(|u| u.verb).collect();
        assert_eq!(verbs, ["patch", "create"]);
    }

    #[test]
    fn requests_of_others_refused_or_allowed_by_other_roles_are_no_use() {
        let by_role =
            r#"RBAC: allowed by RoleBinding "cmp-gateway/ns" of Role "cmp-gateway" to ServiceAccount "cmp-gateway/ns""#;
        let runtime = event("system:serviceaccount:t-a:runtime", "get", "", "secrets", None, 200, by_role);
        let admin = event("admin", "get", "", "secrets", None, 200, by_role);
        let discovery = event(
            "system:serviceaccount:ns:cmp-gateway",
            "create",
            "authorization.k8s.io",
            "selfsubjectreviews",
            None,
            201,
            r#"RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" to Group "system:authenticated""#,
        );
        let mut refused: serde_json::Value = serde_json::from_str(&event(
            "system:serviceaccount:ns:cmp-gateway",
            "get",
            "",
            "secrets",
            None,
            403,
            by_role,
        ))
        .expect("json");
        refused["annotations"]["authorization.k8s.io/decision"] = "forbid".into();
        for line in [runtime, admin, discovery, refused.to_string(), "not json".into()] {
            assert!(uses_in(&line).is_empty(), "{line}");
        }
    }

    #[test]
    fn a_grant_is_called_granted_on_to_people_or_unused() {
        let all = grants(RENDERED).expect("parses");
        let mut uses = BTreeMap::new();
        uses.insert(all[0].key(), 3);
        let granted_on: BTreeSet<(String, String, String)> =
            [(String::new(), "pods".into(), "delete".into())].into_iter().collect();
        let report = report(all, &uses, &granted_on);
        let usages: Vec<&Usage> = report.rows.iter().map(|(_, usage)| usage).collect();
        assert_eq!(
            usages,
            [&Usage::Called(3), &Usage::Unused, &Usage::Unused, &Usage::GrantedOn, &Usage::Unused, &Usage::Unused]
        );
        let text = report.to_string();
        let in_a_role = Grant {
            component: "operator",
            role_kind: "Role".into(),
            role: "cmp-operator".into(),
            api_group: String::new(),
            resource: "pods".into(),
            verb: "delete".into(),
            resource_names: Vec::new(),
        };
        let namespaced = super::report(vec![in_a_role], &uses, &granted_on);
        assert_eq!(namespaced.rows[0].1, Usage::Unused, "a Role in the release namespace grants people nothing");
        assert!(text.contains("patch   cmp.gsv.dev/wallets/status: 3 calls"), "{text}");
        assert!(text.contains("get     core/secrets (only k): UNUSED"), "{text}");
    }
}
