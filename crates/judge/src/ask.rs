//! One model call as the pipeline's stages and the benchmarks' judges make it: a request built
//! from a prompt, sent through the role's (cached, metered) model and recorded as a
//! [`CallRecord`]; for structured answers, a JSON schema sent as `response_format`, the reply
//! checked against that schema on our side (an endpoint that fell back to prompt-only
//! instructions is not trusted), parsed strictly into the answer type, and one repair re-ask
//! that shows the model its reply and the problem.
//!
//! Failures split two ways ([`AskError`]). Some stop the whole job because going on cannot
//! help — the budget is spent, `--offline` has no answer, the cache cannot be written — and a
//! rerun picks up where it stopped. Everything else (HTTP errors after the backend's retries,
//! a reply that stays unusable after the repair) is a [`Failure`] of that one unit, with its
//! reason and raw text; the caller decides whether that means quarantine or an unparsed item.

use std::sync::Arc;

use demorecon_llm::{
    ChatModel, ChatRequest, ChatResponse, LlmError, Message, ResponseFormat, Sampling,
    cache::request_key,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One model call behind a record: enough to find it in the cache and to count its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call cache's key for the request.
    pub key: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A unit that could not be answered usably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short category for counting: `llm_error`, `unparsable`.
    pub kind: String,
    pub reason: String,
    /// The last reply, when there was one.
    pub raw: Option<String>,
}

/// Why an ask did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Going on cannot help (budget, offline miss, cache I/O) or the call went to a batch
    /// file: stop this unit's work; a rerun resumes.
    #[error(transparent)]
    Stop(LlmError),
    /// A prompt file does not render (a broken `--prompts` override): stop.
    #[error(transparent)]
    Prompt(#[from] crate::prompts::PromptError),
    /// This unit failed; others may go on.
    #[error("{}: {}", .0.kind, .0.reason)]
    Failed(Failure),
}

/// Errors that no amount of going on can fix, and calls deferred to a batch file (the unit
/// is not failed, only not done yet).
pub fn stops_the_job(err: &LlmError) -> bool {
    matches!(
        err,
        LlmError::OfflineMiss { .. }
            | LlmError::BudgetExceeded { .. }
            | LlmError::Cache(_)
            | LlmError::Deferred { .. }
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
) -> Result<ChatResponse, AskError> {
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
        Err(err) if stops_the_job(&err) => Err(AskError::Stop(err)),
        Err(err) => Err(AskError::Failed(Failure {
            kind: "llm_error".into(),
            reason: err.to_string(),
            raw: None,
        })),
    }
}

/// The JSON schema of an answer type, as sent in `response_format` (derived, so the schema and
/// the parser cannot drift apart).
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
    if let Some(obj) = schema.as_object_mut() {
        // Endpoints and llguidance want the bare schema; the meta-schema URL and the Rust type
        // name add nothing to what the model must produce.
        obj.remove("$schema");
        obj.remove("title");
    }
    schema
}

/// Asks for JSON of type `T` under `T`'s derived schema, checking it with `check`.
pub async fn ask_json<T: DeserializeOwned + JsonSchema>(
    model: &Arc<dyn ChatModel>,
    req: ChatRequest,
    schema_name: &str,
    check: impl Fn(&T) -> Result<(), String>,
    calls: &mut Vec<CallRecord>,
) -> Result<T, AskError> {
    ask_json_with(model, req, schema_name, schema_of::<T>(), check, calls).await
}

/// Asks for JSON under `schema` (for schemas built at run time, e.g. an `enum` of the seed's
/// spans) and parses it as `T`, checking it with `check`. The reply is validated against
/// `schema` before parsing. One repair re-ask shows the model its answer and the problem; a
/// second failure is a [`Failure`] of kind `unparsable`.
pub async fn ask_json_with<T: DeserializeOwned>(
    model: &Arc<dyn ChatModel>,
    mut req: ChatRequest,
    schema_name: &str,
    schema: Value,
    check: impl Fn(&T) -> Result<(), String>,
    calls: &mut Vec<CallRecord>,
) -> Result<T, AskError> {
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        AskError::Failed(Failure {
            kind: "bad_schema".into(),
            reason: format!("the `{schema_name}` schema does not compile: {e}"),
            raw: None,
        })
    })?;
    req.response_format = ResponseFormat::JsonSchema {
        name: schema_name.to_owned(),
        schema,
    };
    let parse = |text: &str| parse_answer(&validator, text, &check);
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
        AskError::Failed(Failure {
            kind: "unparsable".into(),
            reason: format!("not valid `{schema_name}` JSON after one repair: {problem}"),
            raw: Some(second.text.clone()),
        })
    })
}

/// JSON text → schema-valid value → `T` → the caller's check.
fn parse_answer<T: DeserializeOwned>(
    validator: &jsonschema::Validator,
    text: &str,
    check: &impl Fn(&T) -> Result<(), String>,
) -> Result<T, String> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .take(3)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "does not match the schema ({})",
            problems.join("; ")
        ));
    }
    let parsed: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
    check(&parsed)?;
    Ok(parsed)
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
    use demorecon_testkit::scripted::Scripted;

    #[test]
    fn unit_seeds_depend_on_unit_and_stage() {
        assert_eq!(unit_seed("a", "vary"), unit_seed("a", "vary"));
        assert_ne!(unit_seed("a", "vary"), unit_seed("b", "vary"));
        assert_ne!(unit_seed("a", "vary"), unit_seed("a", "filter"));
        assert_ne!(unit_seed("ab", "c"), unit_seed("a", "bc"));
    }

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Answer {
        #[schemars(length(max = 10))]
        reason: String,
        satisfied: bool,
    }

    fn scripted(replies: Vec<&'static str>) -> (Arc<dyn ChatModel>, Arc<Scripted>) {
        let s = Scripted::new(&replies);
        (s.clone() as Arc<dyn ChatModel>, s)
    }

    #[test]
    fn derived_schemas_are_bare_and_strict() {
        let s = schema_of::<Answer>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["reason"]["maxLength"], 10);
        assert!(s.get("$schema").is_none() && s.get("title").is_none());
        assert_eq!(s["required"], serde_json::json!(["reason", "satisfied"]));
    }

    #[tokio::test]
    async fn schema_violations_are_repaired_once_then_fail() {
        // Valid JSON for serde, but past the schema's maxLength: only client-side validation
        // catches it (an endpoint that fell back to prompt-only would pass it through).
        let (model, seen) = scripted(vec![
            r#"{"reason": "far too long a reason", "satisfied": true}"#,
            r#"{"reason": "short", "satisfied": false}"#,
        ]);
        let mut calls = Vec::new();
        let req = ChatRequest::new(vec![Message::user("judge")]);
        let a: Answer = ask_json(&model, req.clone(), "answer", |_| Ok(()), &mut calls)
            .await
            .unwrap();
        assert_eq!(
            a,
            Answer {
                reason: "short".into(),
                satisfied: false
            }
        );
        assert_eq!(calls.len(), 2);
        let repair = &seen.seen()[1];
        let last = &repair.messages.last().unwrap().content;
        assert!(last.contains("does not match the schema"), "{last}");
        assert!(last.contains("/reason"), "{last}");

        let (model, _) = scripted(vec!["not json", r#"{"reason": "x"}"#]);
        let err = ask_json::<Answer>(&model, req, "answer", |_| Ok(()), &mut Vec::new())
            .await
            .unwrap_err();
        match err {
            AskError::Failed(f) => {
                assert_eq!(f.kind, "unparsable");
                assert!(f.reason.contains("satisfied"), "{}", f.reason);
                assert_eq!(f.raw.as_deref(), Some(r#"{"reason": "x"}"#));
            }
            other => panic!("{other:?}"),
        }
    }
}
