//! Why the gateway did not run an agent: an HTTP status, a stable code and
//! a message that says what to do, always answered as
//! `{"error":{"code","message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use cmp_crds::refusals::Code;

/// A refused or failed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code.
    pub code: Code,
    /// What was wrong and what to do; never a key or a token.
    pub message: String,
    /// For 429: seconds until the key may run again.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A small JSON body (at most 4096 bytes) of type `T`; `shape` (for example `{"name": "<key name>"}`) is what the
/// refusal of any other body says the route takes.
pub async fn small_json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    shape: &str,
) -> Result<T, Refusal> {
    let body = axum::body::to_bytes(body, 4096)
        .await
        .map_err(|_| Refusal::new(Code::BodyTooLarge, "the body is over 4096 bytes"))?;
    serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(Code::MalformedRequest, format!("the body must be {shape}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_json_with_its_code_and_retry_after() {
        let mut refusal = Refusal::new(Code::RateLimited, "slow down");
        refusal.retry_after = Some(3);
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("3"));
    }
}
