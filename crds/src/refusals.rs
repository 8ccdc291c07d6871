//! The stable refusal codes of CMP's run API: what a caller is told when a
//! run (or a tool call on a run's behalf) is refused, with the HTTP status
//! each is answered with. Shared by every route that admits runs, and by the
//! docs and clients that match on them.

/// The stable error codes of the run API (and of every route that admits a run the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400: the body or a header is not what the API takes.
    MalformedRequest,
    /// 400: an input (or tweak) the Offering version does not declare.
    TweakNotAllowed,
    /// 400: a declared input whose value is outside its type or bounds.
    InvalidInput,
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
    /// 403: an OIDC token whose user name is its e-mail address, which the identity provider has not verified.
    UnverifiedAccount,
    /// 403: the buyer API's caller is listed by the Organization, but their role there does not allow the request.
    NotPermitted,
    /// 404: no such route, or no such document.
    NotFound,
    /// 404: the Instance's Offering has no knowledge base.
    KnowledgeNotOffered,
    /// 409: the knowledge base holds as many documents as the Offering allows.
    TooManyDocuments,
    /// 409: the buyer API's request collides with what is there (a key of that name, a change made meanwhile).
    Conflict,
    /// 415: a document of a media type the Offering does not take.
    UnsupportedDocumentType,
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
    /// 503: the knowledge store could not be reached.
    KnowledgeUnavailable,
    /// 503: the Wallet could not be checked (no lease could be written).
    CreditsUnverifiable,
    /// 504: the run took longer than the plan's `timeoutSeconds`.
    RuntimeTimeout,
}

impl Code {
    /// Every code, in declaration order (for metrics that start every code at zero).
    pub const ALL: [Code; 26] = [
        Code::MalformedRequest,
        Code::TweakNotAllowed,
        Code::InvalidInput,
        Code::InvalidApiKey,
        Code::KeyRevoked,
        Code::KeyExpired,
        Code::InvalidToken,
        Code::InsufficientCredits,
        Code::DemoExhausted,
        Code::WrongTenant,
        Code::Suspended,
        Code::UnverifiedAccount,
        Code::NotPermitted,
        Code::NotFound,
        Code::KnowledgeNotOffered,
        Code::TooManyDocuments,
        Code::Conflict,
        Code::UnsupportedDocumentType,
        Code::BodyTooLarge,
        Code::RateLimited,
        Code::RuntimeError,
        Code::GatewayNotReady,
        Code::RuntimeNotReady,
        Code::CreditsUnverifiable,
        Code::KnowledgeUnavailable,
        Code::RuntimeTimeout,
    ];

    /// The code as it appears in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MalformedRequest => "malformed_request",
            Code::TweakNotAllowed => "tweak_not_allowed",
            Code::InvalidInput => "invalid_input",
            Code::InvalidApiKey => "invalid_api_key",
            Code::KeyRevoked => "key_revoked",
            Code::KeyExpired => "key_expired",
            Code::InvalidToken => "invalid_token",
            Code::InsufficientCredits => "insufficient_credits",
            Code::DemoExhausted => "demo_exhausted",
            Code::WrongTenant => "wrong_tenant",
            Code::Suspended => "suspended",
            Code::UnverifiedAccount => "unverified_account",
            Code::NotPermitted => "not_permitted",
            Code::NotFound => "not_found",
            Code::KnowledgeNotOffered => "knowledge_not_offered",
            Code::TooManyDocuments => "too_many_documents",
            Code::Conflict => "conflict",
            Code::UnsupportedDocumentType => "unsupported_document_type",
            Code::BodyTooLarge => "body_too_large",
            Code::RateLimited => "rate_limited",
            Code::RuntimeError => "runtime_error",
            Code::GatewayNotReady => "gateway_not_ready",
            Code::RuntimeNotReady => "runtime_not_ready",
            Code::CreditsUnverifiable => "credits_unverifiable",
            Code::KnowledgeUnavailable => "knowledge_unavailable",
            Code::RuntimeTimeout => "runtime_timeout",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        match self {
            Code::MalformedRequest | Code::TweakNotAllowed | Code::InvalidInput => 400,
            Code::InvalidApiKey | Code::KeyRevoked | Code::KeyExpired | Code::InvalidToken => 401,
            Code::InsufficientCredits | Code::DemoExhausted => 402,
            Code::WrongTenant | Code::Suspended | Code::UnverifiedAccount | Code::NotPermitted => 403,
            Code::NotFound | Code::KnowledgeNotOffered => 404,
            Code::TooManyDocuments | Code::Conflict => 409,
            Code::UnsupportedDocumentType => 415,
            Code::BodyTooLarge => 413,
            Code::RateLimited => 429,
            Code::RuntimeError => 502,
            Code::GatewayNotReady | Code::RuntimeNotReady | Code::CreditsUnverifiable | Code::KnowledgeUnavailable => {
                503
            }
            Code::RuntimeTimeout => 504,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_holds_every_code_once() {
        let names: std::collections::BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len(), "a code listed twice");
        // as_str's match is exhaustive, so a new variant is named there; this counts its arms.
        let arms = include_str!("refusals.rs")
            .split("fn as_str")
            .nth(1)
            .unwrap_or_default()
            .split("\n        }")
            .next()
            .unwrap_or_default()
            .matches("Code::")
            .count();
        assert_eq!(arms, Code::ALL.len(), "Code::ALL misses a code that as_str names");
    }

    #[test]
    fn every_code_has_the_status_the_api_documents() {
        let table = [
            (Code::MalformedRequest, 400),
            (Code::TweakNotAllowed, 400),
            (Code::InvalidInput, 400),
            (Code::InvalidApiKey, 401),
            (Code::KeyRevoked, 401),
            (Code::KeyExpired, 401),
            (Code::InvalidToken, 401),
            (Code::InsufficientCredits, 402),
            (Code::WrongTenant, 403),
            (Code::Suspended, 403),
            (Code::UnverifiedAccount, 403),
            (Code::NotPermitted, 403),
            (Code::KnowledgeNotOffered, 404),
            (Code::TooManyDocuments, 409),
            (Code::Conflict, 409),
            (Code::BodyTooLarge, 413),
            (Code::UnsupportedDocumentType, 415),
            (Code::RateLimited, 429),
            (Code::RuntimeError, 502),
            (Code::RuntimeNotReady, 503),
            (Code::CreditsUnverifiable, 503),
            (Code::KnowledgeUnavailable, 503),
            (Code::RuntimeTimeout, 504),
        ];
        for (code, status) in table {
            assert_eq!(code.status(), status, "{}", code.as_str());
        }
    }
}
