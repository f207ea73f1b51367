//! The OpenAI wire format: parsing a chat-completions request into a [`ChatRequest`] with
//! precise 4xx errors, and writing completion, chunk and error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use demorecon_llm::{
    ChatRequest, ChatResponse, FinishReason, Message, ResponseFormat, Role, Sampling, Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// An OpenAI-style error: `{"error": {"message", "type", "code"}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn body(&self) -> Value {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        json!({"message": self.message, "type": kind, "code": self.code})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.body()}))).into_response()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    messages: Vec<WireMessage>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    seed: Option<i64>,
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
}

/// A parsed request and how to deliver it.
pub struct Parsed {
    pub request: ChatRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Default completion length when the client names none.
const DEFAULT_MAX_TOKENS: u32 = 512;

pub fn parse_chat_request(body: &[u8], served_model: &str) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("request body is not valid JSON: {e}")))?;
    let wire: WireRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::bad(format!("invalid chat request: {e}")))?;
    if let Some(model) = &wire.model
        && model != served_model
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("model {model:?} is not served here; this server serves {served_model:?}"),
        ));
    }
    if wire.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("only n = 1 is supported"));
    }
    if wire.messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(wire.messages.len());
    for (i, m) in wire.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::bad(format!(
                    "messages[{i}]: unsupported role {other:?}"
                )));
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::bad(format!(
                            "messages[{i}]: only text content parts are supported, not {:?}",
                            p.kind
                        )));
                    }
                    text.push_str(p.text.as_deref().unwrap_or(""));
                }
                text
            }
        };
        messages.push(Message { role, content });
    }
    let temperature = wire.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad("temperature must be between 0 and 2"));
    }
    let top_p = wire.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad("top_p must be in (0, 1]"));
    }
    let max_tokens = wire
        .max_completion_tokens
        .or(wire.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(ApiError::bad("max_tokens must be at least 1"));
    }
    let stop = match wire.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let response_format = parse_response_format(wire.response_format)?;
    let sampling = Sampling {
        temperature,
        top_p,
        max_tokens,
        stop,
        seed: wire.seed.unwrap_or(0) as u64,
    };
    Ok(Parsed {
        request: ChatRequest {
            messages,
            sampling,
            response_format,
            prompt_version: None,
        },
        stream: wire.stream,
        include_usage: wire.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn parse_response_format(v: Option<Value>) -> Result<ResponseFormat, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match v["type"].as_str() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = &v["json_schema"];
            let schema = spec
                .get("schema")
                .cloned()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    ApiError::bad("response_format.json_schema.schema must be a JSON schema object")
                })?;
            let name = spec["name"].as_str().unwrap_or("response").to_owned();
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        other => Err(ApiError::bad(format!(
            "response_format.type must be text, json_object or json_schema, not {other:?}"
        ))),
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

pub fn completion_body(id: &str, created: u64, model: &str, resp: &ChatResponse) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": resp.text},
            "logprobs": null,
            "finish_reason": finish_str(resp.finish_reason),
        }],
        "usage": usage_json(resp.usage),
    })
}

pub fn chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<FinishReason>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish.map(finish_str)}],
    })
}

pub fn usage_chunk(id: &str, created: u64, model: &str, usage: Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_json(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_requests() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "temperature":0,"max_completion_tokens":5,"stop":"\n","seed":7,"stream":true,"stream_options":{"include_usage":true},
            "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#;
        let p = parse_chat_request(body, "m").unwrap();
        assert!(p.stream && p.include_usage);
        assert_eq!(p.request.messages[1].content, "hi");
        assert_eq!(p.request.sampling.max_tokens, 5);
        assert_eq!(p.request.sampling.stop, vec!["\n"]);
        assert_eq!(p.request.sampling.seed, 7);
        assert!(matches!(
            p.request.response_format,
            ResponseFormat::JsonSchema { .. }
        ));
    }

    #[test]
    fn bad_requests_are_4xx_with_a_reason() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"{not json", 400, "not valid JSON"),
            (br#"{"messages":"x"}"#, 400, "invalid chat request"),
            (br#"{"messages":[]}"#, 400, "must not be empty"),
            (br#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#, 404, "not served"),
            (br#"{"messages":[{"role":"tool","content":"x"}]}"#, 400, "unsupported role"),
            (br#"{"messages":[{"role":"user","content":"x"}],"temperature":9}"#, 400, "temperature"),
            (br#"{"messages":[{"role":"user","content":"x"}],"n":3}"#, 400, "n = 1"),
            (br#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#, 400, "response_format"),
            (br#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#, 400, "schema"),
        ];
        for (body, status, needle) in cases {
            let err = parse_chat_request(body, "m")
                .err()
                .unwrap_or_else(|| panic!("accepted {}", String::from_utf8_lossy(body)));
            assert_eq!(err.status.as_u16(), *status, "{}", err.message);
            assert!(
                err.message.contains(needle),
                "{} lacks {needle}",
                err.message
            );
        }
    }
}
