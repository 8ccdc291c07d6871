//! One message to a binding's MCP server over Streamable HTTP, with the
//! tenant's credential added here and nowhere else. The server may answer a
//! request with JSON or with an SSE stream; either way the answer is the
//! JSON-RPC response to that request's id (progress and log notifications
//! on the stream are not relayed). Everything is bounded: the binding's
//! timeout for the whole exchange, and [`MAX_ANSWER_BYTES`] for its size.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// The largest answer read from an MCP server.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The header of an MCP session.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The header naming the protocol revision.
pub const PROTOCOL_HEADER: &str = "mcp-protocol-version";

/// One message to send.
pub struct Outgoing<'a> {
    /// The client pinned to the binding's checked addresses.
    pub client: &'a reqwest::Client,
    /// The binding's URL.
    pub url: reqwest::Url,
    /// The message, as the client sent it.
    pub body: bytes::Bytes,
    /// The credential's header and value.
    pub credential: (&'a str, &'a str),
    /// The MCP server's session id, once it gave one.
    pub session: Option<&'a str>,
    /// The client's MCP headers passed on: the protocol revision, and the 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`), checked against the body by the caller.
    pub passed: Vec<(&'a str, &'a str)>,
    /// The id of the request whose answer is wanted (`None` for a notification).
    pub id: Option<&'a Value>,
    /// How long the exchange may take.
    pub timeout: Duration,
}

/// The MCP server's answer.
#[derive(Debug)]
pub struct Answer {
    /// The JSON-RPC response (`None` for an accepted notification).
    pub message: Option<Value>,
    /// The session id the server gave (on initialize).
    pub session: Option<String>,
    /// The bytes read.
    pub bytes: u64,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The timeout passed.
    #[error("the MCP server did not answer within {0} s (the binding's timeoutSeconds)")]
    Timeout(u64),
    /// The MCP server no longer knows the session.
    #[error("the MCP server no longer knows this session: initialize again")]
    SessionGone,
    /// Anything else: unreachable, an error status, an unusable answer.
    #[error("{0}")]
    Failed(String),
}

/// Sends one message and reads its answer.
pub async fn send(out: Outgoing<'_>) -> Result<Answer, Failure> {
    let seconds = out.timeout.as_secs();
    let credential = out.credential.1.to_string();
    match tokio::time::timeout(out.timeout, exchange(out)).await {
        Err(_) => Err(Failure::Timeout(seconds)),
        Ok(Err(Failure::Failed(message))) => Err(Failure::Failed(message.replace(&credential, "[credential]"))),
        Ok(answer) => answer,
    }
}

async fn exchange(out: Outgoing<'_>) -> Result<Answer, Failure> {
    let mut request = out
        .client
        .post(out.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(out.credential.0, out.credential.1)
        .body(out.body);
    if let Some(session) = out.session {
        request = request.header(SESSION_HEADER, session);
    }
    for (name, value) in out.passed {
        request = request.header(name, value);
    }
    let answer = request.send().await.map_err(|e| Failure::Failed(format!("the MCP server did not answer: {e}")))?;
    let status = answer.status();
    let session = answer.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
    if status == reqwest::StatusCode::NOT_FOUND && out.session.is_some() {
        return Err(Failure::SessionGone);
    }
    if status == reqwest::StatusCode::ACCEPTED || (out.id.is_none() && status.is_success()) {
        return Ok(Answer { message: None, session, bytes: 0 });
    }
    let is_stream = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !status.is_success() {
        let text = read_bounded(answer).await.unwrap_or_default();
        let quoted: String = String::from_utf8_lossy(&text).chars().take(300).collect();
        return Err(Failure::Failed(format!("the MCP server answered {status}: {quoted}")));
    }
    let Some(id) = out.id else { return Ok(Answer { message: None, session, bytes: 0 }) };
    let (message, bytes) = if is_stream { from_stream(answer, id).await? } else { from_json(answer).await? };
    if message.get("id") != Some(id) {
        return Err(Failure::Failed("the MCP server answered another request's id".into()));
    }
    Ok(Answer { message: Some(message), session, bytes })
}

async fn read_bounded(answer: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    let mut chunks = answer.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Failure::Failed(format!("the MCP server's answer broke off: {e}")))?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::Failed(format!("the MCP server's answer is over {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn from_json(answer: reqwest::Response) -> Result<(Value, u64), Failure> {
    let body = read_bounded(answer).await?;
    let message = serde_json::from_slice(&body)
        .map_err(|e| Failure::Failed(format!("the MCP server's answer is not a JSON-RPC message: {e}")))?;
    Ok((message, body.len() as u64))
}

/// Reads SSE events until one carries the response to `id`.
async fn from_stream(answer: reqwest::Response, id: &Value) -> Result<(Value, u64), Failure> {
    let mut chunks = answer.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        while let Some(end) = event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end.0 + end.1).collect();
            if let Some(message) = event_data(&event[..end.0])
                && message.get("id") == Some(id)
                && (message.get("result").is_some() || message.get("error").is_some())
            {
                return Ok((message, total));
            }
        }
        let Some(chunk) = chunks.next().await else {
            return Err(Failure::Failed("the MCP server's event stream ended without an answer".into()));
        };
        let chunk = chunk.map_err(|e| Failure::Failed(format!("the MCP server's event stream broke off: {e}")))?;
        total += chunk.len() as u64;
        if buffer.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::Failed(format!("an event of the MCP server is over {MAX_ANSWER_BYTES} bytes")));
        }
        buffer.extend_from_slice(&chunk);
    }
}

/// Where the first event of `buffer` ends: its length and that of the blank line after it.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The JSON of an event's `data:` lines, joined.
fn event_data(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> =
        text.lines().filter_map(|line| line.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_and_their_data_joined() {
        let stream = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{}}\n\nid: 2\r\n\r\n";
        let (len, gap) = event_end(stream).expect("an event");
        let message = event_data(&stream[..len]).expect("JSON");
        assert_eq!(message["id"], 1);
        let rest = &stream[len + gap..];
        assert_eq!(event_end(rest), Some((5, 4)));
        assert_eq!(event_data(b"id: 2"), None, "an event with no data");
    }
}
