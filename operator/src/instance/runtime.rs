//! An Instance's runtime: in a Shared Offering, the registration of its
//! flow (checked every minute) and what the last probe found; in a Dedicated
//! one, the Service endpoint that GitOps will serve.

use std::time::Duration;

use cmp_crds::Instance;
use cmp_crds::conditions::{NewCondition, READY, SYNCED, reasons};
use cmp_crds::offering::{RuntimeMode, SecretKeyRef};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::dedicated::dedicated;
use super::desired::Observed;
use super::references::Resolved;
use crate::flows::Registration;
use crate::gitops::render::InstanceTree;
use crate::shell::elapsed;
use cmp_crds::instance::GitOpsStatus;

/// How often a registered flow is checked (a restarted runtime loses it; it is registered again).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a failed registration is tried again.
pub const PROBE_RETRY: Duration = Duration::from_secs(5);

/// A flow to register (or check) in a shared runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeWork {
    /// What to serve.
    pub registration: Registration,
    /// Where the runtime's API key is.
    pub api_key: SecretKeyRef,
}

/// The runtime side: children, `Synced`, `Ready`, and what status says the runtime serves.
pub struct RuntimeState {
    /// The registration to check or upload.
    pub work: Option<RuntimeWork>,
    /// `Synced`.
    pub synced: NewCondition<'static>,
    /// `Ready`.
    pub ready: NewCondition<'static>,
    /// `status.endpoint`.
    pub endpoint: Option<String>,
    /// `status.flowId`.
    pub flow_id: Option<String>,
    /// `status.version`.
    pub version: Option<String>,
    /// When to look again.
    pub requeue: Option<Duration>,
    /// A Dedicated runtime's folder to commit.
    pub commit: Option<InstanceTree>,
    /// `status.gitops` (Dedicated).
    pub gitops: Option<GitOpsStatus>,
}

pub fn runtime(instance: &Instance, resolved: &Resolved, observed: &Observed, now: Timestamp) -> RuntimeState {
    let probe = observed.probe.as_ref();
    let runtime = &resolved.offering.spec.runtime;
    let name = instance.name_any();
    let namespace = instance.namespace().unwrap_or_default();
    let previous = instance.status.clone().unwrap_or_default();
    match (runtime.mode, &runtime.endpoint, &runtime.api_key_secret_ref) {
        (RuntimeMode::Shared, Some(endpoint), Some(api_key)) => {
            let uid = instance.uid().unwrap_or_default();
            let registration = Registration {
                endpoint: endpoint.clone(),
                api: runtime.api,
                flow_id: cmp_crds::names::flow_id(&namespace, &name, &uid),
                name: format!("{namespace}/{name}"),
                version: resolved.version.name.clone(),
                artifact_url: resolved.version.artifact.url.clone(),
                sha256: resolved.version.artifact.sha256.clone(),
            };
            let current = probe.filter(|p| p.registration == registration);
            let due = match current {
                None => true,
                Some(p) if p.outcome.is_err() => elapsed(p.at, now) >= PROBE_RETRY,
                Some(p) => elapsed(p.at, now) >= PROBE_INTERVAL,
            };
            let next = match current.map(|p| &p.outcome) {
                Some(Err(_)) => PROBE_RETRY,
                _ => PROBE_INTERVAL,
            };
            let flow_id = Some(registration.flow_id.clone());
            let work = due.then(|| RuntimeWork { registration: registration.clone(), api_key: api_key.clone() });
            let (synced, ready, version) = match current.map(|p| &p.outcome) {
                Some(Ok(())) => (
                    NewCondition::new(
                        SYNCED,
                        true,
                        reasons::FLOW_REGISTERED,
                        format!(
                            "flow {} (version {}) is registered in {endpoint}",
                            registration.flow_id, registration.version
                        ),
                    ),
                    NewCondition::new(
                        READY,
                        true,
                        reasons::RUNTIME_READY,
                        format!("the runtime at {endpoint} serves flow {}", registration.flow_id),
                    ),
                    Some(registration.version.clone()),
                ),
                Some(Err((reason, message))) => (
                    NewCondition::new(SYNCED, false, reason, message.clone()),
                    NewCondition::new(READY, false, reason, message.clone()),
                    previous.version.clone(),
                ),
                None => (
                    NewCondition::new(
                        SYNCED,
                        false,
                        reasons::PROVISIONING,
                        format!("registering version {} in {endpoint}", registration.version),
                    ),
                    NewCondition::new(
                        READY,
                        false,
                        reasons::PROVISIONING,
                        format!("registering version {} in {endpoint}", registration.version),
                    ),
                    previous.version.clone(),
                ),
            };
            RuntimeState {
                work,
                synced,
                ready,
                endpoint: Some(endpoint.clone()),
                flow_id,
                version,
                requeue: Some(next),
                commit: None,
                gitops: None,
            }
        }
        _ => {
            let endpoint = format!("http://{name}.{}.svc.cluster.local:{}", resolved.runtime_namespace, runtime.port);
            let flow_id = Some(resolved.version.flow_id.clone());
            let Some(gitops) = observed.gitops.as_ref().filter(|_| runtime.mode == RuntimeMode::Dedicated) else {
                let message = "a Dedicated runtime is delivered by GitOps, which is not configured; start the operator with --gitops-repo, or use a Shared Offering";
                return RuntimeState {
                    work: None,
                    synced: NewCondition::new(SYNCED, false, reasons::AWAITING_GITOPS, message),
                    ready: NewCondition::new(READY, false, reasons::AWAITING_GITOPS, message),
                    endpoint: Some(endpoint),
                    flow_id,
                    version: previous.version,
                    requeue: None,
                    commit: None,
                    gitops: previous.gitops,
                };
            };
            let state = dedicated(instance, resolved, observed, gitops);
            let ready = state.ready.status == cmp_crds::conditions::TRUE;
            RuntimeState {
                work: None,
                synced: state.synced,
                ready: state.ready,
                endpoint: Some(endpoint),
                flow_id,
                version: if ready { Some(resolved.version.name.clone()) } else { previous.version },
                requeue: None,
                commit: state.commit,
                gitops: state.gitops,
            }
        }
    }
}
