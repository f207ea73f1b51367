//! [`EmbeddedChat`]: the embedded model behind the async [`ChatModel`] trait.
//!
//! Generation is CPU-bound and synchronous, so each request runs on tokio's blocking pool;
//! a mutex lets one request at a time use the model (two would only fight over the same two
//! cores and the same KV cache).

use crate::engine::{EmbeddedModel, LoadOptions};
use async_trait::async_trait;
use demorecon_llm::{BackendIdentity, ChatModel, ChatRequest, ChatResponse, LlmError, TokenSink};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The embedded backend. Cheap to clone; clones share one model.
#[derive(Clone)]
pub struct EmbeddedChat {
    model: Arc<Mutex<EmbeddedModel>>,
    identity: BackendIdentity,
}

impl EmbeddedChat {
    /// Wraps a loaded model; hashes the GGUF once for the identity (a stamp file makes later
    /// runs skip the hash).
    pub fn new(mut model: EmbeddedModel) -> anyhow::Result<Self> {
        let identity = model.identity()?;
        Ok(Self {
            model: Arc::new(Mutex::new(model)),
            identity,
        })
    }

    /// Loads the GGUF at `path`.
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<Self> {
        Self::new(EmbeddedModel::load(path, options)?)
    }

    /// Loads the default model from the data directory, fetching it first if needed.
    pub fn load_default(options: &LoadOptions) -> anyhow::Result<Self> {
        let path = crate::store::ensure_model(&demorecon_llm::home::data_home())?;
        Self::load(&path, options)
    }

    /// The model's context length in tokens.
    pub fn context_length(&self) -> usize {
        lock(&self.model).context_length()
    }
}

fn lock(model: &Mutex<EmbeddedModel>) -> std::sync::MutexGuard<'_, EmbeddedModel> {
    // A panic mid-generation leaves nothing half-done that the next request relies on: every
    // request resets the KV cache first.
    model
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl ChatModel for EmbeddedChat {
    fn identity(&self) -> BackendIdentity {
        self.identity.clone()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let model = self.model.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            let mut model = lock(&model);
            let mut send = |delta: &str| {
                if let Some(sink) = &stream {
                    let _ = sink.send(delta.to_string());
                }
            };
            model.generate(&req, &mut send)
        })
        .await
        .map_err(|e| LlmError::Model(format!("generation task failed: {e}")))?
    }
}
