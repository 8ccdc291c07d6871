//! The Instance pipeline: resolves its Organization, Project and Offering
//! (each failure a reason a user can act on), enforces the Project's
//! `maxInstances`, issues its API keys, and, on a Shared Offering,
//! registers its flow in the shared runtime and keeps it there. The
//! Instance writes its own status alone.

pub mod config;
pub mod connectors;
pub mod dedicated;
pub mod desired;
pub mod keys;
pub mod references;
pub mod runtime;
pub mod runtime_key;

use cmp_crds::conditions::{NewCondition, READY, reasons, set_condition};
use cmp_crds::instance::InstancePhase;
use cmp_crds::names::organization_of_control_namespace;
use cmp_crds::names::{INSTANCE_LABEL, KEY_HASH_ANNOTATION, KEY_PUBLIC_ID_ANNOTATION, KEY_SECRET_DATA_KEY};
use cmp_crds::offering::{ArtifactState, RuntimeMode};
use cmp_crds::{DeletionPolicy, Instance};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::apply::await_cached;
use crate::cache::{Caches, Guarded, OrganizationLookup, Watched, valid};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::flows::{FlowRoutes, Probe};
use crate::gitops::argocd::{SyncState, application_name, sync_state};
use crate::gitops::render::instance_dir;
use crate::gitops::{Delivery, GitOps};
use crate::settings::Settings;
use crate::shell::{self, Desired, Reconcile};
use cmp_crds::instance::{SecretLocation, SecretStore};
use cmp_crds::names::runtime_namespace;
use dedicated::{DeploymentState, GitOpsObserved};
use desired::{Children, Observed};
use keys::{IssuedKey, KeyToIssue, Store};
use runtime::RuntimeWork;

impl Reconcile for Instance {
    type Observed = Observed;
    type Children = Children;
    type Status = cmp_crds::InstanceStatus;
    const FINALIZER: bool = true;
    const OBSERVE_AFTER_APPLY: bool = true;
    const EVENT_CONDITIONS: &'static [&'static str] =
        &[cmp_crds::conditions::READY, cmp_crds::conditions::SYNCED, cmp_crds::conditions::KEYS_ISSUED];

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.instances
    }

    /// `KeysIssued` of an Instance that asks for no keys says nothing worth an Event.
    fn announces(&self, condition: &Condition) -> bool {
        condition.type_ != cmp_crds::conditions::KEYS_ISSUED || !self.spec.api_keys.is_empty()
    }

    /// A change just handed to the GitOps writer (`Synced` would say
    /// `Committing`): the writer wakes the Instance once the commit is
    /// pushed or has failed, and one status write then says which. Writing
    /// `Committing` in between would double the status writes of every
    /// change; under a batch of 1,000 they compete with the commit itself.
    fn status_can_wait(&self, status: &Self::Status) -> bool {
        cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::SYNCED)
            .is_some_and(|synced| synced.reason == reasons::COMMITTING)
    }

    fn observe(&self, ctx: &Context) -> Result<Observed> {
        let caches = &ctx.caches;
        let namespace = self.namespace().unwrap_or_default();
        let organization = match organization_of_control_namespace(&namespace).map(|o| caches.organization(o)) {
            Some(OrganizationLookup::Selected(org)) => valid(&org).cloned(),
            _ => None,
        };
        let project = caches.projects.get(&self.spec.project, Some(&namespace)).as_deref().and_then(valid).cloned();
        let offering = caches.offerings.get(&self.spec.offering, None).as_deref().and_then(valid).cloned();
        let me = (self.creation_timestamp(), self.name_any());
        let older_in_project = caches
            .instances_in(&namespace)
            .iter()
            .filter_map(|i| valid(i))
            .filter(|i| i.spec.project == self.spec.project && i.meta().deletion_timestamp.is_none())
            .filter(|i| (i.creation_timestamp(), i.name_any()) < me)
            .count();
        Ok(Observed {
            organization,
            project,
            offering,
            older_in_project,
            issued_keys: key_secrets(caches, self)
                .iter()
                .filter_map(|s| IssuedKey::of_secret(s))
                .chain(ctx.vault.iter().flat_map(|v| v.issued(&shell::key(self))))
                .collect(),
            probe: ctx.runtimes.probe(&shell::key(self)),
            gitops: ctx.gitops.as_ref().map(|g| gitops_observed(self, g, caches)),
            connector_checks: ctx.vault.as_ref().map(|vault| {
                let paths = self.spec.connectors.iter().map(|c| &c.vault_path);
                paths.filter_map(|p| Some((p.clone(), vault.secret_check(p)?))).collect()
            }),
        })
    }

    fn desired(&self, observed: &Observed, settings: &Settings, now: Timestamp) -> Desired<Children, Self::Status> {
        let store = match &settings.vault {
            Some(vault) if settings.keys_in_vault => Store::Vault { prefix: &vault.prefix },
            _ => Store::Secret,
        };
        desired::desired(self, observed, store, &settings.connector_hosts, now)
    }

    async fn apply(&self, children: &Children, ctx: &Context) -> Result<()> {
        let issue = futures::future::try_join_all(children.issue_keys.iter().map(|k| issue_key(self, k, ctx)));
        let namespace = self.namespace().unwrap_or_default();
        let remove = futures::future::try_join_all(children.remove_keys.iter().map(|l| remove_key(&namespace, l, ctx)));
        let register = async {
            if let Some(work) = &children.register {
                register(self, work, ctx).await;
            }
            Ok(())
        };
        if let (Some(tree), Some(gitops)) = (&children.commit, &ctx.gitops) {
            gitops.submit(&gitops_key(self), self.meta().generation.unwrap_or_default(), tree);
        }
        let check = async {
            if let Some(vault) = &ctx.vault {
                futures::future::join_all(children.check_connectors.iter().map(|p| vault.check_secret(p))).await;
            }
            Ok(())
        };
        let runtime_key = async {
            match &children.runtime_key {
                Some(work) => runtime_key::ensure(work, runtime_key_seen(&ctx.caches, work), ctx).await,
                None => Ok(()),
            }
        };
        futures::try_join!(issue, remove, register, check, runtime_key).map(|_| ())
    }

    /// `Delete`: unregisters the flow from a shared runtime, removes the key Secrets and drops the knowledge
    /// collection. `Retain`: leaves them.
    async fn cleanup(&self, ctx: &Context) -> Result<()> {
        remove_folder(self, ctx).await?;
        ctx.runtimes.forget(&shell::key(self));
        if let Some(vault) = &ctx.vault {
            vault.forget(&shell::key(self));
        }
        if self.spec.deletion_policy == DeletionPolicy::Retain {
            tracing::info!("deletionPolicy Retain: leaving the flow and the key Secrets in place");
            return Ok(());
        }
        if let Some(org) = organization_of_control_namespace(&self.namespace().unwrap_or_default()) {
            let runtime_ns = runtime_namespace(org, &self.spec.project);
            runtime_key::remove(&runtime_ns, &self.name_any(), ctx).await?;
        }
        if let (Some(knowledge), Some(org)) =
            (&ctx.knowledge, cmp_crds::names::organization_of_control_namespace(&self.namespace().unwrap_or_default()))
        {
            knowledge.drop_collection(org, &self.spec.project, &self.name_any()).await?;
        }
        let offering = ctx.caches.offerings.get(&self.spec.offering, None).as_deref().and_then(valid).cloned();
        let runtime = offering.map(|o| o.spec.runtime);
        if let Some((RuntimeMode::Shared, Some(endpoint), Some(reference), api)) =
            runtime.map(|r| (r.mode, r.endpoint, r.api_key_secret_ref, r.api))
        {
            let flow_id = cmp_crds::names::flow_id(
                &self.namespace().unwrap_or_default(),
                &self.name_any(),
                &self.uid().unwrap_or_default(),
            );
            let api_key = ctx.runtimes.api_key(ctx.secrets.as_ref(), &reference).await.map_err(Error::Runtime)?;
            ctx.runtimes
                .remove(&endpoint, FlowRoutes(api), &api_key, &flow_id)
                .await
                .map_err(|e| Error::Runtime(e.to_string()))?;
            tracing::info!(flow_id, endpoint, "removed the flow from the shared runtime");
        }
        let namespace = self.namespace().unwrap_or_default();
        let mut plaintexts: Vec<SecretLocation> =
            key_secrets(&ctx.caches, self).iter().filter_map(|s| IssuedKey::of_secret(s)).map(|k| k.location).collect();
        // Vault entries are not watched: every key the Instance lists or listed.
        if let (Some(vault), Some(org)) = (&ctx.vault, cmp_crds::names::organization_of_control_namespace(&namespace)) {
            let names = self.spec.api_keys.iter().map(|k| k.name.clone());
            let listed = self.status.iter().flat_map(|s| s.api_keys.iter().map(|k| k.name.clone()));
            for key in names.chain(listed) {
                let path = keys::vault_path(vault.prefix(), org, &self.name_any(), &key);
                let location =
                    SecretLocation { store: SecretStore::Vault, name: path, key: KEY_SECRET_DATA_KEY.into() };
                if !plaintexts.contains(&location) {
                    plaintexts.push(location);
                }
            }
        }
        futures::future::try_join_all(plaintexts.iter().map(|l| remove_key(&namespace, l, ctx))).await?;
        Ok(())
    }

    /// Phase `Terminating` and `Ready=False` (reason `Terminating`), set once:
    /// a cleanup error then stays on `Ready` until it is resolved.
    fn terminating_status(&self, now: Timestamp) -> Option<Self::Status> {
        let mut status = self.operator_status();
        if status.phase != InstancePhase::Terminating {
            status.phase = InstancePhase::Terminating;
            let message = match self.spec.deletion_policy {
                DeletionPolicy::Delete => {
                    "being deleted: removing its flow from the shared runtime, its key plaintexts and its knowledge base"
                }
                DeletionPolicy::Retain => {
                    "being deleted: deletionPolicy Retain leaves its flow, key plaintexts and knowledge base"
                }
            };
            let terminating = NewCondition::new(READY, false, reasons::TERMINATING, message);
            set_condition(&mut status.conditions, terminating, self.meta().generation, Time(now));
        }
        Some(status)
    }

    /// All of the status but `connectorProbes`, which the gateway writes (the operator reads them into
    /// `ConnectorsReady`; their writes are not the operator's, so their events wake it).
    fn operator_status(&self) -> Self::Status {
        let mut status = self.status.clone().unwrap_or_default();
        status.connector_probes.clear();
        status
    }

    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

/// The key of an Instance in the GitOps writer: `<namespace>/<name>`.
pub fn gitops_key(instance: &Instance) -> String {
    format!("{}/{}", instance.namespace().unwrap_or_default(), instance.name_any())
}

/// What the writer, Argo CD and the runtime Deployment report about `instance`.
fn gitops_observed(instance: &Instance, gitops: &GitOps, caches: &Caches) -> GitOpsObserved {
    let delivery = gitops.delivery(&gitops_key(instance));
    let namespace = instance.namespace().unwrap_or_default();
    let runtime_ns =
        organization_of_control_namespace(&namespace).map(|org| runtime_namespace(org, &instance.spec.project));
    let deployment = runtime_ns
        .as_deref()
        .and_then(|ns| caches.deployments.get(&instance.name_any(), Some(ns)))
        .map(|d| DeploymentState::of(&d));
    let application = match (&caches.applications, &gitops.settings.argocd, &runtime_ns) {
        (Some(apps), Some(argocd), Some(ns)) => {
            Some(apps.get(&application_name(ns), Some(&argocd.namespace)).map(|a| sync_state(&a)))
        }
        (Some(_), Some(_), None) => Some(None),
        _ => None,
    };
    let synced_contains_commit = match (&application, &delivery) {
        (Some(Some(SyncState::Synced { revision })), Some(Delivery::Delivered { commit, .. })) => {
            gitops.contains(revision, commit)
        }
        _ => false,
    };
    GitOpsObserved {
        render: gitops.settings.render.clone(),
        repo: gitops.settings.url.clone(),
        delivery,
        application,
        synced_contains_commit,
        deployment,
    }
}

/// Removes a Dedicated Instance's folder from git (`Delete`) and waits for the push; `Retain` leaves it.
async fn remove_folder(instance: &Instance, ctx: &Context) -> Result<()> {
    let Some(gitops) = &ctx.gitops else { return Ok(()) };
    let key = gitops_key(instance);
    let offering = ctx.caches.offerings.get(&instance.spec.offering, None).as_deref().and_then(valid).cloned();
    if offering.is_some_and(|o| o.spec.runtime.mode == RuntimeMode::Shared) {
        return Ok(());
    }
    let namespace = instance.namespace().unwrap_or_default();
    let Some(org) = organization_of_control_namespace(&namespace) else { return Ok(()) };
    if instance.spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!("deletionPolicy Retain: leaving the runtime's folder in git");
        gitops.forget(&key);
        return Ok(());
    }
    let dir = instance_dir(&gitops.settings.render.root, org, &instance.spec.project, &instance.name_any());
    let generation = instance.meta().generation.unwrap_or_default();
    let commit = gitops.remove(&dir, Some((key.clone(), generation)), REMOVAL_WAIT).await?;
    tracing::info!(
        dir,
        commit = commit.as_deref().unwrap_or("none, the branch is empty"),
        "removed the runtime's folder from git"
    );
    gitops.forget(&key);
    Ok(())
}

/// How long a deletion waits for its removal commit before it is retried.
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The fingerprint of the runtime key in the Secret `work` names, as the cache has it.
fn runtime_key_seen(caches: &Caches, work: &runtime_key::RuntimeKeyWork) -> Option<String> {
    let secret = caches.key_secrets.get(&work.name, Some(&work.namespace))?;
    Some(secret.annotations().get(cmp_crds::runtime_key::FINGERPRINT_ANNOTATION).cloned().unwrap_or_default())
}

/// The cached key Secrets of `instance`.
fn key_secrets(caches: &Caches, instance: &Instance) -> Vec<std::sync::Arc<kube::api::PartialObjectMeta<Secret>>> {
    let (namespace, name) = (instance.namespace(), instance.name_any());
    caches
        .key_secrets
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace == namespace && s.labels().get(INSTANCE_LABEL) == Some(&name))
        .collect()
}

/// Issues one key: its plaintext, created (never overwritten). A Secret or
/// Vault entry that appeared meanwhile is kept as it is.
async fn issue_key(instance: &Instance, key: &KeyToIssue, ctx: &Context) -> Result<()> {
    let generated = cmp_crds::apikey::generate();
    if key.location.store == SecretStore::Vault {
        let vault = ctx.vault.as_ref().ok_or_else(|| {
            Error::Vault("no Vault is configured (--secret-store vault --vault-addr <address>)".into())
        })?;
        let kept = vault.create(&key.location, &generated.plaintext).await.map_err(|e| Error::Vault(e.to_string()))?;
        vault.remember(&shell::key(instance), &key.key, &key.location, &kept);
        tracing::info!(key = key.key, path = key.location.name, "issued an API key into Vault");
        return Ok(());
    }
    let mut metadata = key.metadata.clone();
    metadata.annotations = Some(
        [
            (KEY_PUBLIC_ID_ANNOTATION.to_string(), generated.public_id.clone()),
            (KEY_HASH_ANNOTATION.to_string(), generated.hash.clone()),
        ]
        .into(),
    );
    let secret = Secret {
        metadata,
        string_data: Some([(KEY_SECRET_DATA_KEY.to_string(), generated.plaintext)].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let namespace = key.metadata.namespace.clone().unwrap_or_default();
    let name = key.metadata.name.clone().unwrap_or_default();
    ctx.metrics.write("Secret", "create");
    let created = match Api::<Secret>::namespaced(ctx.applier.client().clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(e) => return Err(Error::kube(format!("creating the key Secret {namespace}/{name}"))(e)),
    };
    tracing::info!(key = key.key, secret = name, public_id = generated.public_id, "issued an API key");
    let cached = ObjectRef::new(&name).within(&namespace);
    await_cached(&ctx.caches.key_secrets.store(), &cached, created.resource_version()).await;
    Ok(())
}

/// Deletes a key's plaintext, wherever it is; one that is gone is fine.
async fn remove_key(namespace: &str, location: &SecretLocation, ctx: &Context) -> Result<()> {
    match (location.store, &ctx.vault) {
        (SecretStore::Secret, _) => delete_secret(namespace, &location.name, ctx).await,
        (SecretStore::Vault, Some(vault)) => vault.delete(location).await.map_err(|e| Error::Vault(e.to_string())),
        (SecretStore::Vault, None) => Err(Error::Vault(format!(
            "the key at {} is in Vault, but no Vault is configured; start the operator with --vault-addr <address>",
            location.name
        ))),
    }
}

async fn delete_secret(namespace: &str, name: &str, ctx: &Context) -> Result<()> {
    ctx.metrics.write("Secret", "delete");
    match Api::<Secret>::namespaced(ctx.applier.client().clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting the key Secret {namespace}/{name}"))(e)),
    }
}

/// Checks that the runtime serves the Instance's flow at the desired
/// version, uploads it otherwise, and remembers what it found.
async fn register(instance: &Instance, work: &RuntimeWork, ctx: &Context) {
    let registration = &work.registration;
    let outcome = async {
        let unavailable = |e: &dyn std::fmt::Display| (reasons::RUNTIME_UNAVAILABLE, e.to_string());
        let api_key = ctx
            .runtimes
            .api_key(ctx.secrets.as_ref(), &work.api_key)
            .await
            .map_err(|e| (reasons::RUNTIME_SECRET_MISSING, e))?;
        let served = ctx
            .runtimes
            .registered(&registration.endpoint, FlowRoutes(registration.api), &api_key, &registration.flow_id)
            .await;
        if served.as_ref().map_err(|e| unavailable(e))?.as_deref() == Some(registration.marker().as_str()) {
            return Ok(());
        }
        let artifact = ctx.artifacts.fetch_verified(&registration.artifact_url, &registration.sha256).await;
        let artifact = artifact.map_err(|e| match e.state() {
            ArtifactState::Mismatch => (reasons::ARTIFACT_MISMATCH, e.to_string()),
            _ => (reasons::ARTIFACT_UNREACHABLE, e.to_string()),
        })?;
        let flow: serde_json::Value = serde_json::from_slice(&artifact).map_err(|e| {
            (
                reasons::ARTIFACT_MISMATCH,
                format!("the artifact of version {} is not flow JSON: {e}", registration.version),
            )
        })?;
        ctx.runtimes.upload(registration, &api_key, &flow).await.map_err(|e| unavailable(&e))?;
        tracing::info!(
            flow_id = registration.flow_id,
            version = registration.version,
            "registered the flow in the shared runtime"
        );
        Ok(())
    }
    .await;
    if let Err((reason, message)) = &outcome {
        tracing::warn!(reason, message, "the shared runtime does not serve the flow yet");
    }
    ctx.runtimes
        .record(&shell::key(instance), Probe { registration: registration.clone(), outcome, at: Timestamp::now() });
}
