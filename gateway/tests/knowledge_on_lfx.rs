//! T7, a knowledge base per Instance, on real parts: a real operator
//! provisions a real PostgreSQL with pgvector (a schema and role per
//! Project), buyers upload documents through the gateway, and a real lfx
//! runs `examples/flows/knowledge-desk.json`, whose MCP Tools component
//! searches the knowledge base through the connector gateway with the run's
//! token. The flow needs no LLM: it answers with the best passages.

mod support;

use cmp_testenv::lfx::{Lfx, example_flow_through};
use cmp_testenv::postgres::Postgres;
use serde_json::{Value, json};
use support::tools::RUN_TOKEN_SECRET;
use support::{Gateway, RUNTIME_KEY, World, refusal};

const ALPHA_DOC: &str = "Printer jams on the third floor: open tray 2, pull the paper out gently, then press resume.";
const ALPHA_OTHER: &str = "The coffee machine is descaled every Friday.";
const BETA_DOC: &str = "Payroll runs on the 25th; expense claims filed after the 20th are paid the month after.";

async fn put(w: &World, gw: &Gateway, path: &str, key: &str, content_type: &str, body: &str) -> reqwest::Response {
    w.http
        .put(format!("{}{path}", gw.base))
        .header("x-api-key", key)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("the gateway answers")
}

async fn ask(w: &World, gw: &Gateway, key: &str, question: &str) -> String {
    let answer = gw.post(&w.http, "/v1/runs", key, &json!({"input_value": question})).await;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["status"], "completed", "{body}");
    body["output"]["text"].as_str().unwrap_or_default().to_string()
}

/// Whether the store still holds `org`'s Instance `instance`'s collection, asked of the store itself.
async fn collection_exists(store: &Postgres, org: &str, instance: &str) -> bool {
    let c = cmp_core::knowledge::Collection::of(org, "support", instance);
    let (client, connection) =
        tokio_postgres::connect(&store.admin_url(), tokio_postgres::NoTls).await.expect("the store answers");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{}.{}_documents", c.schema, c.table)])
        .await
        .expect("a query");
    row.get(0)
}

#[tokio::test]
async fn each_agent_answers_from_its_own_knowledge_base_only() {
    let w = World::new("gw-knowledge").await;
    let dir = std::env::temp_dir().join(format!("{}-knowledge", w.run));
    let store = Postgres::start(&dir.join("pg")).await.expect("PostgreSQL starts");
    let gateway_url = store.create_login("cmp_gateway", "gateway-store-password").await.expect("the gateway's login");
    let _operator = w.operator_with(&["--knowledge-store-url", &store.admin_url()]);
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx starts");
    let model = cmp_testenv::postgres::model_dir().expect("the embedding model");
    let model = model.display().to_string();
    let gw = w
        .gateway(
            "gw",
            &[
                "--run-token-secret",
                RUN_TOKEN_SECRET,
                "--knowledge-store-url",
                &gateway_url,
                "--knowledge-model-dir",
                &model,
            ],
        )
        .await;

    let (url, sha256) = example_flow_through("knowledge-desk.json", &gw.base, &dir).expect("the knowledge flow");
    let offering = format!("{}-kb", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 2, "creditsPerChunk": 5,
                        "timeoutSeconds": 60, "requestsPerMinute": 100000}]);
    let more = json!({
        "knowledge": {"maxDocuments": 2, "maxDocumentBytes": 2000},
        "versions": [{"name": "1", "flowId": "knowledge-desk", "artifact": {"url": url, "sha256": sha256}}],
    });
    w.offering_with(&offering, "v2", lfx.url(), plans, more).await;
    let (a, b) = (format!("{}-a", w.run), format!("{}-b", w.run));
    w.organization(&a, 100).await;
    w.organization(&b, 100).await;
    let key_a = w.instance(&a, "desk", &offering, "basic", json!([{"name": "main"}])).await.remove(0).1;
    let retained = json!({"deletionPolicy": "Retain"});
    let key_b = w.instance_more(&b, "desk", &offering, "basic", json!([{"name": "main"}]), retained).await.remove(0).1;

    // Each buyer uploads their own document (the Project's store may still be being provisioned: retried).
    for (key, id, text) in [(&key_a, "printers", ALPHA_DOC), (&key_b, "payroll", BETA_DOC)] {
        let path = format!("/v1/knowledge/documents/{id}");
        let answer = cmp_testenv::test::eventually("an upload", support::CONVERGE, || async {
            let answer = put(&w, &gw, &path, key, "text/plain", text).await;
            (answer.status() != 503).then_some(answer)
        })
        .await;
        assert_eq!(answer.status(), 201);
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!((body["chunks"].as_i64(), body["credits"].as_i64()), (Some(1), Some(5)), "{body}");
    }
    // The same document again is neither indexed nor charged again.
    let again = put(&w, &gw, "/v1/knowledge/documents/printers", &key_a, "text/plain; charset=utf-8", ALPHA_DOC).await;
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.expect("JSON");
    assert_eq!((body["unchanged"].as_bool(), body["credits"].as_i64()), (Some(true), Some(0)), "{body}");

    // Each agent answers from its own documents: the same question gets each tenant's own passage.
    let alpha = ask(&w, &gw, &key_a, "the printer is jammed, what do I do?").await;
    assert!(alpha.contains("open tray 2") && !alpha.contains("Payroll"), "{alpha}");
    let beta = ask(&w, &gw, &key_b, "the printer is jammed, what do I do?").await;
    assert!(beta.contains("Payroll") && !beta.contains("tray 2"), "{beta}");

    // Refusals, each as the identity that would try it, each losing nothing.
    let on_b = format!("/v1/instances/{b}/desk/knowledge/documents/stolen");
    assert_eq!(refusal(put(&w, &gw, &on_b, &key_a, "text/plain", "x").await).await, (403, "wrong_tenant".into()));
    let list_b = w
        .http
        .get(format!("{}/v1/instances/{b}/desk/knowledge/documents", gw.base))
        .header("x-api-key", &key_a)
        .send()
        .await
        .expect("answers");
    assert_eq!(refusal(list_b).await, (403, "wrong_tenant".into()));
    let cases = [
        ("/v1/knowledge/documents/report", "application/pdf", "%PDF".to_string(), 415, "unsupported_document_type"),
        ("/v1/knowledge/documents/big", "text/plain", "x ".repeat(1500), 413, "body_too_large"),
        ("/v1/knowledge/documents/..%2Fetc", "text/plain", "x".to_string(), 400, "malformed_request"),
    ];
    for (path, media, body, status, code) in cases {
        assert_eq!(refusal(put(&w, &gw, path, &key_a, media, &body).await).await, (status, code.into()), "{path}");
    }
    let second = put(&w, &gw, "/v1/knowledge/documents/coffee", &key_a, "text/markdown", ALPHA_OTHER).await;
    assert_eq!(second.status(), 201);
    let third = put(&w, &gw, "/v1/knowledge/documents/third", &key_a, "text/plain", "one too many").await;
    assert_eq!(refusal(third).await, (409, "too_many_documents".into()));
    // A caller cannot point the run at another collection: the flow declares no input, so any tweak is refused.
    let tweaked = json!({"input_value": "x", "tweaks": {"collection": "beta"}});
    assert_eq!(refusal(gw.post(&w.http, "/v1/runs", &key_a, &tweaked).await).await.1, "tweak_not_allowed");
    // The knowledge binding takes no call without a current run's token.
    let bare = w
        .http
        .post(format!("{}/v1/connectors/knowledge/mcp", gw.base))
        .header("authorization", format!("Bearer {key_a}"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(bare.status(), 401);

    // Listing and removing.
    let listed: Value = w
        .http
        .get(format!("{}/v1/knowledge/documents", gw.base))
        .header("x-api-key", &key_a)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> =
        listed["documents"].as_array().into_iter().flatten().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, vec!["coffee", "printers"], "{listed}");
    let remove =
        |id: &str| w.http.delete(format!("{}/v1/knowledge/documents/{id}", gw.base)).header("x-api-key", &key_a).send();
    assert_eq!(remove("coffee").await.expect("answers").status(), 204);
    assert_eq!(refusal(remove("coffee").await.expect("answers")).await, (404, "not_found".into()));

    // The Instance's status says what its knowledge base holds.
    let shown = cmp_testenv::test::eventually("alpha's status.knowledge", support::CONVERGE, || async {
        let held = w.instances(&a).get("desk").await.ok()?.status?.knowledge?;
        (held.documents == 1).then_some(held)
    })
    .await;
    assert_eq!(shown.chunks, 1, "{shown:?}");
    assert!(shown.last_ingestion.is_some() && shown.model.starts_with("all-MiniLM-L6-v2@"), "{shown:?}");

    // Charged: alpha two documents of one chunk (5 each), one run (1) and one search (2); beta one document and
    // one run and search.
    w.wallet_at(&a, 100 - 5 - 5 - 1 - 2).await;
    w.wallet_at(&b, 100 - 5 - 1 - 2).await;

    // Deleted Instances: alpha's (deletionPolicy Delete) takes its collection; beta's (Retain) keeps it.
    assert!(collection_exists(&store, &a, "desk").await && collection_exists(&store, &b, "desk").await);
    for org in [&a, &b] {
        w.instances(org).delete("desk", &Default::default()).await.expect("deleted");
    }
    cmp_testenv::test::eventually("the Instances gone", support::CONVERGE, || async {
        let gone = w.instances(&a).get_opt("desk").await.ok()?.is_none()
            && w.instances(&b).get_opt("desk").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    assert!(!collection_exists(&store, &a, "desk").await, "alpha's collection outlived its Instance");
    assert!(collection_exists(&store, &b, "desk").await, "beta's retained collection was dropped");

    // Every indexing is a usage event.
    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success());
    let ingested: Vec<(String, String, i64)> = gw
        .usage_events()
        .into_iter()
        .filter(|e| e["type"] == "dev.gsv.cmp.knowledge.ingested")
        .map(|e| {
            let d = &e["data"];
            (
                d["instance"].to_string(),
                d["document"].as_str().unwrap_or_default().to_string(),
                d["credits"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(ingested.len(), 3, "{ingested:?}");
    assert!(ingested.iter().all(|(_, _, credits)| *credits == 5), "{ingested:?}");
    drop(lfx);
}
