//! One model call as the stages make it: a request built from a stage's prompt, sent through
//! the role's (cached, metered) model, recorded as a [`CallRecord`], and for structured
//! stages parsed strictly with one repair re-ask.
//!
//! Failures split two ways. Some stop the whole run because going on cannot help — the budget
//! is spent, `--offline` has no answer, the cache or the run state cannot be written — and a
//! rerun picks up where it stopped. Everything else (HTTP errors after the backend's retries,
//! text that stays unparsable after the repair) sets that one unit aside in quarantine with
//! its reason and raw text, and the run goes on.

use std::sync::Arc;

use demorecon_data::StateError;
use demorecon_llm::{
    ChatModel, ChatRequest, ChatResponse, LlmError, Message, ResponseFormat, Sampling,
    cache::request_key,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::prompts::PromptError;
use crate::records::{CallRecord, Quarantine};

/// An error that stops the run (it resumes on rerun).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{0}")]
    Other(String),
}

/// Why a unit did not finish.
#[derive(Debug)]
pub enum StepFailure {
    Fatal(PipelineError),
    Quarantine(Quarantine),
}

impl From<PipelineError> for StepFailure {
    fn from(e: PipelineError) -> Self {
        StepFailure::Fatal(e)
    }
}

impl From<PromptError> for StepFailure {
    fn from(e: PromptError) -> Self {
        StepFailure::Fatal(e.into())
    }
}

/// Errors that no amount of going on can fix.
fn stops_the_run(err: &LlmError) -> bool {
    matches!(
        err,
        LlmError::OfflineMiss { .. } | LlmError::BudgetExceeded { .. } | LlmError::Cache(_)
    )
}

/// The sampling seed of a unit's call: derived from its id and stage, so reruns and other
/// machines draw the same text from the same backend.
pub fn unit_seed(unit: &str, stage: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(unit.as_bytes());
    h.update(b"\0");
    h.update(stage.as_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A request for `messages` with the given sampling and prompt version.
pub fn request(messages: Vec<Message>, sampling: Sampling, prompt_version: &str) -> ChatRequest {
    ChatRequest {
        messages,
        sampling,
        response_format: ResponseFormat::Text,
        prompt_version: Some(prompt_version.to_owned()),
    }
}

/// Sends one request and records it in `calls`.
pub async fn call(
    model: &Arc<dyn ChatModel>,
    req: &ChatRequest,
    calls: &mut Vec<CallRecord>,
) -> Result<ChatResponse, StepFailure> {
    let key = request_key(&model.identity(), req);
    match model.chat(req, None).await {
        Ok(resp) => {
            calls.push(CallRecord {
                key,
                model: resp.model.clone(),
                prompt_tokens: resp.usage.prompt_tokens,
                completion_tokens: resp.usage.completion_tokens,
            });
            Ok(resp)
        }
        Err(err) if stops_the_run(&err) => Err(StepFailure::Fatal(err.into())),
        Err(err) => Err(StepFailure::Quarantine(Quarantine {
            kind: "llm_error".into(),
            reason: err.to_string(),
            raw: None,
            calls: calls.clone(),
        })),
    }
}

/// Asks for JSON under `schema` and parses it as `T`, checking it with `check`. One repair
/// re-ask shows the model its answer and the problem; a second failure quarantines the unit.
pub async fn ask_json<T: DeserializeOwned>(
    model: &Arc<dyn ChatModel>,
    mut req: ChatRequest,
    schema_name: &str,
    schema: Value,
    check: impl Fn(&T) -> Result<(), String>,
    calls: &mut Vec<CallRecord>,
) -> Result<T, StepFailure> {
    req.response_format = ResponseFormat::JsonSchema {
        name: schema_name.to_owned(),
        schema,
    };
    let parse = |text: &str| -> Result<T, String> {
        let value: T = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
        check(&value)?;
        Ok(value)
    };
    let first = call(model, &req, calls).await?;
    let problem = match parse(&first.text) {
        Ok(value) => return Ok(value),
        Err(problem) => problem,
    };
    tracing::debug!(schema_name, %problem, "re-asking to repair a structured answer");
    let mut repair = req;
    repair.messages.push(Message::assistant(first.text.clone()));
    repair.messages.push(Message::user(format!(
        "That reply cannot be used: {problem}. Reply again with only the JSON object, in exactly the requested format."
    )));
    let second = call(model, &repair, calls).await?;
    parse(&second.text).map_err(|problem| {
        StepFailure::Quarantine(Quarantine {
            kind: "unparsable".into(),
            reason: format!("not valid `{schema_name}` JSON after one repair: {problem}"),
            raw: Some(second.text.clone()),
            calls: calls.clone(),
        })
    })
}

/// Rejects empty strings in a list of phrases.
pub fn non_blank(items: &[String], what: &str) -> Result<(), String> {
    match items.iter().position(|s| s.trim().is_empty()) {
        Some(i) => Err(format!("{what}[{i}] is empty")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_seeds_depend_on_unit_and_stage() {
        assert_eq!(unit_seed("a", "vary"), unit_seed("a", "vary"));
        assert_ne!(unit_seed("a", "vary"), unit_seed("b", "vary"));
        assert_ne!(unit_seed("a", "vary"), unit_seed("a", "filter"));
        assert_ne!(unit_seed("ab", "c"), unit_seed("a", "bc"));
    }
}
