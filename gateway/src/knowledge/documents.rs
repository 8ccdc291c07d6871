//! Buyers add, replace, list and remove their Instance's documents:
//!
//! - `PUT /v1/knowledge/documents/{id}` (the API key names the Instance) or
//!   `PUT /v1/instances/{organization}/{instance}/knowledge/documents/{id}`,
//!   the document as the body, its media type in `Content-Type`;
//! - `DELETE` on the same paths; `GET .../knowledge/documents` lists them.
//!
//! The same steps as a run admit each request ([`crate::admission`]:
//! authentication, tenant, runnable, rate), then the Offering's limits
//! (`spec.knowledge`: media types, size, count). A document sent again
//! unchanged (same id, same sha256) is not indexed or charged again; a
//! changed one replaces the old. Indexing costs the plan's
//! `creditsPerChunk` for each chunk, held from the Wallet before the work and
//! charged once it is stored; each indexing is a usage event
//! (`dev.gsv.cmp.knowledge.ingested`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cmp_core::knowledge::{NewDocument, StoreError};
use cmp_crds::offering::KnowledgeAllowance;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use sha2::Digest;

use super::Knowledge;
use crate::admission::{Route, Tenant};
use crate::authorize::{PathTarget, RunTarget};
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;
use crate::usage::Record;

/// What a request asks of the documents.
pub enum Operation {
    /// `GET`: list them.
    List,
    /// `PUT {id}`: add or replace one.
    Put(String),
    /// `DELETE {id}`: remove one.
    Remove(String),
}

/// How long the credits of an upload stay held: embedding a large document takes a while on a CPU.
const INGESTION_HOLD: Duration = Duration::from_secs(300);

/// Serves one request on the documents of the Instance `path` names (or the key's).
pub async fn serve(
    gateway: Arc<Gateway>,
    id: crate::middleware::RequestId,
    path: Option<PathTarget>,
    operation: Operation,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = id.0;
    let answer = match admit(&gateway, path, &headers).await {
        Ok((tenant, target, knowledge, allowance)) => match operation {
            Operation::List => list(&knowledge, &target).await,
            Operation::Remove(id) => remove(&knowledge, &target, &id).await,
            Operation::Put(id) => {
                let upload = Upload { gateway: &gateway, tenant: &tenant, target: &target, knowledge: &knowledge };
                upload.put(&allowance, &id, &headers, body, &request).await
            }
        },
        Err(refusal) => Err(refusal),
    };
    answer.unwrap_or_else(crate::routes::refused)
}

type Admitted = (Tenant, RunTarget, Arc<Knowledge>, KnowledgeAllowance);

/// The run admission's steps, then the Offering's knowledge base.
async fn admit(gateway: &Gateway, path: Option<PathTarget>, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    gateway.ready()?;
    let identified = gateway.identify(Route::Run(path), headers).await?;
    let tenant = gateway.tenant(identified)?;
    let target = gateway.runnable(&tenant.instance)?;
    let (knowledge, allowance) = gateway.knowledge_of(&target)?;
    gateway.rate(&tenant, &target)?;
    Ok((tenant, target, knowledge, allowance))
}

fn unavailable(error: StoreError) -> Refusal {
    tracing::error!(%error, "the knowledge store failed");
    match error {
        StoreError::Full(held) => Refusal::new(
            Code::TooManyDocuments,
            format!("the knowledge base holds {held} documents, as many as its Offering allows: remove one first"),
        ),
        StoreError::ModelMismatch { .. } => Refusal::new(Code::KnowledgeUnavailable, error.to_string()),
        _ => Refusal::new(Code::KnowledgeUnavailable, "the knowledge store is unavailable; try again shortly"),
    }
}

/// A document id: a caller's name for it, of letters, digits, `.`, `_` and `-`.
fn check_id(id: &str) -> Result<(), Refusal> {
    let ok = (1..=128).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            Code::MalformedRequest,
            format!(
                "{id:?} is not a document id: 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
        ))
    }
}

async fn list(knowledge: &Knowledge, target: &RunTarget) -> Result<Response, Refusal> {
    let documents = knowledge.store.documents(&super::collection(target)).await.map_err(unavailable)?;
    let chunks: i64 = documents.iter().map(|d| i64::from(d.chunks)).sum();
    Ok(axum::Json(json!({"documents": documents, "chunks": chunks})).into_response())
}

async fn remove(knowledge: &Arc<Knowledge>, target: &RunTarget, id: &str) -> Result<Response, Refusal> {
    check_id(id)?;
    if knowledge.store.remove_document(&super::collection(target), id).await.map_err(unavailable)? {
        knowledge.report(target);
        tracing::info!(document = %id, instance = %target.instance, "a knowledge document was removed");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Refusal::new(Code::NotFound, format!("the knowledge base has no document {id:?}")))
    }
}

/// The media type of the body, which the Offering must take, as UTF-8 text.
fn content_type(headers: &HeaderMap, allowance: &KnowledgeAllowance) -> Result<String, Refusal> {
    let taken = allowance.content_types.join(", ");
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        Refusal::new(Code::UnsupportedDocumentType, format!("send the document's Content-Type, one of: {taken}"))
    })?;
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let charset_ok = parts.all(|p| {
        p.split_once('=').is_none_or(|(k, v)| {
            !k.eq_ignore_ascii_case("charset") || v.trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    });
    if !allowance.content_types.iter().any(|t| t.eq_ignore_ascii_case(&media)) || !charset_ok {
        return Err(Refusal::new(
            Code::UnsupportedDocumentType,
            format!("{value} is not taken: this Offering's knowledge base takes {taken}, in UTF-8"),
        ));
    }
    Ok(media)
}

struct Upload<'a> {
    gateway: &'a Arc<Gateway>,
    tenant: &'a Tenant,
    target: &'a RunTarget,
    knowledge: &'a Arc<Knowledge>,
}

impl Upload<'_> {
    async fn put(
        &self,
        allowance: &KnowledgeAllowance,
        id: &str,
        headers: &HeaderMap,
        body: Body,
        request: &str,
    ) -> Result<Response, Refusal> {
        check_id(id)?;
        let media = content_type(headers, allowance)?;
        let limit = usize::try_from(allowance.max_document_bytes).unwrap_or(usize::MAX);
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            Refusal::new(
                Code::BodyTooLarge,
                format!("the document is over {limit} bytes, the largest this Offering's knowledge base takes"),
            )
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Refusal::new(Code::MalformedRequest, format!("the document is not UTF-8 text: {e}")))?;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let collection = super::collection(self.target);
        let store = &self.knowledge.store;
        let existing = store.document_sha256(&collection, id).await.map_err(unavailable)?;
        if existing.as_deref() == Some(sha256.as_str()) {
            return Ok(axum::Json(json!({"id": id, "sha256": sha256, "unchanged": true, "credits": 0})).into_response());
        }
        let chunks = cmp_core::knowledge::chunk(text);
        if chunks.is_empty() {
            return Err(Refusal::new(Code::MalformedRequest, "the document holds no text"));
        }
        let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
        let price = count.saturating_mul(self.target.plan.credits_per_chunk);
        let wallet = (self.target.wallet.0.as_str(), self.target.wallet.1.as_str());
        let held = self.gateway.credits.hold(wallet, price, INGESTION_HOLD).await?;
        let stored = self.index(id, &sha256, &bytes, &media, chunks, i64::from(allowance.max_documents)).await;
        let replaced = match stored {
            Ok(replaced) => replaced,
            Err(refusal) => {
                self.gateway.credits.settle(held, 0);
                return Err(refusal);
            }
        };
        self.gateway.credits.settle(held, price);
        self.gateway.usage.queue(Record::Ingestion(cmp_crds::usage::Ingestion {
            id: request.to_string(),
            organization: self.target.organization.clone(),
            project: self.target.project.clone(),
            instance: self.target.instance.clone(),
            key: self.tenant.limited_as.clone(),
            document: id.to_string(),
            bytes: bytes.len() as u64,
            chunks: count.unsigned_abs(),
            credits: price,
            replica: self.gateway.connectors.as_ref().map(|c| c.replica.clone()).unwrap_or_default(),
            at: Timestamp::now(),
        }));
        self.knowledge.report(self.target);
        tracing::info!(document = %id, instance = %self.target.instance, chunks = count, credits = price, "a knowledge document was indexed");
        let status = if existing.is_some() || replaced > 0 { StatusCode::OK } else { StatusCode::CREATED };
        let answer = json!({"id": id, "sha256": sha256, "bytes": bytes.len(), "chunks": count, "credits": price, "replaced": existing.is_some()});
        Ok((status, axum::Json(answer)).into_response())
    }

    /// Embeds the chunks and stores the document; the chunks the replaced version had.
    async fn index(
        &self,
        id: &str,
        sha256: &str,
        bytes: &[u8],
        media: &str,
        chunks: Vec<String>,
        max_documents: i64,
    ) -> Result<i32, Refusal> {
        let vectors = self.knowledge.embed(chunks.clone()).await.map_err(|why| {
            tracing::error!(%why, "embedding failed");
            Refusal::new(Code::KnowledgeUnavailable, "the document could not be embedded; try again shortly")
        })?;
        let pairs: Vec<(String, Vec<f32>)> = chunks.into_iter().zip(vectors).collect();
        let document = NewDocument {
            id,
            sha256,
            bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            content_type: media,
            chunks: &pairs,
            model: self.knowledge.embedder.model(),
            max_documents,
        };
        self.knowledge.store.put_document(&super::collection(self.target), &document).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_are_plain_names() {
        for ok in ["faq", "FAQ-2026.md", "a_b", &"x".repeat(128)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "../etc", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert_eq!(check_id(bad).map_err(|r| r.code), Err(Code::MalformedRequest), "{bad}");
        }
    }

    #[test]
    fn only_the_offerings_media_types_in_utf8_are_taken() {
        let allowance = KnowledgeAllowance::default();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            content_type(&headers, &allowance).map_err(|r| r.code)
        };
        assert_eq!(with("text/plain"), Ok("text/plain".into()));
        assert_eq!(with("Text/Markdown; charset=UTF-8"), Ok("text/markdown".into()));
        assert_eq!(with("text/plain; charset=latin1"), Err(Code::UnsupportedDocumentType));
        assert_eq!(with("application/pdf"), Err(Code::UnsupportedDocumentType));
        assert_eq!(content_type(&HeaderMap::new(), &allowance).map_err(|r| r.code), Err(Code::UnsupportedDocumentType));
    }
}
