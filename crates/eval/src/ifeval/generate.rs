//! Generating IFEval responses with a model: one greedy chat turn per prompt.
//!
//! Requests go through whatever [`ChatModel`] the caller hands in (normally the configured
//! model under test wrapped in the call cache and ledger, so a rerun makes no call twice).
//! Calls run with bounded concurrency and come back in input order; the request's seed is the
//! prompt key, so even a sampling backend is reproducible per prompt.

use std::sync::Arc;

use demorecon_llm::{ChatModel, ChatRequest, Message, Sampling};
use futures::StreamExt;

use super::{EvalError, InputRow, ResponseRow};

/// Version of the (trivial) IFEval prompt rendering; part of every request's cache key.
pub const PROMPT_VERSION: &str = "ifeval/1";

/// Knobs of [`generate_responses`].
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// New-token cap per response (IFEval's usual setting is 1,280).
    pub max_tokens: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 1280,
            concurrency: 4,
        }
    }
}

/// The request sent for one prompt: the prompt as the single user turn, greedy decoding.
pub fn request_for(row: &InputRow, opts: &GenerateOptions) -> ChatRequest {
    let mut req = ChatRequest::new(vec![Message::user(row.prompt.clone())]);
    req.sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        max_tokens: opts.max_tokens,
        stop: Vec::new(),
        seed: row.key.unsigned_abs(),
    };
    req.prompt_version = Some(PROMPT_VERSION.to_owned());
    req
}

/// Generates one response per input, in input order. `on_done` is called after each response
/// (with the number finished so far) for progress display. Fails if any call fails, naming the
/// first failing key; responses already produced are cached by the model layer.
pub async fn generate_responses(
    model: Arc<dyn ChatModel>,
    inputs: &[InputRow],
    opts: GenerateOptions,
    on_done: impl Fn(usize) + Send + Sync,
) -> Result<Vec<ResponseRow>, EvalError> {
    let concurrency = opts.concurrency.max(1);
    let mut results: Vec<Option<Result<String, String>>> = vec![None; inputs.len()];
    let mut stream = futures::stream::iter(inputs.iter().enumerate())
        .map(|(i, row)| {
            let model = Arc::clone(&model);
            let req = request_for(row, &opts);
            async move {
                (
                    i,
                    model
                        .chat(&req, None)
                        .await
                        .map(|r| r.text)
                        .map_err(|e| e.to_string()),
                )
            }
        })
        .buffer_unordered(concurrency);
    let mut finished = 0;
    while let Some((i, r)) = stream.next().await {
        results[i] = Some(r);
        finished += 1;
        on_done(finished);
    }
    let mut out = Vec::with_capacity(inputs.len());
    let mut failures: Vec<(i64, String)> = Vec::new();
    for (row, r) in inputs.iter().zip(results) {
        match r {
            Some(Ok(text)) => out.push(ResponseRow {
                key: Some(row.key),
                prompt: Some(row.prompt.clone()),
                response: text,
            }),
            Some(Err(e)) => failures.push((row.key, e)),
            None => failures.push((row.key, "no result".into())),
        }
    }
    if let Some((key, message)) = failures.first().cloned() {
        return Err(EvalError::Generate {
            count: failures.len(),
            key,
            message,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use demorecon_llm::{BackendIdentity, ChatResponse, FinishReason, LlmError, TokenSink, Usage};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers with the prompt reversed, after a delay that makes later prompts finish first.
    struct Echo {
        live: AtomicUsize,
        peak: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ChatModel for Echo {
        fn identity(&self) -> BackendIdentity {
            BackendIdentity {
                kind: "test".into(),
                model: "echo".into(),
                detail: String::new(),
            }
        }
        async fn chat(
            &self,
            req: &ChatRequest,
            _stream: Option<TokenSink>,
        ) -> Result<ChatResponse, LlmError> {
            let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            let prompt = req.messages[0].content.clone();
            assert_eq!(req.sampling.temperature, 0.0);
            assert_eq!(req.sampling.max_tokens, 1280);
            let delay = 30u64.saturating_sub(prompt.len() as u64 * 3);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            self.live.fetch_sub(1, Ordering::SeqCst);
            if prompt == "fail" {
                return Err(LlmError::Model("boom".into()));
            }
            Ok(ChatResponse {
                text: prompt.chars().rev().collect(),
                finish_reason: FinishReason::Stop,
                usage: Usage::default(),
                model: "echo".into(),
                cached: false,
            })
        }
    }

    fn rows(prompts: &[&str]) -> Vec<InputRow> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| InputRow {
                key: i as i64,
                prompt: p.to_string(),
                instruction_id_list: vec![],
                kwargs: vec![],
            })
            .collect()
    }

    #[tokio::test]
    async fn keeps_input_order_and_bounds_concurrency() {
        let model = Arc::new(Echo {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let inputs = rows(&["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]);
        let opts = GenerateOptions {
            concurrency: 3,
            ..Default::default()
        };
        let out = generate_responses(model.clone(), &inputs, opts, |_| {})
            .await
            .unwrap();
        let texts: Vec<&str> = out.iter().map(|r| r.response.as_str()).collect();
        assert_eq!(
            texts,
            vec!["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]
        );
        assert_eq!(out[3].key, Some(3));
        assert!(model.peak.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test]
    async fn failures_name_the_key() {
        let model = Arc::new(Echo {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let inputs = rows(&["ok", "fail"]);
        let err = generate_responses(model, &inputs, GenerateOptions::default(), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("key 1"), "{err}");
    }
}
