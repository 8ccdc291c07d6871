//! The Roles and RoleBindings the operator gives an organization's people,
//! in its control namespace and in each runtime namespace. Pure functions.

use cmp_crds::organization::{OrganizationSpec, Role as MemberRole, SubjectKind};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

use cmp_crds::names::owned_labels;

/// The three roles, most powerful first.
pub const ROLES: [MemberRole; 3] = [MemberRole::Admin, MemberRole::Developer, MemberRole::Viewer];

/// The name of the Role and RoleBinding of a member role: `cmp-admin`, `cmp-developer`, `cmp-viewer`.
pub fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Admin => "cmp-admin",
        MemberRole::Developer => "cmp-developer",
        MemberRole::Viewer => "cmp-viewer",
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete"];

/// Rules in the control namespace. Nobody gets write access to Wallets:
/// grants are appended only by the operator and the provisioner.
fn control_rules(role: MemberRole) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&["cmp.gsv.dev"], &["wallets"], READ),
        // A subresource is only ever read by name (list and watch come with `wallets`).
        rule(&["cmp.gsv.dev"], &["wallets/status"], &["get"]),
        rule(&[""], &["events"], READ),
        rule(&["events.k8s.io"], &["events"], READ),
    ];
    match role {
        MemberRole::Viewer => rules.push(rule(&["cmp.gsv.dev"], &["instances", "projects"], READ)),
        MemberRole::Developer | MemberRole::Admin => {
            rules.push(rule(&["cmp.gsv.dev"], &["instances", "projects"], WRITE))
        }
    }
    if role != MemberRole::Viewer {
        // The plaintexts of the Instances' API keys are Secrets in the control namespace.
        rules.push(rule(&[""], &["secrets"], READ));
    }
    if role == MemberRole::Admin {
        rules.push(rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], READ));
    }
    rules
}

/// Rules in a runtime namespace: people observe the agent runtimes; the
/// runtimes themselves are deployed by GitOps, and isolation objects
/// (quota, limits, network policies) are read-only for everyone.
fn runtime_rules(role: MemberRole) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&[""], &["pods", "pods/log", "services", "endpoints", "configmaps"], READ),
        rule(&["apps"], &["deployments", "replicasets"], READ),
        rule(&[""], &["events", "resourcequotas", "limitranges"], READ),
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
    ];
    if role != MemberRole::Viewer {
        // Restart a stuck runtime pod.
        rules.push(rule(&[""], &["pods"], &["delete"]));
    }
    rules
}

/// The metadata of the Role and the RoleBinding of `role`.
fn meta(role: MemberRole, namespace: &str, organization: &str, project: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(role_name(role).to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(owned_labels(organization, project)),
        ..Default::default()
    }
}

/// The Role of `role` in `namespace`.
pub fn role(role: MemberRole, namespace: &str, organization: &str, project: Option<&str>) -> Role {
    Role {
        metadata: meta(role, namespace, organization, project),
        rules: Some(if project.is_some() { runtime_rules(role) } else { control_rules(role) }),
    }
}

/// The subjects holding `role`: owners are admins; members hold their own role.
pub fn subjects(spec: &OrganizationSpec, role: MemberRole) -> Vec<Subject> {
    let owners = spec.owners.iter().filter(|_| role == MemberRole::Admin).map(|o| (o.kind, o.name.as_str()));
    let members = spec.members.iter().filter(|m| m.role == role).map(|m| (m.kind, m.name.as_str()));
    let mut subjects: Vec<Subject> = owners
        .chain(members)
        .map(|(kind, name)| Subject {
            kind: match kind {
                SubjectKind::User => "User",
                SubjectKind::Group => "Group",
            }
            .to_string(),
            name: name.to_string(),
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            namespace: None,
        })
        .collect();
    subjects.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    subjects.dedup_by(|a, b| a.kind == b.kind && a.name == b.name);
    subjects
}

/// The RoleBinding of `role` in `namespace`, binding the Role of the same name.
pub fn role_binding(
    spec: &OrganizationSpec,
    role: MemberRole,
    namespace: &str,
    organization: &str,
    project: Option<&str>,
) -> RoleBinding {
    RoleBinding {
        metadata: meta(role, namespace, organization, project),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: role_name(role).to_string(),
        },
        // The API server drops an empty list, so an empty one is left unset
        // (else the live object would never look like the desired one).
        subjects: Some(subjects(spec, role)).filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::organization::{Member, Subject as OrgSubject};

    fn spec() -> OrganizationSpec {
        OrganizationSpec {
            display_name: "Acme".into(),
            owners: vec![OrgSubject { kind: SubjectKind::User, name: "alice".into() }],
            members: vec![
                Member { kind: SubjectKind::User, name: "bob".into(), role: MemberRole::Developer },
                Member { kind: SubjectKind::Group, name: "support".into(), role: MemberRole::Viewer },
                Member { kind: SubjectKind::User, name: "alice".into(), role: MemberRole::Admin },
            ],
            ..Default::default()
        }
    }

    fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups.as_ref().is_some_and(|g| g.iter().any(|x| x == group))
                && r.resources.as_ref().is_some_and(|x| x.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    #[test]
    fn owners_are_admins_and_members_get_their_role_once() {
        let admins = subjects(&spec(), MemberRole::Admin);
        assert_eq!(admins.len(), 1, "alice is an owner and an admin member: bound once");
        assert_eq!(admins[0].name, "alice");
        assert_eq!(subjects(&spec(), MemberRole::Developer)[0].name, "bob");
        let viewers = subjects(&spec(), MemberRole::Viewer);
        assert_eq!((viewers[0].kind.as_str(), viewers[0].name.as_str()), ("Group", "support"));
    }

    #[test]
    fn nobody_may_write_wallets() {
        for r in ROLES {
            let rules = control_rules(r);
            for verb in ["create", "update", "patch", "delete"] {
                assert!(!allows(&rules, "cmp.gsv.dev", "wallets", verb), "{r:?} may {verb} wallets");
            }
            assert!(allows(&rules, "cmp.gsv.dev", "wallets", "get"), "{r:?} reads wallets");
            assert!(allows(&rules, "cmp.gsv.dev", "instances", "list"), "{r:?} reads instances");
        }
    }

    #[test]
    fn developers_manage_projects_and_instances_viewers_do_not() {
        assert!(allows(&control_rules(MemberRole::Developer), "cmp.gsv.dev", "projects", "create"));
        assert!(allows(&control_rules(MemberRole::Developer), "cmp.gsv.dev", "instances", "patch"));
        assert!(!allows(&control_rules(MemberRole::Viewer), "cmp.gsv.dev", "instances", "patch"));
        // API-key plaintexts: admins and developers read them, viewers do not.
        assert!(allows(&control_rules(MemberRole::Developer), "", "secrets", "get"));
        assert!(allows(&control_rules(MemberRole::Admin), "", "secrets", "get"));
        assert!(!allows(&control_rules(MemberRole::Viewer), "", "secrets", "get"));
    }

    #[test]
    fn nobody_may_change_isolation_objects_in_a_runtime_namespace() {
        for r in ROLES {
            let rules = runtime_rules(r);
            for verb in ["create", "update", "patch", "delete"] {
                assert!(!allows(&rules, "networking.k8s.io", "networkpolicies", verb));
                assert!(!allows(&rules, "", "resourcequotas", verb));
            }
        }
    }
}
