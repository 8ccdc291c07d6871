//! Why the gateway did not run an agent: an HTTP status, a stable code and
//! a message that says what to do, always answered as
//! `{"error":{"code","message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stable error codes of the run API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400: the body or a header is not what the API takes.
    MalformedRequest,
    /// 401: no key, a malformed key, or a key nobody issued.
    InvalidApiKey,
    /// 401: the key was revoked (or removed from the Instance).
    KeyRevoked,
    /// 401: the key's `expiresAt` has passed.
    KeyExpired,
    /// 401: an OIDC token that does not verify.
    InvalidToken,
    /// 402: the Wallet cannot pay for the run.
    InsufficientCredits,
    /// 402: a widget demo session used its free runs.
    DemoExhausted,
    /// 403: the key belongs to another Instance than the path names.
    WrongTenant,
    /// 403: the Instance or its Organization is suspended.
    Suspended,
    /// 404: no such route.
    NotFound,
    /// 413: the body is over the limit.
    BodyTooLarge,
    /// 429: the key is over its plan's rate.
    RateLimited,
    /// 502: the runtime failed the run.
    RuntimeError,
    /// 503: the gateway's caches have not synced yet.
    GatewayNotReady,
    /// 503: the Instance's runtime cannot take runs now.
    RuntimeNotReady,
    /// 503: the Wallet could not be checked (no lease could be written).
    CreditsUnverifiable,
    /// 504: the run took longer than the plan's `timeoutSeconds`.
    RuntimeTimeout,
}

impl Code {
    /// The code as it appears in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedRequest => "malformed_request",
            Code::InvalidApiKey => "invalid_api_key",
            Code::KeyRevoked => "key_revoked",
            Code::KeyExpired => "key_expired",
            Code::InvalidToken => "invalid_token",
            Code::InsufficientCredits => "insufficient_credits",
            Code::DemoExhausted => "demo_exhausted",
            Code::WrongTenant => "wrong_tenant",
            Code::Suspended => "suspended",
            Code::NotFound => "not_found",
            Code::BodyTooLarge => "body_too_large",
            Code::RateLimited => "rate_limited",
            Code::RuntimeError => "runtime_error",
            Code::GatewayNotReady => "gateway_not_ready",
            Code::RuntimeNotReady => "runtime_not_ready",
            Code::CreditsUnverifiable => "credits_unverifiable",
            Code::RuntimeTimeout => "runtime_timeout",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::MalformedRequest => StatusCode::BAD_REQUEST,
            Code::InvalidApiKey | Code::KeyRevoked | Code::KeyExpired | Code::InvalidToken => StatusCode::UNAUTHORIZED,
            Code::InsufficientCredits | Code::DemoExhausted => StatusCode::PAYMENT_REQUIRED,
            Code::WrongTenant | Code::Suspended => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::RuntimeError => StatusCode::BAD_GATEWAY,
            Code::GatewayNotReady | Code::RuntimeNotReady | Code::CreditsUnverifiable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Code::RuntimeTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

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
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_status_the_api_documents() {
        let table = [
            (Code::MalformedRequest, 400),
            (Code::InvalidApiKey, 401),
            (Code::KeyRevoked, 401),
            (Code::KeyExpired, 401),
            (Code::InvalidToken, 401),
            (Code::InsufficientCredits, 402),
            (Code::WrongTenant, 403),
            (Code::Suspended, 403),
            (Code::BodyTooLarge, 413),
            (Code::RateLimited, 429),
            (Code::RuntimeError, 502),
            (Code::RuntimeNotReady, 503),
            (Code::CreditsUnverifiable, 503),
            (Code::RuntimeTimeout, 504),
        ];
        for (code, status) in table {
            assert_eq!(code.status().as_u16(), status, "{}", code.as_str());
        }
    }

    #[test]
    fn a_refusal_is_json_with_its_code_and_retry_after() {
        let mut refusal = Refusal::new(Code::RateLimited, "slow down");
        refusal.retry_after = Some(3);
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("3"));
    }
}
