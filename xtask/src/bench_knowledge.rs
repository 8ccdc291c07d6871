//! `cargo xtask bench-knowledge`: a knowledge base through CMP, beside the
//! store's own client doing the store's part of the same work, in the same
//! run. On a fresh local control plane, with the release operator and
//! gateway and a real PostgreSQL with pgvector:
//!
//! 1. ingestion: `--documents` generated documents uploaded through the
//!    gateway (`PUT /v1/knowledge/documents/{id}`, four at a time): chunked
//!    and embedded (all-MiniLM-L6-v2, on the CPU) and stored; beside it, the
//!    same rows (the same chunks and vectors, read back from the store)
//!    inserted with tokio-postgres, four documents at a time;
//! 2. search: `--queries` calls of `search_knowledge` through the connector
//!    gateway with a run's token (embedding the query, then the store);
//!    beside it, the store's own nearest-neighbour query with a stored vector.
//!
//! The run whose token the searches present is held open by the
//! `LangflowStandIn` (a stand-in for a runtime: no flow runs here).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::bench::{operator_binary, percentile, release_binary, start_operator};
use crate::bench_gateway::{ORG, apply, instance, organization, ready_key, stand_in_key, wait_http};

const RUNTIME_KEY: &str = "bench-runtime-key";
const RUN_TOKEN_SECRET: &str = "a bench run-token secret of 32 characters or more";
const CONCURRENCY: usize = 4;
const WORDS: &[&str] = &[
    "invoice", "printer", "password", "refund", "shipping", "warranty", "laptop", "account", "payroll", "holiday",
    "network", "badge", "parking", "expense", "contract", "meeting", "backup", "license", "travel", "security",
];

/// A generated document of three paragraphs, deterministic in `n`.
fn document(n: usize) -> String {
    let mut seed = n as u64 * 2_654_435_761 + 1;
    let mut word = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        WORDS[(seed >> 33) as usize % WORDS.len()]
    };
    (0..3)
        .map(|p| {
            let sentence = (0..12).map(|_| word()).collect::<Vec<_>>().join(" ");
            format!("Section {p} of note {n}: {sentence}. See the {} policy for the {} team.", word(), word())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Runs the benchmark.
pub async fn run(documents: usize, queries: usize) -> anyhow::Result<()> {
    let operator = operator_binary(None).await?;
    let gateway_bin = release_binary("cmp-gateway", "cmp-gateway").await?;
    let dir = cmp_testenv::control_plane::cache_dir().join("bench").join(std::process::id().to_string());
    let (plane, client) = crate::start(&dir).await?;
    let runtime = cmp_testenv::langflow_stand_in::LangflowStandIn::start(RUNTIME_KEY).await?;
    let store = cmp_testenv::postgres::Postgres::start(&dir.join("pg")).await?;
    let gateway_url = store.create_login("cmp_gateway", "bench-gateway-password").await?;
    let model = cmp_testenv::postgres::model_dir()?;
    let (_operator, _) =
        start_operator(&operator, &dir, &plane, &["--knowledge-store-url", &store.admin_url()]).await?;

    eprintln!("applying the bench Offering, Organization and Instance ...");
    stand_in_key(&client, RUNTIME_KEY).await?;
    let (flow_url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    apply(&client, json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "bench-kb"},
        "spec": {"displayName": "Knowledge",
                 "runtime": {"mode": "Shared", "api": "v1", "endpoint": runtime.url(),
                             "apiKeySecretRef": {"namespace": "default", "name": "bench-stand-in", "key": "apiKey"}},
                 "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": flow_url, "sha256": sha256}}],
                 "knowledge": {"maxDocuments": 100000},
                 "plans": [{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 1, "creditsPerChunk": 1,
                            "requestsPerMinute": 1000000, "timeoutSeconds": 3600}]},
    }))
    .await?;
    organization(&client).await?;
    apply(&client, instance("kb", "bench-kb", json!([{"name": "main"}]))).await?;
    let (_, key) = ready_key(&client, "kb", "main").await?;

    let (gw_port, gw_health) = (cmp_testenv::free_port()?, cmp_testenv::free_port()?);
    let gw_log = std::fs::File::create(dir.join("gateway.log"))?;
    let _gateway = tokio::process::Command::new(&gateway_bin)
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .args(["--addr", &format!("127.0.0.1:{gw_port}"), "--health-addr", &format!("127.0.0.1:{gw_health}")])
        .args(["--usage-file", &dir.join("usage.jsonl").display().to_string(), "--replica-name", "bench"])
        .args(["--run-token-secret", RUN_TOKEN_SECRET, "--knowledge-store-url", &gateway_url])
        .arg("--knowledge-model-dir")
        .arg(&model)
        .stdout(gw_log.try_clone()?)
        .stderr(gw_log)
        .kill_on_drop(true)
        .spawn()?;
    wait_http(&format!("http://127.0.0.1:{gw_health}/readyz"), "the gateway").await?;
    let base = format!("http://127.0.0.1:{gw_port}");
    let http = reqwest::Client::new();

    // 1. Ingestion through the gateway (the Project's store may still be being provisioned: the first is retried).
    let texts: Vec<String> = (0..documents).map(document).collect();
    let put = |n: usize| {
        http.put(format!("{base}/v1/knowledge/documents/doc-{n}"))
            .header("x-api-key", &key)
            .header("content-type", "text/plain")
            .body(texts[n].clone())
    };
    for _ in 0..600 {
        if put(0).send().await?.status().is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ingesting {documents} documents through the gateway, {CONCURRENCY} at a time ...");
    let started = Instant::now();
    let chunks: Vec<i64> = futures::stream::iter(1..documents)
        .map(|n| {
            let request = put(n);
            async move {
                let answer: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
                anyhow::Ok(answer["chunks"].as_i64().unwrap_or(0))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let through_ingest = started.elapsed();
    let through_docs = chunks.len();
    let through_chunks: i64 = chunks.iter().sum();

    // The same rows, through the store's own client.
    let (admin, connection) = tokio_postgres::connect(&store.admin_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let collection = cmp_core::knowledge::Collection::of(ORG, "support", "kb");
    let source = format!("{}.{}", collection.schema, collection.table);
    admin
        .batch_execute(&format!(
            "CREATE TABLE baseline_documents (id text PRIMARY KEY, sha256 text, bytes bigint, chunks integer,
               content_type text, model text, ingested_at timestamptz DEFAULT now());
             CREATE TABLE baseline (document text REFERENCES baseline_documents (id) ON DELETE CASCADE,
               chunk integer, content text, embedding vector(384), PRIMARY KEY (document, chunk));
             CREATE TABLE baseline_source AS SELECT document, chunk, content, embedding FROM {source}
               WHERE document <> 'doc-0'"
        ))
        .await?;
    let rows = admin
        .query("SELECT document, chunk, content, embedding FROM baseline_source ORDER BY document, chunk", &[])
        .await?;
    type Chunks = Vec<(i32, String, pgvector::Vector)>;
    let mut by_document: std::collections::BTreeMap<String, Chunks> = Default::default();
    for row in &rows {
        by_document.entry(row.get(0)).or_default().push((row.get(1), row.get(2), row.get(3)));
    }
    // Four connections, each inserting its share of the documents one after another (one transaction each): the
    // gateway, too, keeps its connections open.
    let mut shares: Vec<Vec<(String, Chunks)>> = vec![Vec::new(); CONCURRENCY];
    for (n, document) in by_document.into_iter().enumerate() {
        shares[n % CONCURRENCY].push(document);
    }
    let mut connections = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, connection) = tokio_postgres::connect(&store.admin_url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        connections.push(client);
    }
    eprintln!("inserting the same {} rows with tokio-postgres, {CONCURRENCY} connections ...", rows.len());
    let started = Instant::now();
    futures::future::try_join_all(connections.iter_mut().zip(shares).map(|(client, share)| async move {
        for (document, chunks) in share {
            let tx = client.transaction().await?;
            let n = chunks.len() as i32;
            tx.execute(
                "INSERT INTO baseline_documents (id, sha256, bytes, chunks, content_type, model) VALUES ($1, '', 0, $2, 'text/plain', 'm')",
                &[&document, &n],
            )
            .await?;
            let insert =
                tx.prepare("INSERT INTO baseline (document, chunk, content, embedding) VALUES ($1, $2, $3, $4)").await?;
            for (chunk, content, embedding) in &chunks {
                tx.execute(&insert, &[&document, chunk, content, embedding]).await?;
            }
            tx.commit().await?;
        }
        anyhow::Ok(())
    }))
    .await?;
    let direct_ingest = started.elapsed();

    // 2. Search through the connector gateway, with a held run's token.
    let (held, token) = crate::bench_mcp::held_run(&http, &base, &key, &runtime).await?;
    let search = |n: usize| {
        let query = format!("{} {} policy", WORDS[n % WORDS.len()], WORDS[(n * 7 + 3) % WORDS.len()]);
        http.post(format!("{base}/v1/connectors/knowledge/mcp"))
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                          "params": {"name": "search_knowledge", "arguments": {"query": query, "limit": 3}}}))
    };
    for n in 0..20 {
        search(n).send().await?.error_for_status()?;
    }
    eprintln!("{queries} searches through the gateway, then the store's own query, one at a time ...");
    let mut through = Vec::with_capacity(queries);
    for n in 0..queries {
        let started = Instant::now();
        let answer: serde_json::Value = search(n).send().await?.error_for_status()?.json().await?;
        through.push(started.elapsed());
        anyhow::ensure!(answer.pointer("/result/structuredContent/passages").is_some(), "no passages: {answer}");
    }
    let vectors: Vec<pgvector::Vector> = rows.iter().map(|r| r.get(3)).collect();
    let query = admin
        .prepare("SELECT document, chunk, content, 1 - (embedding <=> $1) FROM baseline ORDER BY embedding <=> $1, document, chunk LIMIT 3")
        .await?;
    let mut direct = Vec::with_capacity(queries);
    for n in 0..queries {
        let vector = &vectors[(n * 7) % vectors.len()];
        let started = Instant::now();
        admin.query(&query, &[vector]).await?;
        direct.push(started.elapsed());
    }
    runtime.release_held();
    let _ = held.await;
    through.sort();
    direct.sort();

    let per_s = |count: f64, took: Duration| count / took.as_secs_f64().max(1e-9);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\nknowledge base benchmark: {through_docs} documents ({through_chunks} chunks), {queries} searches, 2 cores"
    );
    println!("{:<58} {:>10} {:>12}", "ingestion", "docs/s", "chunks/s");
    println!(
        "{:<58} {:>10.1} {:>12.1}",
        "through the gateway (chunk, embed on the CPU, store, charge)",
        per_s(through_docs as f64, through_ingest),
        per_s(through_chunks as f64, through_ingest)
    );
    println!(
        "{:<58} {:>10.1} {:>12.1}",
        "the store's own client, the same rows (no embedding)",
        per_s(through_docs as f64, direct_ingest),
        per_s(rows.len() as f64, direct_ingest)
    );
    println!("{:<58} {:>10} {:>12}", "search (3 passages)", "p50 ms", "p95 ms");
    println!(
        "{:<58} {:>10.2} {:>12.2}",
        "search_knowledge through the connector gateway",
        ms(percentile(&through, 0.50)),
        ms(percentile(&through, 0.95))
    );
    println!(
        "{:<58} {:>10.2} {:>12.2}",
        "the store's own nearest-neighbour query (a stored vector)",
        ms(percentile(&direct, 0.50)),
        ms(percentile(&direct, 0.95))
    );
    println!("\nlogs: {}", dir.display());
    Ok(())
}
