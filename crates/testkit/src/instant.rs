//! An instant-reply OpenAI-compatible endpoint for throughput benchmarks: every chat
//! completion is answered at once, so a client's own overhead is what gets measured.
//! `response_format: json_schema` is answered with a document synthesised from the schema
//! ([`crate::synth`]), `json_object` with a small object, plain requests with a fixed 32-word
//! text; word choice is seeded by a hash of the request body, so the same request always gets
//! the same answer. `stream: true` gets the same answer as one SSE chunk. `GET /stats` reports
//! `{"requests": N}` (chat completions answered). The `instant-endpoint` binary serves it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::synth::{fnv1a, synthesize, word};

/// Shared state: the request counter and the preferred array length.
#[derive(Debug, Default)]
pub struct InstantState {
    requests: AtomicU64,
    array_items: usize,
}

impl InstantState {
    pub fn new(array_items: usize) -> Arc<Self> {
        Arc::new(Self {
            requests: AtomicU64::new(0),
            array_items,
        })
    }

    /// Chat completions answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// `POST /v1/chat/completions`, `GET /v1/models`, `GET /stats`, `GET /healthz`.
pub fn router(state: Arc<InstantState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// The plain-text answer for a request whose body hashes to `seed` (32 words).
pub fn plain_reply(seed: u64) -> String {
    let w = |i| word(seed, i);
    format!(
        "Yes. Here is a short answer about the {} {} and the {} {}. It covers the request in \
         plain words, keeps every point brief, and closes with one {} {} note.",
        w(0),
        w(1),
        w(2),
        w(3),
        w(4),
        w(5)
    )
}

/// The assistant content for one parsed request.
pub fn answer(body: &Value, seed: u64, array_items: usize) -> String {
    let format = &body["response_format"];
    match format["type"].as_str() {
        Some("json_schema") => {
            let schema = &format["json_schema"]["schema"];
            let schema = if schema.is_null() {
                &Value::Bool(true)
            } else {
                schema
            };
            synthesize(schema, array_items, seed).to_string()
        }
        Some("json_object") => {
            json!({"answer": format!("{} {}", word(seed, 0), word(seed, 1))}).to_string()
        }
        _ => plain_reply(seed),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .unwrap_or_default()
}

async fn completions(State(state): State<Arc<InstantState>>, raw: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {"message": "request body is not a JSON object", "type": "invalid_request_error"}}),
            );
        }
    };
    let index = state.requests.fetch_add(1, Ordering::Relaxed);
    let seed = fnv1a(&raw);
    let content = answer(&body, seed, state.array_items);
    let model = body["model"].as_str().unwrap_or("instant");
    let prompt_tokens = raw.len().div_ceil(4);
    let completion_tokens = content.len().div_ceil(4);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = format!("chatcmpl-instant-{index}");
    let n = body["n"].as_u64().unwrap_or(1).clamp(1, 16);
    if body["stream"].as_bool() == Some(true) {
        let choices: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": content}, "finish_reason": null}))
            .collect();
        let first = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices});
        let done: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "delta": {}, "finish_reason": "stop"}))
            .collect();
        let last = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": done, "usage": usage});
        let text = format!("data: {first}\n\ndata: {last}\n\ndata: [DONE]\n\n");
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(text))
            .unwrap_or_default();
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "message": {"role": "assistant", "content": content}, "logprobs": null, "finish_reason": "stop"}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": choices,
            "usage": usage,
        }),
    )
}

async fn models() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": "instant", "object": "model", "created": 0, "owned_by": "demorecon-testkit"}]}),
    )
}

async fn stats(State(state): State<Arc<InstantState>>) -> Response {
    json_response(StatusCode::OK, &json!({"requests": state.requests()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(base: &str, body: &Value) -> Value {
        // A minimal HTTP/1.1 client over a TcpStream keeps testkit free of client crates.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let payload = body.to_string();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
            payload.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let (_, body) = raw.split_once("\r\n\r\n").expect("http response");
        serde_json::from_str(body).expect("json body")
    }

    #[tokio::test]
    async fn answers_text_and_schema_and_counts() {
        let state = InstantState::new(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());

        let plain = post(&addr, &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false})).await;
        let text = plain["choices"][0]["message"]["content"]
            .as_str()
            .expect("content");
        assert_eq!(text.split_whitespace().count(), 32, "{text}");
        assert!(
            plain["usage"]["total_tokens"]
                .as_u64()
                .is_some_and(|t| t > 0)
        );

        let schema = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}, "required": ["items"]});
        let structured = post(&addr, &json!({"model": "m", "messages": [{"role": "user", "content": "list"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}})).await;
        let content: Value = serde_json::from_str(
            structured["choices"][0]["message"]["content"]
                .as_str()
                .expect("content"),
        )
        .expect("json content");
        assert!(jsonschema::is_valid(&schema, &content), "{content}");
        assert_eq!(content["items"].as_array().map(Vec::len), Some(3));

        assert_eq!(state.requests(), 2);
    }
}
