//! Names, labels, annotations and the finalizer of the objects CMP creates
//! and reads: the contract between the operator, the gateway, the webhook
//! and the people who annotate objects.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Kubernetes' limit on a namespace name (a DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;

/// Whether `s` is a DNS label (a namespace's, or an Organization's name's shape): at most 63 lower-case letters,
/// digits and '-', not at either end.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAMESPACE_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
/// Prefix of every namespace CMP creates.
pub const NAMESPACE_PREFIX: &str = "cmp-";

/// Label on every namespace CMP creates: `control` or `runtime`. NetworkPolicies trust it.
pub const TENANT_LABEL: &str = "cmp.gsv.dev/tenant";
/// Label naming the Organization a namespace belongs to.
pub const ORGANIZATION_LABEL: &str = "cmp.gsv.dev/organization";
/// Label naming the Project a runtime namespace belongs to.
pub const PROJECT_LABEL: &str = "cmp.gsv.dev/project";
/// Label naming the Instance an API-key Secret belongs to.
pub const INSTANCE_LABEL: &str = "cmp.gsv.dev/instance";
/// Label naming the API key (`spec.apiKeys[].name`) whose plaintext a Secret holds.
pub const API_KEY_LABEL: &str = "cmp.gsv.dev/api-key";
/// Annotation on an API-key Secret: the key's public id (so the operator never reads the plaintext back).
pub const KEY_PUBLIC_ID_ANNOTATION: &str = "cmp.gsv.dev/public-id";
/// Annotation on an API-key Secret: the key's hash, as status carries it.
pub const KEY_HASH_ANNOTATION: &str = "cmp.gsv.dev/key-hash";
/// The key inside an API-key Secret that holds the plaintext.
pub const KEY_SECRET_DATA_KEY: &str = "apiKey";
/// Label on the Instances a Saleor order created: the order's key (a hash of
/// the store's API URL and the order id), so a cancellation finds them.
pub const SALEOR_ORDER_LABEL: &str = "cmp.gsv.dev/saleor-order";
/// Annotation on objects the provisioner created: the Saleor order id.
pub const SALEOR_ORDER_ID_ANNOTATION: &str = "cmp.gsv.dev/saleor-order-id";
/// Annotation on objects the provisioner created: the order number people see.
pub const SALEOR_ORDER_NUMBER_ANNOTATION: &str = "cmp.gsv.dev/saleor-order-number";
/// Annotation on an Instance the provisioner created: the Saleor order line id.
pub const SALEOR_LINE_ID_ANNOTATION: &str = "cmp.gsv.dev/saleor-line-id";
/// Annotation on objects the provisioner created: the store's API URL.
pub const SALEOR_API_URL_ANNOTATION: &str = "cmp.gsv.dev/saleor-api-url";
/// Annotation on an Organization the provisioner created: the buyer's Saleor user id, or e-mail for a guest.
pub const SALEOR_BUYER_ANNOTATION: &str = "cmp.gsv.dev/saleor-buyer";
/// The Project an Organization that CMP creates for a buyer (a paid order, or a sign-up) starts with.
pub const DEFAULT_PROJECT: &str = "default";
/// Annotation on an Organization a sign-up created: the OIDC issuer and subject (`<issuer>#<sub>`) it was made for.
pub const SIGNUP_SUBJECT_ANNOTATION: &str = "cmp.gsv.dev/signup-subject";
/// The gateway's server-side apply field manager and managed-by value, for what a sign-up creates.
pub const GATEWAY_SIGNUP_MANAGER: &str = "cmp-gateway-signup";
/// Annotation on an Instance whose order the store withdrew (cancelled or
/// refunded): why, for example "order #1042 cancelled". Set only by the
/// provisioner; the chart's ValidatingAdmissionPolicy refuses anyone else
/// adding, changing or removing it, so a buyer cannot undo it.
pub const STORE_SUSPENSION_ANNOTATION: &str = "cmp.gsv.dev/suspended-by-store";
/// The provisioner's server-side apply field manager and managed-by value.
pub const PROVISIONER_MANAGER: &str = "cmp-webhook";
/// The standard managed-by label.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Our value of the managed-by label, and our server-side apply field manager.
pub const OPERATOR_MANAGER: &str = "cmp-operator";
/// Value of [`TENANT_LABEL`] on an organization's control namespace.
pub const TENANT_CONTROL: &str = "control";
/// Value of [`TENANT_LABEL`] on a project's runtime namespace.
pub const TENANT_RUNTIME: &str = "runtime";

/// `cmp.gsv.dev/paused: "true"` stops reconciling an object (deletion still proceeds).
pub const PAUSED_ANNOTATION: &str = "cmp.gsv.dev/paused";
/// Any new value of `cmp.gsv.dev/reconcile-requested-at` triggers a reconcile;
/// the handled value is copied to `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "cmp.gsv.dev/reconcile-requested-at";
/// `cmp.gsv.dev/abandon-cleanup: "true"` on an object being deleted removes
/// its finalizer without deleting what the operator created.
pub const ABANDON_CLEANUP_ANNOTATION: &str = "cmp.gsv.dev/abandon-cleanup";
/// The finalizer the operator puts on Organizations and Projects.
pub const FINALIZER: &str = "cmp.gsv.dev/cleanup";

/// The label selector that finds every object the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={OPERATOR_MANAGER}")
}

/// Labels of an object that belongs to an organization (and maybe a project).
pub fn owned_labels(organization: &str, project: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), OPERATOR_MANAGER.to_string()),
        (ORGANIZATION_LABEL.to_string(), organization.to_string()),
    ]);
    if let Some(project) = project {
        labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    }
    labels
}

/// Labels of a tenant namespace: the owned labels plus the tenant label.
pub fn namespace_labels(organization: &str, project: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = owned_labels(organization, project);
    let tenant = if project.is_some() { TENANT_RUNTIME } else { TENANT_CONTROL };
    labels.insert(TENANT_LABEL.to_string(), tenant.to_string());
    labels
}

/// True when the annotation `key` is set to "true".
pub fn flag(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations.get(key).is_some_and(|v| v == "true")
}

/// What an object's annotations ask of the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Steering {
    /// `cmp.gsv.dev/paused: "true"`.
    pub paused: bool,
    /// The value of `cmp.gsv.dev/reconcile-requested-at`.
    pub reconcile_requested_at: Option<String>,
    /// `cmp.gsv.dev/abandon-cleanup: "true"`.
    pub abandon_cleanup: bool,
}

impl Steering {
    /// Reads the steering annotations.
    pub fn of(annotations: &BTreeMap<String, String>) -> Self {
        Self {
            paused: flag(annotations, PAUSED_ANNOTATION),
            reconcile_requested_at: annotations.get(RECONCILE_REQUESTED_ANNOTATION).cloned(),
            abandon_cleanup: flag(annotations, ABANDON_CLEANUP_ANNOTATION),
        }
    }
}

/// The control namespace of an Organization: `cmp-<org>`.
///
/// The Organization schema bounds the name to 59 characters, so this always
/// fits a DNS label.
pub fn control_namespace(organization: &str) -> String {
    format!("{NAMESPACE_PREFIX}{organization}")
}

/// The name of an Organization's Wallet (in its control namespace): the Organization's own name.
pub fn wallet_name(organization: &str) -> String {
    organization.to_string()
}

/// The Organization a control namespace belongs to, if it is one of ours.
pub fn organization_of_control_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix(NAMESPACE_PREFIX).filter(|org| !org.is_empty())
}

/// The runtime namespace of a Project: `cmp-<org>-<project>`, or, when that is
/// longer than 63 characters, its first 54 characters (without a trailing
/// '-') followed by '-' and 8 hex characters of a sha256 of `<org>/<project>`.
/// Deterministic, so every reconcile and every replica computes the same name.
pub fn runtime_namespace(organization: &str, project: &str) -> String {
    let full = format!("{NAMESPACE_PREFIX}{organization}-{project}");
    if full.len() <= MAX_NAMESPACE_LEN {
        return full;
    }
    let digest = Sha256::digest(format!("{organization}/{project}").as_bytes());
    let suffix = &hex::encode(digest)[..8];
    let keep = MAX_NAMESPACE_LEN - suffix.len() - 1;
    // Names are ASCII (the schema enforces DNS labels), so byte slicing is safe;
    // fall back to char-wise truncation for anything else.
    let head: String = full.chars().take(keep).collect();
    format!("{}-{suffix}", head.trim_end_matches('-'))
}

/// The Secret that holds the plaintext of the API key `key` of Instance `instance`.
pub fn key_secret_name(instance: &str, key: &str) -> String {
    format!("{instance}-key-{key}")
}

/// The flow id under which a shared runtime serves an Instance: a UUID
/// (RFC 9562 version 8) derived from the Instance's namespace, name and uid.
/// Deterministic, so every reconcile and replica computes the same one, and
/// unique per Instance: tenants cannot collide, and a re-created Instance of
/// the same name never inherits an old flow.
pub fn flow_id(namespace: &str, name: &str, uid: &str) -> String {
    let digest = Sha256::digest(format!("cmp.gsv.dev/flow/{namespace}/{name}/{uid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The Vault/OpenBao policy and Kubernetes-auth role by which earlier releases
/// let a Project's runtime read `connectors/<org>/<project>/*`; the operator
/// deletes them, since only the gateway reads connector secrets now.
/// `cmp.<org>.<project>`: the dots, which no DNS label holds, keep
/// Organization `a-b`'s Project `c` apart from Organization `a`'s Project `b-c`.
pub fn connector_role(organization: &str, project: &str) -> String {
    format!("cmp.{organization}.{project}")
}

/// The policy and Kubernetes-auth role of the gateway in Vault/OpenBao: it reads every tenant's connector secrets.
pub const GATEWAY_CONNECTOR_ROLE: &str = "cmp.gateway.connectors";
/// The field manager under which the gateway writes an Instance's `status.connectorProbes`, and nothing else of it.
pub const GATEWAY_PROBE_FIELD_MANAGER: &str = "cmp-gateway-probes";
/// The field manager under which the gateway writes an Instance's `status.knowledge`, and nothing else of it.
pub const GATEWAY_KNOWLEDGE_FIELD_MANAGER: &str = "cmp-gateway-knowledge";

/// The root of every connector secret in Vault/OpenBao (below the mount).
pub const CONNECTORS_ROOT: &str = "connectors/";

/// The prefix of a Project's connector secrets in Vault/OpenBao (KV v2 paths, below the mount).
pub fn connector_prefix(organization: &str, project: &str) -> String {
    format!("{CONNECTORS_ROOT}{organization}/{project}/")
}

/// The session id the runtime sees for the caller's `session` on Instance `namespace/instance`: the caller's id
/// behind a prefix of the Instance's own. An id that already carries this Instance's prefix (as the runtime's
/// answer gives it back) is kept; any other id, however chosen, lands in this Instance's conversations only.
pub fn scoped_session(namespace: &str, instance: &str, session: &str) -> String {
    use sha2::Digest;
    let scope = sha2::Sha256::digest(format!("{namespace}/{instance}").as_bytes());
    let prefix = format!("i{}:", hex::encode(&scope[..8]));
    if session.starts_with(&prefix) { session.to_string() } else { format!("{prefix}{session}") }
}

/// A knowledge-base store name: a prefix and 24 hex digits of a digest of `parts`, which fits PostgreSQL's
/// 63-byte identifiers and needs no quoting whatever the tenant's names are.
fn knowledge_name(prefix: &str, parts: &[&str]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(parts.join("/").as_bytes());
    format!("{prefix}{}", &hex::encode(digest)[..24])
}

/// The knowledge store's schema of Project `project` of `organization`, and the role that alone may use it
/// (the same name): every Instance's collection of that Project sits in it.
pub fn knowledge_schema(organization: &str, project: &str) -> String {
    knowledge_name("cmp_p_", &[organization, project])
}

/// The knowledge store's collection (a table in its Project's schema) of Instance `instance` of `project`
/// of `organization`. Named by CMP from the tenant and the Instance, never from what a caller or flow sends.
pub fn knowledge_collection(organization: &str, project: &str, instance: &str) -> String {
    knowledge_name("cmp_i_", &[organization, project, instance])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_roles_of_different_projects_never_collide() {
        assert_eq!(connector_role("acme", "support"), "cmp.acme.support");
        assert_ne!(connector_role("a-b", "c"), connector_role("a", "b-c"));
        assert!(connector_prefix("acme", "support").ends_with('/'), "a prefix, so support-2 is not inside support");
    }

    #[test]
    fn flow_ids_are_uuids_stable_per_instance_and_distinct_across_tenants() {
        let id = flow_id("cmp-acme", "bot", "u-1");
        assert_eq!(id, flow_id("cmp-acme", "bot", "u-1"));
        assert_eq!(id.len(), 36);
        assert_eq!(id.chars().filter(|c| *c == '-').count(), 4);
        assert_eq!(&id[14..15], "8", "version 8: {id}");
        assert_ne!(id, flow_id("cmp-other", "bot", "u-1"));
        assert_ne!(id, flow_id("cmp-acme", "bot", "u-2"), "a re-created Instance gets a new flow");
    }

    #[test]
    fn short_names_are_kept_as_is() {
        assert_eq!(control_namespace("acme"), "cmp-acme");
        assert_eq!(runtime_namespace("acme", "support"), "cmp-acme-support");
        assert_eq!(organization_of_control_namespace("cmp-acme"), Some("acme"));
        assert_eq!(organization_of_control_namespace("kube-system"), None);
    }

    #[test]
    fn long_names_are_shortened_deterministically_with_a_hash() {
        let org = "a".repeat(59);
        let project = "b".repeat(63);
        let name = runtime_namespace(&org, &project);
        assert_eq!(name.len(), MAX_NAMESPACE_LEN);
        assert!(is_dns_label(&name), "{name}");
        assert_eq!(name, runtime_namespace(&org, &project));
        assert_ne!(name, runtime_namespace(&org, "b".repeat(62).as_str()));
    }

    #[test]
    fn a_cut_that_lands_on_a_dash_does_not_leave_a_double_dash() {
        // 54 characters end exactly on the '-' between org and project.
        let org = "o".repeat(49);
        let name = runtime_namespace(&org, &"p".repeat(20));
        assert!(is_dns_label(&name), "{name}");
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn same_prefix_different_projects_get_different_names() {
        let org = "acme-corporation-international-holdings";
        let a = runtime_namespace(org, "customer-support-assistant-for-europe-1");
        let b = runtime_namespace(org, "customer-support-assistant-for-europe-2");
        assert_ne!(a, b);
        assert!(is_dns_label(&a) && is_dns_label(&b));
    }

    #[test]
    fn a_session_belongs_to_its_instance_whatever_id_the_caller_chooses() {
        let ours = scoped_session("cmp-acme", "bot", "s1");
        assert!(ours.ends_with(":s1") && ours.starts_with('i'), "{ours}");
        assert_eq!(scoped_session("cmp-acme", "bot", &ours), ours, "the id the runtime gave back continues it");
        assert_ne!(scoped_session("cmp-globex", "bot", "s1"), ours, "another tenant's s1 is another conversation");
        assert_ne!(scoped_session("cmp-acme", "other", "s1"), ours, "so is another Instance's");
        // Guessing: sending another Instance's full id lands inside one's own Instance.
        let theirs = scoped_session("cmp-globex", "bot", "s1");
        let guessed = scoped_session("cmp-acme", "bot", &theirs);
        assert_ne!(guessed, theirs);
        assert!(guessed.starts_with(&ours[..ours.len() - 2]), "{guessed}");
    }
}
