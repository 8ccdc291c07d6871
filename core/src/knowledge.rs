//! The knowledge store: PostgreSQL with pgvector, shared by the operator
//! (which provisions it, [`KnowledgeAdmin`]) and the gateway (which ingests
//! and searches, [`KnowledgeStore`]).
//!
//! Isolation is the store's own:
//! - each Project has a schema and a role of the same name
//!   ([`cmp_crds::names::knowledge_schema`]), owner of the schema and of
//!   every collection in it; no other role has any right on them;
//! - each Instance's collection is a table in its Project's schema
//!   ([`cmp_crds::names::knowledge_collection`]);
//! - the gateway logs in as a role that holds no data rights of its own: it
//!   is granted each Project role without inheriting it, and acts for one
//!   Instance inside a transaction that first sets its Project's role. A
//!   statement there cannot read another Project's schema, whatever it says.
//!
//! Every document records the embedding model it was indexed with; a
//! collection is searched only with that model.

use std::sync::Mutex;
use std::sync::PoisonError;

use pgvector::Vector;
use tokio_postgres::{Client, NoTls, Transaction};

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or logged in to.
    #[error(
        "the knowledge store could not be reached: {0}; check --knowledge-store-url (postgres://user:password@host:port/database) and that PostgreSQL with pgvector runs there"
    )]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed.
    #[error("the knowledge store refused {what}: {detail}")]
    Statement {
        /// What was being done.
        what: String,
        /// What the store said (its message, where it sent one).
        detail: String,
        /// The store's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The collection holds as many documents as it may.
    #[error("the knowledge base holds {0} documents, as many as its Offering allows: remove one first")]
    Full(i64),
    /// A store name that is not one of CMP's (never reached with CMP's names: refused before any SQL).
    #[error("{0:?} is not a knowledge store name CMP makes; nothing was sent to the store")]
    InvalidName(String),
    /// The collection was indexed by another model.
    #[error(
        "this collection was indexed with the embedding model {stored}, and this gateway embeds with {current}: re-upload its documents, or run the gateway with the model they were indexed with"
    )]
    ModelMismatch {
        /// The collection's model.
        stored: String,
        /// This process's model.
        current: String,
    },
}

fn statement(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let what = what.into();
    move |source| {
        let detail = match source.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => source.to_string(),
        };
        StoreError::Statement { what, detail, source }
    }
}

/// A name the store may take unquoted: CMP's own names, checked again here because they go into SQL text.
fn identifier(name: &str) -> Result<&str, StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if ok { Ok(name) } else { Err(StoreError::InvalidName(name.to_string())) }
}

/// Where one Instance's knowledge sits: its Project's schema (and role) and its collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The Project's schema and role.
    pub schema: String,
    /// The Instance's table.
    pub table: String,
}

impl Collection {
    /// The collection of Instance `instance` of `project` of `organization`.
    pub fn of(organization: &str, project: &str, instance: &str) -> Self {
        Self {
            schema: cmp_crds::names::knowledge_schema(organization, project),
            table: cmp_crds::names::knowledge_collection(organization, project, instance),
        }
    }
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRecord {
    /// The caller's id for it.
    pub id: String,
    /// The sha256 of its content.
    pub sha256: String,
    /// Its size.
    pub bytes: i64,
    /// How many chunks it was cut into.
    pub chunks: i32,
    /// Its media type.
    pub content_type: String,
    /// When it was indexed (RFC 3339).
    pub ingested_at: String,
}

/// A passage found by a search.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Passage {
    /// The document it is from.
    pub document: String,
    /// Its place in the document.
    pub chunk: i32,
    /// The text.
    pub text: String,
    /// Cosine similarity to the query, 1 at best.
    pub score: f64,
}

/// What a collection holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionStats {
    /// Documents.
    pub documents: i64,
    /// Chunks.
    pub chunks: i64,
    /// When the last document was indexed (RFC 3339).
    pub last_ingestion: Option<String>,
}

/// The largest chunk, in characters: under the model's 256 tokens for ordinary prose.
pub const CHUNK_CHARS: usize = 800;

/// `text` cut into chunks of at most [`CHUNK_CHARS`] characters: whole paragraphs packed together where they
/// fit, a longer paragraph cut between words (a word longer than a chunk is cut where it must be).
pub fn chunk(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let push = |piece: &str, current: &mut String, chunks: &mut Vec<String>| {
        let needed = if current.is_empty() { 0 } else { 1 } + piece.chars().count();
        if current.chars().count() + needed > CHUNK_CHARS && !current.is_empty() {
            chunks.push(std::mem::take(current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(piece);
    };
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        let paragraph = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        if paragraph.chars().count() <= CHUNK_CHARS {
            push(&paragraph, &mut current, &mut chunks);
            continue;
        }
        for word in paragraph.split(' ') {
            let chars: Vec<char> = word.chars().collect();
            for piece in chars.chunks(CHUNK_CHARS) {
                push(&piece.iter().collect::<String>(), &mut current, &mut chunks);
            }
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(StoreError::Connect)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a knowledge store connection ended");
        }
    });
    Ok(client)
}

/// The operator's access: creates and drops Projects' schemas and roles, and Instances' collections.
pub struct KnowledgeAdmin {
    client: Client,
}

impl KnowledgeAdmin {
    /// Logs in at `url` as a role that may create roles and schemas; makes sure pgvector is installed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = connect(url).await?;
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .await
            .map_err(statement("CREATE EXTENSION vector"))?;
        Ok(Self { client })
    }

    /// Whether the connection is gone (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The Project's schema and role, owned by that role alone, which `gateway` (the gateway's login role) may
    /// set but does not inherit. Idempotent.
    pub async fn ensure_project(&self, schema: &str, gateway: &str) -> Result<(), StoreError> {
        let schema = identifier(schema)?;
        let gateway = identifier(gateway)?;
        let sql = format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}') THEN CREATE ROLE {schema} NOLOGIN; END IF;
             END $$;
             CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {schema};
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
             GRANT {schema} TO {gateway} WITH INHERIT FALSE, SET TRUE;"
        );
        self.client.batch_execute(&sql).await.map_err(statement(format!("creating the Project store {schema}")))
    }

    /// Drops an Instance's collection (its chunks and documents). Idempotent.
    pub async fn drop_collection(&self, collection: &Collection) -> Result<(), StoreError> {
        let (s, t) = (identifier(&collection.schema)?, identifier(&collection.table)?);
        let sql = format!("DROP TABLE IF EXISTS {s}.{t}; DROP TABLE IF EXISTS {s}.{t}_documents;");
        self.client.batch_execute(&sql).await.map_err(statement(format!("dropping the collection {s}.{t}")))
    }

    /// Drops a Project's schema, every collection in it, and its role. Idempotent.
    pub async fn drop_project(&self, schema: &str) -> Result<(), StoreError> {
        let schema = identifier(schema)?;
        let sql = format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}') THEN DROP ROLE {schema}; END IF; END $$;"
        );
        self.client.batch_execute(&sql).await.map_err(statement(format!("dropping the Project store {schema}")))
    }
}

/// The gateway's access: a few connections as its login role, each statement run as one Project's role.
pub struct KnowledgeStore {
    url: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
}

/// The chunks of a document to store, with their embeddings.
pub struct NewDocument<'a> {
    /// The caller's id.
    pub id: &'a str,
    /// The sha256 of its content.
    pub sha256: &'a str,
    /// Its size.
    pub bytes: i64,
    /// Its media type.
    pub content_type: &'a str,
    /// Its chunks and their embeddings.
    pub chunks: &'a [(String, Vec<f32>)],
    /// The model that embedded them.
    pub model: &'a str,
    /// The most documents the collection may hold, this one included.
    pub max_documents: i64,
}

impl KnowledgeStore {
    /// The store at `url`, keeping up to `max_idle` connections open between calls.
    pub fn new(url: &str, max_idle: usize) -> Self {
        Self { url: url.to_string(), idle: Mutex::default(), max_idle }
    }

    async fn client(&self) -> Result<Client, StoreError> {
        let reused = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match reused {
            Some(client) if !client.is_closed() => Ok(client),
            _ => connect(&self.url).await,
        }
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle && !client.is_closed() {
            idle.push(client);
        }
    }

    /// Runs `work` in a transaction as the collection's Project role, committing what it did when it succeeds.
    async fn as_project<T>(
        &self,
        collection: &Collection,
        work: impl for<'t> AsyncFnOnce(&Transaction<'t>, &str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let schema = identifier(&collection.schema)?;
        let table = identifier(&collection.table)?;
        let mut client = self.client().await?;
        let result = async {
            let tx = client.transaction().await.map_err(statement("BEGIN"))?;
            tx.batch_execute(&format!("SET LOCAL ROLE {schema}"))
                .await
                .map_err(statement(format!("acting as the Project role {schema} (is the Project provisioned?)")))?;
            let value = work(&tx, &format!("{schema}.{table}")).await?;
            tx.commit().await.map_err(statement("COMMIT"))?;
            Ok(value)
        }
        .await;
        self.give_back(client);
        result
    }

    /// The sha256 of document `id`, if the collection holds it.
    pub async fn document_sha256(&self, collection: &Collection, id: &str) -> Result<Option<String>, StoreError> {
        self.as_project(collection, async |tx, table| {
            if !exists(tx, collection).await? {
                return Ok(None);
            }
            let row = tx
                .query_opt(&format!("SELECT sha256 FROM {table}_documents WHERE id = $1"), &[&id])
                .await
                .map_err(statement("reading a document"))?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    /// Stores a document, replacing one of the same id, creating the collection on first use. Returns the
    /// chunks the replaced document had (0 if new).
    pub async fn put_document(&self, collection: &Collection, document: &NewDocument<'_>) -> Result<i32, StoreError> {
        self.as_project(collection, async |tx, table| {
            // Writes to one collection queue here until commit: concurrent uploads can neither race to create the
            // tables nor pass the document cap together.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&table])
                .await
                .map_err(statement("waiting for the collection's other writes"))?;
            let dims = document.chunks.first().map_or(384, |(_, v)| v.len());
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table}_documents (
                   id text PRIMARY KEY, sha256 text NOT NULL, bytes bigint NOT NULL, chunks integer NOT NULL,
                   content_type text NOT NULL, model text NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now());
                 CREATE TABLE IF NOT EXISTS {table} (
                   document text NOT NULL REFERENCES {table}_documents (id) ON DELETE CASCADE,
                   chunk integer NOT NULL, content text NOT NULL, embedding vector({dims}) NOT NULL,
                   PRIMARY KEY (document, chunk));"
            ))
            .await
            .map_err(statement("creating the collection"))?;
            check_model(tx, table, document.model).await?;
            let replaced: i32 = tx
                .query_opt(&format!("DELETE FROM {table}_documents WHERE id = $1 RETURNING chunks"), &[&document.id])
                .await
                .map_err(statement("replacing a document"))?
                .map_or(0, |r| r.get(0));
            let held: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {table}_documents"), &[])
                .await
                .map_err(statement("counting documents"))?
                .get(0);
            if held >= document.max_documents {
                return Err(StoreError::Full(held));
            }
            let chunks = i32::try_from(document.chunks.len()).unwrap_or(i32::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO {table}_documents (id, sha256, bytes, chunks, content_type, model) VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[&document.id, &document.sha256, &document.bytes, &chunks, &document.content_type, &document.model],
            )
            .await
            .map_err(statement("recording a document"))?;
            let insert = tx
                .prepare(&format!("INSERT INTO {table} (document, chunk, content, embedding) VALUES ($1, $2, $3, $4)"))
                .await
                .map_err(statement("preparing the chunks' insert"))?;
            for (n, (text, embedding)) in document.chunks.iter().enumerate() {
                let n = i32::try_from(n).unwrap_or(i32::MAX);
                let vector = Vector::from(embedding.clone());
                tx.execute(&insert, &[&document.id, &n, text, &vector]).await.map_err(statement("storing a chunk"))?;
            }
            Ok(replaced)
        })
        .await
    }

    /// Removes document `id`; whether it was there.
    pub async fn remove_document(&self, collection: &Collection, id: &str) -> Result<bool, StoreError> {
        self.as_project(collection, async |tx, table| {
            if !exists(tx, collection).await? {
                return Ok(false);
            }
            let removed = tx
                .execute(&format!("DELETE FROM {table}_documents WHERE id = $1"), &[&id])
                .await
                .map_err(statement("removing a document"))?;
            Ok(removed > 0)
        })
        .await
    }

    /// The collection's documents, by id.
    pub async fn documents(&self, collection: &Collection) -> Result<Vec<DocumentRecord>, StoreError> {
        self.as_project(collection, async |tx, table| {
            if !exists(tx, collection).await? {
                return Ok(Vec::new());
            }
            let rows = tx
                .query(
                    &format!(
                        "SELECT id, sha256, bytes, chunks, content_type,
                                to_char(ingested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         FROM {table}_documents ORDER BY id"
                    ),
                    &[],
                )
                .await
                .map_err(statement("listing documents"))?;
            Ok(rows
                .iter()
                .map(|r| DocumentRecord {
                    id: r.get(0),
                    sha256: r.get(1),
                    bytes: r.get(2),
                    chunks: r.get(3),
                    content_type: r.get(4),
                    ingested_at: r.get(5),
                })
                .collect())
        })
        .await
    }

    /// The `limit` passages nearest `query` (embedded by `model`), best first.
    pub async fn search(
        &self,
        collection: &Collection,
        query: &[f32],
        model: &str,
        limit: i64,
    ) -> Result<Vec<Passage>, StoreError> {
        self.as_project(collection, async |tx, table| {
            if !exists(tx, collection).await? {
                return Ok(Vec::new());
            }
            check_model(tx, table, model).await?;
            let vector = Vector::from(query.to_vec());
            let rows = tx
                .query(
                    &format!(
                        "SELECT document, chunk, content, 1 - (embedding <=> $1) FROM {table}
                         ORDER BY embedding <=> $1, document, chunk LIMIT $2"
                    ),
                    &[&vector, &limit],
                )
                .await
                .map_err(statement("searching"))?;
            Ok(rows
                .iter()
                .map(|r| Passage { document: r.get(0), chunk: r.get(1), text: r.get(2), score: r.get(3) })
                .collect())
        })
        .await
    }

    /// What the collection holds.
    pub async fn stats(&self, collection: &Collection) -> Result<CollectionStats, StoreError> {
        self.as_project(collection, async |tx, table| {
            if !exists(tx, collection).await? {
                return Ok(CollectionStats::default());
            }
            let row = tx
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(sum(chunks), 0)::bigint,
                                to_char(max(ingested_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         FROM {table}_documents"
                    ),
                    &[],
                )
                .await
                .map_err(statement("counting documents"))?;
            Ok(CollectionStats { documents: row.get(0), chunks: row.get(1), last_ingestion: row.get(2) })
        })
        .await
    }
}

async fn exists(tx: &Transaction<'_>, collection: &Collection) -> Result<bool, StoreError> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
            &[&collection.schema, &format!("{}_documents", collection.table)],
        )
        .await
        .map_err(statement("looking for the collection"))?;
    Ok(row.get(0))
}

async fn check_model(tx: &Transaction<'_>, table: &str, model: &str) -> Result<(), StoreError> {
    let stored: Option<String> = tx
        .query_opt(&format!("SELECT model FROM {table}_documents WHERE model <> $1 LIMIT 1"), &[&model])
        .await
        .map_err(statement("reading the collection's model"))?
        .map(|r| r.get(0));
    match stored {
        Some(stored) => Err(StoreError::ModelMismatch { stored, current: model.to_string() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paragraphs_are_packed_and_long_ones_cut_between_words() {
        assert_eq!(chunk("one\n\ntwo\n\n\n  three  "), vec!["one two three"]);
        assert!(chunk("  \n\n ").is_empty());
        let long = "word ".repeat(400);
        let chunks = chunk(&long);
        assert!(chunks.len() >= 2 && chunks.iter().all(|c| c.chars().count() <= CHUNK_CHARS), "{chunks:?}");
        assert!(chunks.iter().all(|c| !c.starts_with(' ') && !c.ends_with(' ')));
        assert_eq!(chunks.join(" ").split(' ').count(), 400, "no word lost");
        let unbroken = "x".repeat(CHUNK_CHARS * 2 + 5);
        assert_eq!(chunk(&unbroken).iter().map(|c| c.len()).collect::<Vec<_>>(), vec![CHUNK_CHARS, CHUNK_CHARS, 5]);
    }

    #[test]
    fn store_names_are_checked_before_they_reach_sql() {
        assert!(identifier("cmp_p_0123abcd").is_ok());
        for bad in ["", "Cmp", "1abc", "a;drop", "a b", &"a".repeat(64)] {
            assert!(identifier(bad).is_err(), "{bad:?}");
        }
        let c = Collection::of("acme", "support", "desk");
        assert!(identifier(&c.schema).is_ok() && identifier(&c.table).is_ok());
        assert_ne!(c.table, Collection::of("acme", "support", "desk2").table);
        assert_ne!(c.schema, Collection::of("acme", "sales", "desk").schema);
    }
}
