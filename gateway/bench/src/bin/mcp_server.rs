//! The trivial MCP server of `cargo xtask bench-mcp`: MCP Streamable HTTP on
//! `POST /mcp`, stateless (no session), answering with JSON: `initialize`,
//! `tools/list` (one tool, `echo`) and `tools/call` of `echo`. Every request
//! must carry `Authorization: <credential>`, as a binding presents it.
//! It is the ceiling the connector gateway is measured against, as
//! `bench-upstream` is for runs; the tests use the official SDK's server.
//!
//! `bench-mcp-server <addr> <credential>`

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

async fn mcp(State(credential): State<String>, headers: HeaderMap, Json(message): Json<Value>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(credential.as_str()) {
        return (StatusCode::UNAUTHORIZED, "credential refused").into_response();
    }
    let Some(id) = message.get("id").cloned() else { return StatusCode::ACCEPTED.into_response() };
    let params = &message["params"];
    let answer = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({"result": {
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}}, "serverInfo": {"name": "bench-mcp", "version": "1"}}}),
        "tools/list" => json!({"result": {"tools": [{"name": "echo", "description": "Echoes its text",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]}}),
        "tools/call" if params["name"] == "echo" => json!({"result": {
            "content": [{"type": "text", "text": params["arguments"]["text"].as_str().unwrap_or_default()}],
            "isError": false}}),
        "ping" => json!({"result": {}}),
        _ => json!({"error": {"code": -32601, "message": "method not found"}}),
    };
    let mut answer = answer;
    answer["jsonrpc"] = json!("2.0");
    answer["id"] = id;
    Json(answer).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(credential)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench-mcp-server <addr> <credential>");
    };
    let app = axum::Router::new().route("/mcp", axum::routing::post(mcp)).with_state(credential);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
