//! The knowledge base of an Instance (T7), served by CMP: documents a buyer
//! uploads are chunked, embedded ([`embed`]) and stored
//! ([`cmp_core::knowledge`]), and flows search them as a tool through the
//! connector gateway (its built-in binding `knowledge`). The runtime never holds a store
//! credential, and nothing a caller or a flow sends names a collection: the
//! API key (for uploads) or the run's token (for searches) decides the
//! Instance, and CMP names its collection.

pub mod documents;
pub mod embed;

use std::sync::Arc;

use cmp_core::knowledge::{Collection, KnowledgeStore};
use cmp_crds::offering::KnowledgeAllowance;

use self::embed::Embedder;
use crate::authorize::RunTarget;
use crate::cli::Args;
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;

/// The connector binding a flow searches its Instance's knowledge base at: `/v1/connectors/knowledge/mcp`.
pub const BINDING: &str = "knowledge";
/// Its one tool.
pub const SEARCH_TOOL: &str = "search_knowledge";

/// The store and the model.
pub struct Knowledge {
    /// The store, as the gateway's login role.
    pub store: KnowledgeStore,
    /// The one embedding model, for ingestion and search alike.
    pub embedder: Arc<Embedder>,
    /// Writes `status.knowledge` of the Instances.
    pub client: Option<kube::Client>,
}

impl Knowledge {
    /// The knowledge base `--knowledge-store-url` and `--knowledge-model-dir` name, or none. The model is loaded
    /// (and checked) now; the store is reached on first use.
    pub async fn from_args(args: &Args, client: kube::Client) -> anyhow::Result<Option<Arc<Self>>> {
        let (Some(url), Some(dir)) = (&args.knowledge_store_url, &args.knowledge_model_dir) else {
            return Ok(None);
        };
        let dir = dir.clone();
        let embedder = tokio::task::spawn_blocking(move || Embedder::load(&dir)).await??;
        tracing::info!(model = embedder.model(), "the knowledge base is on");
        Ok(Some(Arc::new(Self {
            store: KnowledgeStore::new(url, args.knowledge_store_connections),
            embedder: Arc::new(embedder),
            client: Some(client),
        })))
    }

    /// Writes what the Instance's knowledge base holds now into its `status.knowledge` (its own field manager),
    /// in the background: a failure is logged, and the next change writes it again.
    pub fn report(self: &Arc<Self>, target: &RunTarget) {
        let Some(client) = self.client.clone() else { return };
        let (knowledge, target) = (self.clone(), target.clone());
        tokio::spawn(async move {
            let stats = match knowledge.store.stats(&collection(&target)).await {
                Ok(stats) => stats,
                Err(error) => {
                    return tracing::warn!(%error, instance = %target.instance, "reading the knowledge base's size");
                }
            };
            let status = status(&stats, knowledge.embedder.model());
            let patch = serde_json::json!({
                "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
                "status": {"knowledge": status},
            });
            let api = kube::Api::<cmp_crds::Instance>::namespaced(client, &target.namespace);
            let params = kube::api::PatchParams::apply(cmp_crds::names::GATEWAY_KNOWLEDGE_FIELD_MANAGER).force();
            if let Err(error) = api.patch_status(&target.instance, &params, &kube::api::Patch::Apply(patch)).await {
                tracing::warn!(%error, instance = %target.instance, "writing status.knowledge");
            }
        });
    }

    /// The embeddings of `texts`, computed off the async runtime.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let embedder = self.embedder.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed(&refs).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("embedding stopped: {e}"))?
    }
}

/// The status of a knowledge base holding `stats`, indexed with `model` (pure).
pub fn status(stats: &cmp_core::knowledge::CollectionStats, model: &str) -> cmp_crds::instance::KnowledgeStatus {
    let last_ingestion = stats
        .last_ingestion
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    cmp_crds::instance::KnowledgeStatus {
        documents: stats.documents,
        chunks: stats.chunks,
        last_ingestion,
        model: if stats.documents > 0 { model.to_string() } else { String::new() },
    }
}

/// The collection of the Instance `target` names: from the tenant and the Instance, never from a request.
pub fn collection(target: &RunTarget) -> Collection {
    Collection::of(&target.organization, &target.project, &target.instance)
}

impl Gateway {
    /// The knowledge base and what the Instance's Offering allows in it; refused when either is missing.
    pub fn knowledge_of(&self, target: &RunTarget) -> Result<(Arc<Knowledge>, KnowledgeAllowance), Refusal> {
        let knowledge = self.knowledge.clone().ok_or_else(|| {
            Refusal::new(Code::KnowledgeNotOffered, "this gateway has no knowledge store (--knowledge-store-url)")
        })?;
        let allowance =
            self.directory.offering(&target.offering).and_then(|o| o.spec.knowledge.clone()).ok_or_else(|| {
                Refusal::new(
                    Code::KnowledgeNotOffered,
                    format!("Offering {} has no knowledge base (its spec.knowledge is unset)", target.offering),
                )
            })?;
        Ok((knowledge, allowance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_says_what_the_knowledge_base_holds() {
        let stats = cmp_core::knowledge::CollectionStats {
            documents: 2,
            chunks: 7,
            last_ingestion: Some("2026-12-02T19:00:00Z".into()),
        };
        let held = status(&stats, "all-MiniLM-L6-v2@0123");
        assert_eq!((held.documents, held.chunks, held.model.as_str()), (2, 7, "all-MiniLM-L6-v2@0123"));
        assert_eq!(held.last_ingestion.map(|t| t.0.to_string()), Some("2026-12-02T19:00:00Z".into()));
        let empty = status(&Default::default(), "m");
        assert_eq!((empty.documents, empty.last_ingestion, empty.model.as_str()), (0, None, ""));
    }
}
