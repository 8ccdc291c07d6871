//! The knowledge store on a real PostgreSQL with pgvector: what the gateway
//! can reach as one Project's role, shown at the store itself; documents
//! replaced and removed; a collection indexed by another model refused; a
//! Project's and an Instance's data dropped.

use cmp_core::knowledge::{Collection, KnowledgeAdmin, KnowledgeStore, NewDocument, StoreError};
use cmp_gateway::knowledge::embed::Embedder;
use cmp_testenv::postgres::Postgres;

const GATEWAY_LOGIN: &str = "cmp_gateway";

struct Store {
    server: Postgres,
    admin: KnowledgeAdmin,
    gateway: KnowledgeStore,
    gateway_url: String,
    embedder: Embedder,
}

async fn store(name: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("cmp-knowledge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Postgres::start(&dir).await.expect("PostgreSQL starts");
    let gateway_url = server.create_login(GATEWAY_LOGIN, "gateway-password").await.expect("login role");
    let admin = KnowledgeAdmin::connect(&server.admin_url()).await.expect("admin connects");
    let embedder = Embedder::load(&cmp_testenv::postgres::model_dir().expect("model")).expect("model loads");
    Store { gateway: KnowledgeStore::new(&gateway_url, 2), server, admin, gateway_url, embedder }
}

impl Store {
    async fn put(&self, collection: &Collection, id: &str, text: &str) -> Result<i32, StoreError> {
        let chunks: Vec<String> = cmp_core::knowledge::chunk(text);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let vectors = self.embedder.embed(&refs).expect("embeds");
        let pairs: Vec<(String, Vec<f32>)> = chunks.into_iter().zip(vectors).collect();
        let sha256 = "0".repeat(64);
        let document = NewDocument {
            id,
            sha256: &sha256,
            bytes: i64::try_from(text.len()).unwrap_or_default(),
            content_type: "text/plain",
            chunks: &pairs,
            model: self.embedder.model(),
            max_documents: 3,
        };
        self.gateway.put_document(collection, &document).await
    }

    async fn search(&self, collection: &Collection, query: &str) -> Vec<String> {
        let q = self.embedder.embed(&[query]).expect("embeds").remove(0);
        let found = self.gateway.search(collection, &q, self.embedder.model(), 3).await.expect("searches");
        found.into_iter().map(|p| p.text).collect()
    }

    /// Runs `sql` logged in as the gateway, outside CMP's code: what the store itself allows.
    async fn as_gateway(&self, sql: &str) -> Result<(), String> {
        let (client, connection) =
            tokio_postgres::connect(&self.gateway_url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{e}: {}", e.as_db_error().map(|d| d.message()).unwrap_or("")))
    }
}

#[tokio::test]
async fn one_projects_role_reaches_its_own_collections_only() {
    let s = store("isolation").await;
    let alpha = Collection::of("alpha", "support", "desk");
    let beta = Collection::of("beta", "support", "desk");
    for c in [&alpha, &beta] {
        s.admin.ensure_project(&c.schema, GATEWAY_LOGIN).await.expect("Project provisioned");
        s.admin.ensure_project(&c.schema, GATEWAY_LOGIN).await.expect("provisioning again changes nothing");
    }
    s.put(&alpha, "printers", "The alpha printer on floor 3 jams on double-sided jobs.").await.expect("stored");
    s.put(&beta, "payroll", "Beta pays salaries on the 25th of every month.").await.expect("stored");

    // Through CMP's store code: each collection answers with its own passages only.
    assert_eq!(
        s.search(&alpha, "when is payday?").await,
        vec!["The alpha printer on floor 3 jams on double-sided jobs."]
    );
    assert_eq!(s.search(&beta, "my printout is stuck").await, vec!["Beta pays salaries on the 25th of every month."]);

    // At the store: acting as alpha's role, beta's table cannot be read, whatever the statement says.
    let cross = format!("BEGIN; SET LOCAL ROLE {}; SELECT * FROM {}.{}; COMMIT", alpha.schema, beta.schema, beta.table);
    let refused = s.as_gateway(&cross).await.expect_err("alpha's role reads beta's collection");
    assert!(refused.contains("permission denied for schema"), "{refused}");
    // The gateway's own login holds no right to any collection: only by taking one Project's role.
    let bare = format!("SELECT * FROM {}.{}", alpha.schema, alpha.table);
    let refused = s.as_gateway(&bare).await.expect_err("the login reads a collection without a Project role");
    assert!(refused.contains("permission denied"), "{refused}");
    // Nor may it take a role it was not granted: a Project the operator has not provisioned for it.
    let other = Collection::of("gamma", "support", "desk");
    s.server.sql(&format!("CREATE ROLE {} NOLOGIN", other.schema)).await.expect("a role of another's");
    let refused = s.as_gateway(&format!("SET ROLE {}", other.schema)).await.expect_err("took an ungranted role");
    assert!(refused.contains("permission denied to set role"), "{refused}");
    // Nor can a Project role grant itself to anyone, or create roles.
    let escalate = format!("BEGIN; SET LOCAL ROLE {}; CREATE ROLE sneaky; COMMIT", alpha.schema);
    assert!(s.as_gateway(&escalate).await.is_err(), "a Project role created a role");
    // Two Instances of one Project have collections of their own.
    let desk2 = Collection::of("alpha", "support", "desk2");
    assert!(s.search(&desk2, "printer").await.is_empty(), "a new Instance sees its sibling's documents");
}

#[tokio::test]
async fn documents_are_replaced_removed_and_counted() {
    let s = store("lifecycle").await;
    let c = Collection::of("alpha", "support", "desk");
    s.admin.ensure_project(&c.schema, GATEWAY_LOGIN).await.expect("provisioned");
    assert_eq!(s.gateway.stats(&c).await.expect("stats").documents, 0, "an unused collection is empty");
    assert_eq!(s.put(&c, "faq", "Old answer.").await.expect("stored"), 0, "a new document replaced nothing");
    let long = "The refund window is thirty days. ".repeat(60);
    assert_eq!(s.put(&c, "faq", &long).await.expect("replaced"), 1, "the old document's one chunk was replaced");
    let stats = s.gateway.stats(&c).await.expect("stats");
    assert_eq!((stats.documents, stats.chunks), (1, 3), "{stats:?}");
    assert!(stats.last_ingestion.is_some());
    let listed = s.gateway.documents(&c).await.expect("listed");
    assert_eq!(listed.iter().map(|d| (d.id.as_str(), d.chunks)).collect::<Vec<_>>(), vec![("faq", 3)]);
    assert!(s.search(&c, "old").await.iter().all(|t| !t.contains("Old answer")), "the replaced text is gone");
    assert!(s.gateway.remove_document(&c, "faq").await.expect("removed"));
    assert!(!s.gateway.remove_document(&c, "faq").await.expect("removed twice"), "a second removal finds nothing");
    assert_eq!(s.gateway.stats(&c).await.expect("stats"), Default::default(), "no chunk outlives its document");
}

#[tokio::test]
async fn a_collection_is_never_searched_with_another_model_than_it_was_indexed_with() {
    let s = store("model").await;
    let c = Collection::of("alpha", "support", "desk");
    s.admin.ensure_project(&c.schema, GATEWAY_LOGIN).await.expect("provisioned");
    s.put(&c, "faq", "Refunds within thirty days.").await.expect("stored");
    let q = s.embedder.embed(&["Refunds within thirty days."]).expect("embeds").remove(0);
    // The same model embeds a chunk and the same text as a query to the same vector.
    let found = s.gateway.search(&c, &q, s.embedder.model(), 1).await.expect("searches");
    assert!(found[0].score > 0.9999, "ingestion and search embed differently: {found:?}");
    let other = s.gateway.search(&c, &q, "all-MiniLM-L12-v2@0000", 1).await;
    assert!(matches!(other, Err(StoreError::ModelMismatch { .. })), "{other:?}");
    let message = other.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains(s.embedder.model()) && message.contains("re-upload"), "{message}");
}

#[tokio::test]
async fn dropping_a_collection_or_a_project_leaves_nothing_behind() {
    let s = store("drop").await;
    let desk = Collection::of("alpha", "support", "desk");
    let kept = Collection::of("alpha", "support", "kept");
    s.admin.ensure_project(&desk.schema, GATEWAY_LOGIN).await.expect("provisioned");
    s.put(&desk, "a", "Alpha's desk notes.").await.expect("stored");
    s.put(&kept, "b", "Alpha's kept notes.").await.expect("stored");
    s.admin.drop_collection(&desk).await.expect("dropped");
    s.admin.drop_collection(&desk).await.expect("dropping again is fine");
    assert_eq!(s.gateway.stats(&desk).await.expect("stats").documents, 0);
    assert_eq!(s.gateway.stats(&kept).await.expect("stats").documents, 1, "the sibling collection is kept");
    s.admin.drop_project(&desk.schema).await.expect("Project dropped");
    s.admin.drop_project(&desk.schema).await.expect("dropping again is fine");
    let gone = s.gateway.stats(&kept).await;
    assert!(gone.is_err(), "the Project's role is gone, so nothing acts as it: {gone:?}");
    let (admin, connection) =
        tokio_postgres::connect(&s.server.admin_url(), tokio_postgres::NoTls).await.expect("the store answers");
    tokio::spawn(connection);
    let left = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1) + (SELECT count(*) FROM pg_namespace WHERE nspname = $1)",
            &[&desk.schema],
        )
        .await
        .expect("a query");
    assert_eq!(left.get::<_, i64>(0), 0, "the Project's role or schema outlived it");
}

#[tokio::test]
async fn concurrent_uploads_to_a_new_collection_all_land_and_never_pass_the_cap() {
    let s = store("concurrent").await;
    let c = Collection::of("alpha", "support", "busy");
    s.admin.ensure_project(&c.schema, GATEWAY_LOGIN).await.expect("provisioned");
    // Eight uploads at once to a collection that does not exist yet, whose cap (see `Store::put`) is 3.
    let uploads = (0..8).map(|n| {
        let (s, c) = (&s, &c);
        async move { s.put(c, &format!("doc-{n}"), &format!("Note number {n} about printers.")).await }
    });
    let results = futures::future::join_all(uploads).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    let full = results.iter().filter(|r| matches!(r, Err(StoreError::Full(3)))).count();
    assert_eq!((stored, full), (3, 5), "{results:?}");
    assert_eq!(s.gateway.stats(&c).await.expect("stats").documents, 3);
}
