//! The knowledge store's provisioning (`--knowledge-store-url`): each
//! Project gets its schema and role, which the gateway's login role
//! (`--knowledge-gateway-role`) may take but does not inherit
//! ([`cmp_core::knowledge`]); an Instance deleted with `deletionPolicy:
//! Delete` takes its collection with it, and a Project its schema and role.
//! `Retain` keeps them.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use cmp_core::knowledge::{Collection, KnowledgeAdmin, StoreError};

use crate::error::{Error, Result};

/// The operator's access to the knowledge store.
pub struct KnowledgeProvisioner {
    url: String,
    gateway_role: String,
    admin: tokio::sync::Mutex<Option<KnowledgeAdmin>>,
    provisioned: Mutex<HashSet<String>>,
}

fn failed(error: StoreError) -> Error {
    Error::Knowledge(error.to_string())
}

impl KnowledgeProvisioner {
    /// Provisions in the store at `url` (a role that may create roles and schemas) for the gateway's `gateway_role`.
    pub fn new(url: &str, gateway_role: &str) -> Self {
        Self {
            url: url.to_string(),
            gateway_role: gateway_role.to_string(),
            admin: tokio::sync::Mutex::default(),
            provisioned: Mutex::default(),
        }
    }

    async fn with_admin<T>(&self, work: impl AsyncFnOnce(&KnowledgeAdmin) -> Result<T, StoreError>) -> Result<T> {
        let mut admin = self.admin.lock().await;
        if admin.as_ref().is_none_or(KnowledgeAdmin::is_closed) {
            *admin = Some(KnowledgeAdmin::connect(&self.url).await.map_err(failed)?);
        }
        let Some(connected) = admin.as_ref() else { return Err(Error::Knowledge("not connected".into())) };
        let result = work(connected).await;
        if result.is_err() {
            // A failed statement may have been a lost connection: the next call connects again.
            *admin = None;
        }
        result.map_err(failed)
    }

    /// The Project's schema and role; once per process and Project (it is idempotent, so a restart repeats it).
    pub async fn ensure_project(&self, organization: &str, project: &str) -> Result<()> {
        let schema = cmp_crds::names::knowledge_schema(organization, project);
        if self.provisioned.lock().unwrap_or_else(PoisonError::into_inner).contains(&schema) {
            return Ok(());
        }
        self.with_admin(async |admin| admin.ensure_project(&schema, &self.gateway_role).await).await?;
        tracing::info!(%schema, "the Project's knowledge store schema and role are in place");
        self.provisioned.lock().unwrap_or_else(PoisonError::into_inner).insert(schema);
        Ok(())
    }

    /// Drops the Project's schema, every collection in it, and its role.
    pub async fn drop_project(&self, organization: &str, project: &str) -> Result<()> {
        let schema = cmp_crds::names::knowledge_schema(organization, project);
        self.with_admin(async |admin| admin.drop_project(&schema).await).await?;
        self.provisioned.lock().unwrap_or_else(PoisonError::into_inner).remove(&schema);
        tracing::info!(%schema, "dropped the Project's knowledge store schema and role");
        Ok(())
    }

    /// Drops an Instance's collection.
    pub async fn drop_collection(&self, organization: &str, project: &str, instance: &str) -> Result<()> {
        let collection = Collection::of(organization, project, instance);
        self.with_admin(async |admin| admin.drop_collection(&collection).await).await?;
        tracing::info!(table = %collection.table, "dropped the Instance's knowledge collection");
        Ok(())
    }
}
