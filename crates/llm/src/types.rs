//! Request, response and error types shared by every backend, and the [`ChatModel`] trait.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Sampling knobs. `temperature == 0` means greedy. The seed makes sampling reproducible:
/// the same request with the same seed on the same backend gives the same text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
    #[serde(default)]
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 512,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// What shape the answer must take. `JsonSchema` is enforced: by `response_format` on an
/// endpoint, by constrained decoding on the embedded model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: serde_json::Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub response_format: ResponseFormat,
    /// Version of the prompt template that rendered `messages`; part of the cache key so a
    /// reworded prompt never reuses stale answers.
    #[serde(default)]
    pub prompt_version: Option<String>,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            sampling: Sampling::default(),
            response_format: ResponseFormat::Text,
            prompt_version: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The model id that answered, as the backend names it.
    pub model: String,
    /// True when this answer came from the cache rather than the backend.
    #[serde(default, skip_serializing)]
    pub cached: bool,
}

/// Who a backend is, for the cache key: kind (`embedded`, `openai`), model id and anything
/// else that changes answers (e.g. the weights' digest). Never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendIdentity {
    pub kind: String,
    pub model: String,
    /// Extra identity, e.g. the sha256 of a GGUF file.
    #[serde(default)]
    pub detail: String,
}

/// Receives text deltas as they are generated. Dropped receivers are ignored.
pub type TokenSink = UnboundedSender<String>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("HTTP {status} from {endpoint}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("request to {endpoint} timed out")]
    Timeout { endpoint: String },
    #[error("connection to {endpoint} failed: {message}")]
    Connection { endpoint: String, message: String },
    #[error("malformed response from {endpoint}: {message}")]
    BadResponse { endpoint: String, message: String },
    #[error(
        "offline and the cache has no answer for request {hash}; rerun without --offline to call the backend"
    )]
    OfflineMiss { hash: String },
    #[error(
        "request {hash} was written to a batch file instead of being sent; import the batch's results and rerun"
    )]
    Deferred { hash: String },
    #[error(
        "budget of ${budget_usd:.4} reached (spent ${spent_usd:.4}, next call estimated ${next_usd:.4}); rerun with a higher --budget-usd to continue"
    )]
    BudgetExceeded {
        budget_usd: f64,
        spent_usd: f64,
        next_usd: f64,
    },
    #[error("model error: {0}")]
    Model(String),
    #[error("cache error: {0}")]
    Cache(String),
}

impl LlmError {
    /// Whether retrying the same request later might succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Timeout { .. }
            | LlmError::Connection { .. }
            | LlmError::BadResponse { .. } => true,
            _ => false,
        }
    }
}

/// A language model that answers chat requests. Backends and wrappers (cache, ledger)
/// implement it, so they compose: `Metered(Cached(OpenAi))`.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    fn identity(&self) -> BackendIdentity;

    /// Answer one request. When `stream` is given, text deltas are sent to it as they are
    /// produced (their concatenation equals the returned text).
    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError>;
}
