//! What every reconciler shares.

use std::sync::Arc;

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::apply::Applier;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::Metrics;
use cmp_crds::Organization;
use kube::api::{Api, ListParams};

use crate::error::{Error, Result};

/// Shared state of the reconcilers.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Writes objects.
    pub applier: Applier,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Per-object retry delays.
    pub backoff: Backoff,
}

impl Context {
    /// Builds the context.
    pub fn new(client: kube::Client, config: Config, metrics: Arc<Metrics>) -> Self {
        let applier = Applier::new(client.clone(), metrics.clone(), cmp_crds::names::OPERATOR_MANAGER);
        let reporter =
            Reporter { controller: cmp_crds::names::OPERATOR_MANAGER.into(), instance: Some(config.identity()) };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, config, metrics, applier, recorder, backoff: Backoff::default() }
    }

    /// Publishes an Event about `object`. Failures are logged, never fatal.
    pub async fn publish<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "publishing an event failed");
        }
    }
}

impl Context {
    /// The Organization `name` if this operator reconciles it. `Ok(None)`
    /// when it exists but does not match `--organization-selector`; an
    /// error when it does not exist.
    pub async fn organization(&self, name: &str) -> Result<Option<Organization>> {
        let api = Api::<Organization>::all(self.client.clone());
        let read = Error::kube(format!("reading Organization {name}"));
        let found = if self.config.organization_selector.is_empty() {
            api.get_opt(name).await.map_err(read)?
        } else {
            let params = ListParams::default()
                .labels(&self.config.organization_selector)
                .fields(&format!("metadata.name={name}"));
            let selected = api.list(&params).await.map_err(read)?.items.into_iter().next();
            if selected.is_none()
                && api
                    .get_metadata_opt(name)
                    .await
                    .map_err(Error::kube(format!("reading Organization {name}")))?
                    .is_some()
            {
                return Ok(None);
            }
            selected
        };
        found.map(Some).ok_or_else(|| Error::OrganizationNotFound { organization: name.to_string() })
    }
}
