//! Calls to a store's GraphQL API (its allow-listed `Saleor-Api-Url`) with
//! the app's token.
//!
//! Registration checks a token before it is kept, as Saleor's own app SDK
//! does: the store answers `query { app { id } }` with the app's id only for
//! a token it issued to the app.

use serde_json::{Value, json};

/// The largest answer read from a store.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why a call to the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreApiError {
    /// The store refused the token (the caller answers 401).
    #[error("the store at {api_url} does not accept the token: {reason}")]
    Rejected {
        /// The store.
        api_url: String,
        /// What it answered.
        reason: String,
    },
    /// The store could not be asked now (the caller answers 503).
    #[error("the store at {api_url} cannot be reached now: {reason}")]
    Unreachable {
        /// The store.
        api_url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Runs `query` with `variables` against the store at `api_url` as the app holding `token`: the `data` it answers.
pub async fn graphql(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Value, StoreApiError> {
    let unreachable = |reason: String| StoreApiError::Unreachable { api_url: api_url.into(), reason };
    let rejected = |reason: String| StoreApiError::Rejected { api_url: api_url.into(), reason };
    let response = http
        .post(api_url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(rejected(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    let bytes = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(unreachable(format!("the answer is over {MAX_ANSWER_BYTES} bytes")));
    }
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| unreachable(format!("the answer is not JSON: {e}")))?;
    answer_data(&answer).map_err(rejected)
}

/// The `data` of a GraphQL answer, or the messages of its errors.
fn answer_data(answer: &Value) -> Result<Value, String> {
    let errors: Vec<&str> =
        answer["errors"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str()).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    match &answer["data"] {
        Value::Null => Err("the answer carries no data".into()),
        data => Ok(data.clone()),
    }
}

/// The id of the app the store issued `token` to.
pub async fn app_id(http: &reqwest::Client, api_url: &str, token: &str) -> Result<String, StoreApiError> {
    let data = graphql(http, api_url, token, "query { app { id } }", json!({})).await?;
    data["app"]["id"].as_str().filter(|id| !id.is_empty()).map(str::to_string).ok_or_else(|| StoreApiError::Rejected {
        api_url: api_url.into(),
        reason: "the store knows no app for this token".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_win_over_data_and_an_answer_without_data_is_refused() {
        assert_eq!(answer_data(&json!({"data": {"app": {"id": "A"}}})), Ok(json!({"app": {"id": "A"}})));
        assert_eq!(
            answer_data(
                &json!({"data": {"app": null}, "errors": [{"message": "You need one of the following permissions"}]})
            ),
            Err("You need one of the following permissions".into())
        );
        assert!(answer_data(&json!({})).is_err());
    }
}
