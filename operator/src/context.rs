//! What every reconciler is handed: the client, the caches, the writer,
//! the settings, and the process's metrics and Events.

use cmp_core::secrets::{SecretSource, Secrets};
use std::sync::Arc;

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::apply::Applier;
use crate::artifact::Artifacts;
use crate::backoff::Backoff;
use crate::cache::Caches;
use crate::flows::SharedRuntimes;
use crate::gitops::GitOps;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::shell::own_writes::OwnWrites;
use crate::vault::VaultStore;

/// Shared state of the reconcilers.
pub struct Context {
    /// The reconcilers' settings.
    pub settings: Settings,
    /// What the operator reads, from watches.
    pub caches: Arc<Caches>,
    /// Writes objects.
    pub applier: Applier,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-object retry delays.
    pub backoff: Backoff,
    /// Flow artifacts checked by this process.
    pub artifacts: Artifacts,
    /// Shared runtimes, and what they were last found to serve.
    pub runtimes: SharedRuntimes,
    /// Secret values (the runtimes' API keys), read as the operator.
    pub secrets: Arc<dyn SecretSource>,
    /// Vault/OpenBao, with `--vault-addr`.
    pub vault: Option<VaultStore>,
    /// The GitOps writer of Dedicated runtimes, when a repository is configured.
    pub gitops: Option<GitOps>,
    /// The knowledge store's provisioning, with `--knowledge-store-url`.
    pub knowledge: Option<crate::knowledge::KnowledgeProvisioner>,
    /// The versions reconciles wrote themselves, whose watch events wake nothing.
    pub own_writes: OwnWrites,
    /// Publishes Events.
    recorder: Recorder,
}

impl Context {
    /// Builds the context. `identity` names this replica in the Events it publishes. Fails when the Vault settings are unusable.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        caches: Arc<Caches>,
        metrics: Arc<Metrics>,
        identity: String,
    ) -> anyhow::Result<Self> {
        let vault = settings.vault.clone().map(VaultStore::new).transpose()?;
        let settings_knowledge =
            settings.knowledge.as_ref().map(|k| crate::knowledge::KnowledgeProvisioner::new(&k.url, &k.gateway_role));
        let gitops = settings.gitops.clone().map(|g| GitOps::counted(g, metrics.gitops.clone()));
        let manager = cmp_crds::names::OPERATOR_MANAGER;
        let applier = Applier::new(client.clone(), caches.clone(), metrics.clone(), manager);
        let secrets: Arc<dyn SecretSource> = Arc::new(Secrets::new(client.clone(), None));
        let recorder = Recorder::new(client, Reporter { controller: manager.into(), instance: Some(identity) });
        Ok(Self {
            settings,
            caches,
            applier,
            metrics,
            backoff: Backoff::default(),
            artifacts: Artifacts::default(),
            runtimes: SharedRuntimes::default(),
            secrets,
            vault,
            gitops,
            knowledge: settings_knowledge,
            own_writes: OwnWrites::default(),
            recorder,
        })
    }

    /// Publishes an Event about `object`. Failures are logged, never fatal.
    pub async fn publish<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(cmp_core::events::note(note)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "publishing an event failed");
        }
    }
}
