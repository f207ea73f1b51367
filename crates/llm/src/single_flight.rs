//! [`SingleFlight`]: identical requests in flight at the same time are computed once.
//!
//! A server answering many clients sees the same request arrive twice before the first
//! answer is cached (a client retrying after a timeout, several workers given the same
//! prompt). Under this wrapper the first caller runs the request and every identical caller
//! that arrives while it runs waits for that same answer (or error). Identity is the cache
//! key, so "identical" means what the cache means. Streaming calls are passed straight
//! through: their deltas belong to one client. Not a cache: once the answer is out, the next
//! identical request runs again (put a [`crate::cache::CachedModel`] inside for that).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::cache::request_key;
use crate::{BackendIdentity, ChatModel, ChatRequest, ChatResponse, LlmError, TokenSink};

type Flight = Shared<BoxFuture<'static, Result<ChatResponse, LlmError>>>;

/// Computes identical concurrent non-streaming requests once.
pub struct SingleFlight {
    inner: Arc<dyn ChatModel>,
    in_flight: Arc<Mutex<HashMap<String, Flight>>>,
}

impl SingleFlight {
    pub fn new(inner: Arc<dyn ChatModel>) -> Self {
        Self {
            inner,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for SingleFlight {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        if stream.is_some() {
            return self.inner.chat(req, stream).await;
        }
        let key = request_key(&self.inner.identity(), req);
        let flight = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let (inner, req, map_ref, k) = (
                        self.inner.clone(),
                        req.clone(),
                        self.in_flight.clone(),
                        key.clone(),
                    );
                    let flight = async move {
                        let result = inner.chat(&req, None).await;
                        // Later identical requests run again (or hit a cache underneath).
                        map_ref.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                        result
                    }
                    .boxed()
                    .shared();
                    map.insert(key, flight.clone());
                    flight
                }
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Answers after a pause, counting calls; "fail" prompts fail.
    struct Slow(AtomicUsize);

    #[async_trait::async_trait]
    impl ChatModel for Slow {
        fn identity(&self) -> BackendIdentity {
            BackendIdentity {
                kind: "test".into(),
                model: "slow".into(),
                detail: String::new(),
            }
        }

        async fn chat(
            &self,
            req: &ChatRequest,
            _: Option<TokenSink>,
        ) -> Result<ChatResponse, LlmError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let prompt = &req.messages[0].content;
            if prompt == "fail" {
                return Err(LlmError::Model("no".into()));
            }
            Ok(ChatResponse {
                text: format!("{prompt} #{n}"),
                finish_reason: crate::FinishReason::Stop,
                usage: Default::default(),
                model: "slow".into(),
                cached: false,
            })
        }
    }

    fn ask(text: &str) -> ChatRequest {
        ChatRequest::new(vec![Message::user(text)])
    }

    #[tokio::test]
    async fn identical_concurrent_requests_run_once_and_all_get_the_answer() {
        let slow = Arc::new(Slow(AtomicUsize::new(0)));
        let model = Arc::new(SingleFlight::new(slow.clone()));
        let calls = (0..8).map(|i| {
            let model = model.clone();
            let text = if i < 6 { "same" } else { "other" };
            async move { model.chat(&ask(text), None).await }
        });
        let answers = futures::future::join_all(calls).await;
        assert_eq!(
            slow.0.load(Ordering::SeqCst),
            2,
            "one run per distinct request"
        );
        let texts: Vec<String> = answers.into_iter().map(|a| a.unwrap().text).collect();
        assert!(texts[..6].iter().all(|t| t == &texts[0]));
        assert_ne!(texts[6], texts[0]);
        assert_eq!(texts[6], texts[7]);
        // Errors are shared too; and a request after the flight landed runs again.
        let fail = ask("fail");
        let (a, b) = tokio::join!(model.chat(&fail, None), model.chat(&fail, None));
        assert!(a.is_err() && b.is_err());
        assert_eq!(slow.0.load(Ordering::SeqCst), 3);
        model.chat(&ask("same"), None).await.unwrap();
        assert_eq!(slow.0.load(Ordering::SeqCst), 4);
        // Streaming calls are never merged.
        let (tx1, _rx1) = tokio::sync::mpsc::unbounded_channel();
        let (tx2, _rx2) = tokio::sync::mpsc::unbounded_channel();
        let s = ask("s");
        let (a, b) = tokio::join!(model.chat(&s, Some(tx1)), model.chat(&s, Some(tx2)));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(slow.0.load(Ordering::SeqCst), 6);
    }
}
