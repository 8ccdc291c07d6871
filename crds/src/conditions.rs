//! Status conditions (the standard `metav1.Condition` shape): the condition
//! types and reasons other components read, and the pure helpers that set them.
//!
//! The operator writes these; the gateway and the webhook read them. A reason
//! is a CamelCase word a program can match on; the message says what to do.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
pub const TRUE: &str = "True";
/// Condition status values.
pub const FALSE: &str = "False";
/// Condition status values.
pub const UNKNOWN: &str = "Unknown";

/// Every kind: everything the object asks for is in place.
pub const READY: &str = "Ready";
/// Instance: its runtime manifests are committed to the GitOps repository.
pub const SYNCED: &str = "Synced";
/// Organization, Project, Instance: the gateway refuses runs while this is True.
pub const SUSPENDED: &str = "Suspended";
/// Wallet: it can pay for runs.
pub const FUNDED: &str = "Funded";
/// Organization: its control namespace exists.
pub const NAMESPACE_READY: &str = "NamespaceReady";
/// Project: quota, limits, network policies and RBAC are in place in its runtime namespace.
pub const ISOLATION_READY: &str = "IsolationReady";
/// Every kind: reconciling is paused by the `cmp.gsv.dev/paused` annotation.
pub const PAUSED: &str = "Paused";
/// Offering: every version's artifact was fetched and matched its sha256.
pub const ARTIFACTS_VERIFIED: &str = "ArtifactsVerified";
/// Instance: its API keys are issued and their plaintexts are where status says.
pub const KEYS_ISSUED: &str = "KeysIssued";
/// An Instance's connector bindings can all be called through the gateway.
pub const CONNECTORS_READY: &str = "ConnectorsReady";
/// An Instance's `spec.config` is applied in full: every key a setting its version declares, every value within it.
pub const CONFIG_APPLIED: &str = "ConfigApplied";

/// The reasons of the conditions above.
pub mod reasons {
    /// `Ready=True`: everything is in place.
    pub const RECONCILED: &str = "Reconciled";
    /// `Paused=True`: the annotation `cmp.gsv.dev/paused` is "true".
    pub const PAUSED_BY_ANNOTATION: &str = "PausedByAnnotation";
    /// `Paused=False`: reconciling normally.
    pub const RECONCILING: &str = "Reconciling";
    /// `NamespaceReady=True`: the control namespace exists.
    pub const NAMESPACE_READY: &str = "NamespaceReady";
    /// `NamespaceReady`, `IsolationReady` and `Ready` False: the namespace is being deleted; it is recreated once gone.
    pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
    /// `IsolationReady=True`: quota, limits, network policies and RBAC are applied.
    pub const ISOLATION_APPLIED: &str = "IsolationApplied";
    /// `Suspended=True` on an Organization or Instance: its own `spec.suspended` is true.
    pub const SUSPENDED_BY_SPEC: &str = "SuspendedBySpec";
    /// `Suspended=True` (and `Ready=False`) on an Instance: the store withdrew its order.
    pub const SUSPENDED_BY_STORE: &str = "SuspendedByStore";
    /// `Suspended=False` on an Organization or Instance: it is active.
    pub const ACTIVE: &str = "Active";
    /// `Suspended=True` on a Project or Instance: its Organization is suspended.
    pub const ORGANIZATION_SUSPENDED: &str = "OrganizationSuspended";
    /// `Suspended=False` on a Project: its Organization is active.
    pub const ORGANIZATION_ACTIVE: &str = "OrganizationActive";
    /// `Funded=True`: the balance (with the overdraft) is at or above the low-balance threshold.
    pub const FUNDED: &str = "Funded";
    /// `Funded=False`: credits are left, but fewer than the low-balance threshold.
    pub const LOW: &str = "Low";
    /// `Funded=False`: no credits are left; the gateway refuses runs.
    pub const EXHAUSTED: &str = "Exhausted";
    /// `Ready=False`: the object's parent Organization does not exist.
    pub const ORGANIZATION_NOT_FOUND: &str = "OrganizationNotFound";
    /// `Ready=False`: the object lives outside an organization's control namespace.
    pub const NOT_IN_CONTROL_NAMESPACE: &str = "NotInControlNamespace";
    /// `Ready=False` on an Instance: its `spec.project` names no Project in its namespace.
    pub const PROJECT_NOT_FOUND: &str = "ProjectNotFound";
    /// `Ready=False` on an Instance: its Project exists but is not Ready yet.
    pub const PROJECT_NOT_READY: &str = "ProjectNotReady";
    /// `Ready=False`: the object passed the API server's schema but the operator cannot read it.
    pub const INVALID_OBJECT: &str = "InvalidObject";
    /// `Ready=False` on an Instance: its `spec.offering` names no Offering.
    pub const OFFERING_NOT_FOUND: &str = "OfferingNotFound";
    /// `Ready=False` on an Instance: its `spec.version` is not a version of its Offering.
    pub const VERSION_NOT_FOUND: &str = "VersionNotFound";
    /// `Ready=False` on a new Instance: its `spec.version` is deprecated.
    pub const VERSION_DEPRECATED: &str = "VersionDeprecated";
    /// `Ready=False` on an Instance: its `spec.plan` is not a plan of its Offering.
    pub const PLAN_NOT_FOUND: &str = "PlanNotFound";
    /// `Ready=False` on an Instance, `ArtifactsVerified=False` on an Offering: an artifact does not match its sha256.
    pub const ARTIFACT_MISMATCH: &str = "ArtifactMismatch";
    /// `ArtifactsVerified=False` on an Offering, `Ready=False` on an Instance: an artifact could not be fetched.
    pub const ARTIFACT_UNREACHABLE: &str = "ArtifactUnreachable";
    /// `Ready=False`, `ArtifactsVerified=False`: a version's flow lacks the component, field or global one of its `inputs` names.
    pub const FLOW_INPUTS_INVALID: &str = "FlowInputsInvalid";
    /// `ConfigApplied=True`: every key of `spec.config` is a declared setting, with a valid value.
    pub const CONFIG_APPLIED: &str = "ConfigApplied";
    /// `ConfigApplied=False`: keys of `spec.config` that are not settings of the version, or values outside them; those are not applied.
    pub const CONFIG_NOT_APPLIED: &str = "ConfigNotApplied";
    /// `ArtifactsVerified=False`, `Ready=False`: an artifact is not checked yet.
    pub const ARTIFACT_PENDING: &str = "ArtifactPending";
    /// `ArtifactsVerified=True`: every artifact matched its sha256.
    pub const ARTIFACTS_VERIFIED: &str = "ArtifactsVerified";
    /// `Ready=False` on an Offering: no version can be subscribed to (none verified and not deprecated).
    pub const NO_USABLE_VERSION: &str = "NoUsableVersion";
    /// `Ready=False` on an Instance: its Project already holds `spec.maxInstances` Instances.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// `Ready=False` on an Instance: the references resolve; the runtime is being provisioned.
    pub const PROVISIONING: &str = "Provisioning";
    /// `Synced=True` on a Shared Instance: its flow is registered in the shared runtime.
    pub const FLOW_REGISTERED: &str = "FlowRegistered";
    /// `Synced=False`/`Ready=False` on an Instance: the runtime refused or did not answer.
    pub const RUNTIME_UNAVAILABLE: &str = "RuntimeUnavailable";
    /// `Synced=False` on a Shared Instance: the Secret named by the Offering's `spec.runtime.apiKeySecretRef` cannot be read.
    pub const RUNTIME_SECRET_MISSING: &str = "RuntimeSecretMissing";
    /// `Ready=False` on a Dedicated Instance: a Secret with its runtime key's name is in the runtime namespace, and
    /// the operator did not write it (it lacks the runtime key label); the runtime would refuse every run.
    pub const RUNTIME_KEY_SECRET_FOREIGN: &str = "RuntimeKeySecretForeign";
    /// `Synced=True` on a Dedicated Instance: its folder is committed and pushed at the commit in `status.gitops`.
    pub const COMMITTED: &str = "Committed";
    /// `Synced=False`: the GitOps commit is being written.
    pub const COMMITTING: &str = "Committing";
    /// `Synced=False`: the GitOps remote refused the push again and again (a hook, or a protected branch); the writer keeps trying.
    pub const GIT_PUSH_REJECTED: &str = "GitPushRejected";
    /// `Synced=False`: the GitOps remote cannot be reached or read (address, credentials, network); the writer keeps trying.
    pub const GIT_UNREACHABLE: &str = "GitUnreachable";
    /// `Synced=False`: the runtime's manifests cannot be rendered from the CRs (the message says which field).
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// `Ready=False` on a Dedicated Instance: Argo CD has not yet synced a commit that contains the Instance's change.
    pub const AWAITING_SYNC: &str = "AwaitingSync";
    /// `Ready=False`: Argo CD reports the Project's Application out of sync or failed (the message carries its words).
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// `Ready=False`: the runtime Deployment has no available replica yet.
    pub const DEPLOYMENT_UNAVAILABLE: &str = "DeploymentUnavailable";
    /// `Ready=False`: a connector binding's `vaultPath` lies outside `connectors/<org>/<project>/` of its own Instance; nothing was written.
    pub const CONNECTOR_OUTSIDE_TENANT: &str = "ConnectorOutsideTenant";
    /// `ConnectorsReady=False`: a connector binding's secret does not exist at its path.
    pub const CONNECTOR_SECRET_MISSING: &str = "ConnectorSecretMissing";
    /// `ConnectorsReady=True`: every binding names an allowed MCP server, and its secret is there.
    pub const CONNECTORS_CALLABLE: &str = "ConnectorsCallable";
    /// `ConnectorsReady=False`: a binding names no MCP server (`url`).
    pub const CONNECTOR_WITHOUT_URL: &str = "ConnectorWithoutUrl";
    /// `ConnectorsReady=False`: a binding's host is not on the platform's allow-list.
    pub const CONNECTOR_HOST_NOT_ALLOWED: &str = "ConnectorHostNotAllowed";
    /// `ConnectorsReady=False`: a binding allows tools its Offering does not allow for its type (they stay refused).
    pub const CONNECTOR_TOOLS_BEYOND_OFFERING: &str = "ConnectorToolsBeyondOffering";
    /// `ConnectorsReady=False`: a binding's host is on the allow-list but resolves to an address no binding may reach (a denied network or a cluster-internal endpoint), as the gateway's probe found after DNS resolution.
    pub const CONNECTOR_DESTINATION_DENIED: &str = "ConnectorDestinationDenied";
    /// `ConnectorsReady=False`: the gateway's last probe of a binding's MCP server (its `initialize` and `tools/list`, with the binding's own credential) failed.
    pub const CONNECTOR_NOT_ANSWERING: &str = "ConnectorNotAnswering";
    /// `ConnectorsReady=False`: a binding allows tools its MCP server did not list when the gateway last probed it.
    pub const CONNECTOR_TOOLS_MISSING: &str = "ConnectorToolsMissing";
    /// `Synced=False` on a Dedicated Instance: its runtime is delivered by GitOps, which is not configured.
    pub const AWAITING_GITOPS: &str = "AwaitingGitOps";
    /// `Ready=True` on an Instance: the runtime serves its flow.
    pub const RUNTIME_READY: &str = "RuntimeReady";
    /// `Ready=False`: Vault/OpenBao (`--secret-store vault`) refused or did not answer.
    pub const VAULT_UNAVAILABLE: &str = "VaultUnavailable";
    /// `Ready=False`: the knowledge store (`--knowledge-store-url`) refused or did not answer.
    pub const KNOWLEDGE_STORE_UNAVAILABLE: &str = "KnowledgeStoreUnavailable";
    /// `Ready=False` on an Instance being deleted, while its cleanup runs.
    pub const TERMINATING: &str = "Terminating";
    /// `KeysIssued=True`: every key is issued and its plaintext stored.
    pub const KEYS_ISSUED: &str = "KeysIssued";
    /// `KeysIssued=False`: a key's plaintext Secret was deleted by hand; the key still works; remove or rename the entry to issue a new one.
    pub const KEY_SECRET_MISSING: &str = "KeySecretMissing";
}

impl<'a> NewCondition<'a> {
    /// A condition that is True when `ok`, else False.
    pub fn new(type_: &'a str, ok: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Self { type_, status: if ok { TRUE } else { FALSE }, reason, message: message.into() }
    }
}

/// The `Paused` condition of an object whose annotation `cmp.gsv.dev/paused` is (or is not) "true".
pub fn paused(paused: bool) -> NewCondition<'static> {
    if paused {
        NewCondition::new(
            PAUSED,
            true,
            reasons::PAUSED_BY_ANNOTATION,
            format!("reconciling is paused; remove the annotation {} to resume", crate::names::PAUSED_ANNOTATION),
        )
    } else {
        NewCondition::new(PAUSED, false, reasons::RECONCILING, "reconciling normally")
    }
}

/// The status and reason of a condition, to detect transitions.
pub fn state(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    find(conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// A condition to set, without the bookkeeping fields that [`set_condition`] fills in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition<'a> {
    /// Condition type, for example `Ready`.
    pub type_: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// A CamelCase reason a program can match on.
    pub reason: &'a str,
    /// A sentence a person can act on.
    pub message: String,
}

/// Sets (adds or replaces) the condition of `new.type_` in `conditions`.
///
/// `lastTransitionTime` is kept unless the status changed (or the condition is
/// new), in which case it becomes `now`. `observedGeneration` is always set to
/// `generation`. Returns true when anything other than the bookkeeping changed
/// (status, reason or message): a caller can publish an Event only then.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    new: NewCondition<'_>,
    generation: Option<i64>,
    now: Time,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let transitioned = existing.status != new.status;
            let changed = transitioned || existing.reason != new.reason || existing.message != new.message;
            if transitioned {
                existing.last_transition_time = now;
            }
            existing.status = new.status.to_string();
            existing.reason = new.reason.to_string();
            existing.message = new.message;
            existing.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: new.type_.to_string(),
                status: new.status.to_string(),
                reason: new.reason.to_string(),
                message: new.message,
                last_transition_time: now,
                observed_generation: generation,
            });
            true
        }
    }
}

/// Reasons that only say an object is on its way: they clear on their own.
/// The status shows them; no Event is published for them (an Event per
/// step of every Instance's progress would be noise, and API writes).
pub const WAITING_REASONS: [&str; 9] = [
    reasons::PROVISIONING,
    reasons::PROJECT_NOT_READY,
    reasons::ARTIFACT_PENDING,
    reasons::COMMITTING,
    reasons::AWAITING_SYNC,
    reasons::DEPLOYMENT_UNAVAILABLE,
    reasons::NAMESPACE_TERMINATING,
    reasons::TERMINATING,
    reasons::PAUSED_BY_ANNOTATION,
];

/// Whether `reason` is one of [`WAITING_REASONS`].
pub fn is_waiting(reason: &str) -> bool {
    WAITING_REASONS.contains(&reason)
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn ready(status: &'static str, reason: &'static str, message: &str) -> NewCondition<'static> {
        NewCondition { type_: "Ready", status, reason, message: message.to_string() }
    }

    #[test]
    fn adding_a_condition_stamps_time_and_generation() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(3), at(10)));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn same_status_keeps_last_transition_time_but_updates_generation_and_message() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        let changed = set_condition(&mut conditions, ready(TRUE, "Reconciled", "still ok"), Some(2), at(20));
        assert!(changed, "a new message is a change");
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].message, "still ok");
    }

    #[test]
    fn identical_condition_is_not_a_change() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        assert!(!set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(30)));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn status_change_moves_last_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        set_condition(&mut conditions, ready(FALSE, "NamespaceMissing", "gone"), Some(1), at(40));
        assert_eq!(conditions[0].last_transition_time, at(40));
        assert_eq!(conditions[0].status, FALSE);
        assert!(!is_true(&conditions, "Ready"));
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        let funded = NewCondition { type_: "Funded", status: FALSE, reason: "Exhausted", message: "0".into() };
        set_condition(&mut conditions, funded, Some(1), at(20));
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(find(&conditions, "Funded").map(|c| c.reason.as_str()), Some("Exhausted"));
    }
}
