//! A `ChatModel` that answers from a script, for tests of protocols built on top of a model
//! (judge conversations, repair re-asks): each call takes the next reply in order, and every
//! request is kept so a test can check exactly what was asked. Running out of replies is a
//! model error, so a protocol that asks once too often fails its test.
//!
//! Not for HTTP behaviour: backends are tested against the loopback servers in this crate.

use std::sync::{Arc, Mutex};

use demorecon_llm::{
    BackendIdentity, ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, TokenSink, Usage,
};

/// Replies in order; requests recorded.
pub struct Scripted {
    replies: Mutex<Vec<String>>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    /// A model that answers `replies[0]`, then `replies[1]`, …
    pub fn new(replies: &[&str]) -> Arc<Self> {
        Arc::new(Scripted {
            replies: Mutex::new(replies.iter().rev().map(|s| s.to_string()).collect()),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<ChatRequest> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl ChatModel for Scripted {
    fn identity(&self) -> BackendIdentity {
        BackendIdentity {
            kind: "scripted".into(),
            model: "judge".into(),
            detail: String::new(),
        }
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        _stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.clone());
        let text = self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| LlmError::Model("script ran out".into()))?;
        Ok(ChatResponse {
            text,
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            model: "judge-1".into(),
            cached: false,
        })
    }
}
