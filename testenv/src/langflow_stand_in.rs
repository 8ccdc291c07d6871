//! `LangflowStandIn`: stands in for a full Langflow runtime where lfx cannot
//! play the part. lfx serves `/api/v2/workflows` but not Langflow's `v1` run
//! API, and its echo flow answers in milliseconds, so it can neither fail
//! nor time out on demand. The stand-in serves, over real HTTP on loopback:
//!
//! - the flow routes of full Langflow that the operator registers flows with
//!   (`GET`, `PUT` (an upsert) and `DELETE` of `/api/v1/flows/{id}`, as
//!   Langflow 1.13 serves them), so Instances become Ready;
//! - `POST /api/v1/run/{flow}?stream=true|false` in Langflow's documented
//!   shapes (a JSON answer; or bare JSON frames `add_message`, `token`, `end`
//!   separated by blank lines);
//!
//! It records what each run brought it ([`LangflowStandIn::seen`]): the run
//! token a flow with connectors gets, and everything else, so a test can
//! check that no credential ever reached the runtime.
//!
//! It behaves as the input says: `sleep <ms>` answers after that long,
//! `hold` answers once the test calls [`LangflowStandIn::release_held`],
//! `fail` answers 500, `echo run token` answers with the run's token (as a
//! runtime echoing its request globals would; streamed, in pieces of 7
//! bytes, so the token is split between chunks), anything else is echoed
//! (word by word when streamed, 50 ms apart). Every route wants the `x-api-key` it was started with.
//!
//! For `cargo xtask bench-gateway` it also answers `POST /v1/chat/completions`
//! with a fixed OpenAI-shaped completion (any key), so that LiteLLM can
//! front the same trivial upstream as the gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Error;

#[derive(Default)]
struct Shared {
    api_key: String,
    flows: Mutex<HashMap<String, String>>,
    runs: AtomicUsize,
    streams_cut: AtomicUsize,
    seen: Mutex<Vec<SeenRun>>,
    release: tokio::sync::Notify,
}

/// What a run brought the runtime: its headers and body, as text.
#[derive(Debug, Clone, Default)]
pub struct SeenRun {
    /// The `x-cmp-run-token` header, if any.
    pub run_token: Option<String>,
    /// Every header and the body, as text (to search for what must not be there).
    pub everything: String,
}

/// A running stand-in; dropping it stops the server.
pub struct LangflowStandIn {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl LangflowStandIn {
    /// Serves on a free loopback port, wanting `api_key`.
    pub async fn start(api_key: &str) -> Result<Self, Error> {
        let shared = Arc::new(Shared { api_key: api_key.to_string(), ..Shared::default() });
        let router = router(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Build(format!("binding the Langflow stand-in: {e}")))?;
        let addr = listener.local_addr().map_err(|e| Error::Build(format!("the stand-in's address: {e}")))?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { url: format!("http://{addr}"), shared, server })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs received on `/api/v1/run`.
    pub fn runs(&self) -> usize {
        self.shared.runs.load(Ordering::SeqCst)
    }

    /// Every run received so far, in order.
    pub fn seen(&self) -> Vec<SeenRun> {
        self.shared.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Ends every run waiting on `hold` (they answer as if their input were `held`).
    pub fn release_held(&self) {
        self.shared.release.notify_waiters();
    }

    /// Streams whose reader went away before the end.
    pub fn streams_cut(&self) -> usize {
        self.shared.streams_cut.load(Ordering::SeqCst)
    }
}

impl Drop for LangflowStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The refusal of a call without the runtime's key, if it lacks it.
fn refused(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(key) if key == shared.api_key => None,
        _ => Some((StatusCode::FORBIDDEN, Json(json!({"detail": "invalid API key"}))).into_response()),
    }
}

async fn chat_completion() -> Json<Value> {
    Json(json!({
        "id": "chatcmpl-stand-in", "object": "chat.completion", "created": 0, "model": "stand-in",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
}

/// Serves a stand-in on `addr` until the process ends (for a benchmark's own upstream process).
pub async fn serve_forever(api_key: &str, addr: std::net::SocketAddr) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Build(format!("binding the Langflow stand-in on {addr}: {e}")))?;
    let router = router(Arc::new(Shared { api_key: api_key.to_string(), ..Shared::default() }));
    axum::serve(listener, router).await.map_err(|e| Error::Build(format!("serving the stand-in: {e}")))
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/flows/{id}", get(info).put(upsert).delete(remove))
        .route("/api/v1/run/{flow}", post(run))
        .route("/v1/chat/completions", post(chat_completion))
        .with_state(shared)
}

async fn info(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    match shared.flows.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
        Some(description) => Json(json!({"id": id, "description": description})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upsert(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    let description = body["description"].as_str().unwrap_or_default().to_string();
    let replaced = shared.flows.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone(), description);
    let status = if replaced.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    (status, Json(json!({"id": id}))).into_response()
}

async fn remove(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    match shared.flows.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
        Some(_) => Json(json!({"message": "Flow deleted successfully"})).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"detail": "Flow not found"}))).into_response(),
    }
}

/// Counts a stream cut short when dropped before its end.
struct StreamWatch {
    shared: Arc<Shared>,
    ended: bool,
}

impl StreamWatch {
    fn end(&mut self) {
        self.ended = true;
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.streams_cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The input a run answers with its run token.
pub const ECHO_RUN_TOKEN: &str = "echo run token";

async fn run(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(flow): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    shared.runs.fetch_add(1, Ordering::SeqCst);
    let mut everything: String =
        headers.iter().map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect();
    everything.push_str(&body.to_string());
    let run_token = headers.get("x-cmp-run-token").and_then(|v| v.to_str().ok()).map(String::from);
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(SeenRun { run_token: run_token.clone(), everything });
    if !shared.flows.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&flow) {
        return (StatusCode::NOT_FOUND, Json(json!({"detail": format!("flow {flow} not found")}))).into_response();
    }
    let mut input = body["input_value"].as_str().unwrap_or_default().to_string();
    let pieces = if input == ECHO_RUN_TOKEN {
        input = format!("your run token is {}", run_token.unwrap_or_default());
        7
    } else {
        usize::MAX
    };
    let session = body["session_id"].as_str().unwrap_or("stand-in-session").to_string();
    if let Some(ms) = input.strip_prefix("sleep ").and_then(|ms| ms.trim().parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if input == "hold" {
        let _ = tokio::time::timeout(Duration::from_secs(300), shared.release.notified()).await;
    }
    if input == "fail" {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"detail": "the flow failed (as asked)"})))
            .into_response();
    }
    if query.get("stream").map(String::as_str) != Some("true") {
        let message = json!({"results": {"message": {"text": input}}});
        return Json(
            json!({"session_id": session, "outputs": [{"inputs": {"input_value": input}, "outputs": [message]}]}),
        )
        .into_response();
    }
    let mut frames = vec![json!({"event": "add_message", "data": {"text": input, "sender": "User"}})];
    frames.extend(input.split(' ').map(|word| json!({"event": "token", "data": {"chunk": word}})));
    frames.push(json!({"event": "end", "data": {"result": {"session_id": session, "text": input}}}));
    let frames: Vec<String> = frames
        .iter()
        .flat_map(|frame| {
            let text = format!("{frame}\n\n");
            text.as_bytes().chunks(pieces).map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>()
        })
        .collect();
    let watch = StreamWatch { shared: shared.clone(), ended: false };
    let stream =
        futures::stream::unfold((frames.into_iter(), watch, true), |(mut frames, mut watch, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            match frames.next() {
                Some(frame) => Some((Ok::<_, std::io::Error>(frame), (frames, watch, false))),
                None => {
                    watch.end();
                    None
                }
            }
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
