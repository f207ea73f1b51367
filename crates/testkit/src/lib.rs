//! Loopback servers for tests and benchmarks.
//!
//! [`FaultServer`] speaks enough of the OpenAI chat-completions protocol (plain and SSE) to be a
//! real peer for the HTTP backend, and misbehaves on request: error statuses, 429 with
//! `Retry-After`, stalls, malformed or truncated bodies, dropped connections. Every request is
//! counted and recorded (time, body, auth header), and the peak number in flight is tracked, so
//! tests can prove retries, cool-downs and limits against a real socket. [`shared`] locates
//! the shared benchmark data the tests read in place. [`instant`] is the opposite of
//! `FaultServer`: an endpoint that answers every request at once and correctly (JSON that
//! validates against the request's schema, built by [`synth`]), served by the
//! `instant-endpoint` binary for pipeline throughput benchmarks. [`batch`] plays a batch
//! service: it answers batch input files with result files in OpenAI's or vLLM's form.

pub mod batch;
pub mod instant;
pub mod scripted;
pub mod shared;
pub mod synth;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 200 with this assistant text.
    Reply(String),
    /// This status with a JSON error body.
    Status(u16),
    /// 429 with `Retry-After: secs` (fractional allowed).
    RateLimit { retry_after_s: f64 },
    /// Wait, then act as the inner fault.
    Stall(Duration, Box<Fault>),
    /// 200 whose body is not JSON.
    Malformed,
    /// 200 whose body is cut in the middle of the JSON, then the connection drops.
    Truncated,
    /// 400 complaining about `response_format`, as servers without structured output do.
    RefuseResponseFormat,
    /// 500 naming `response_format` for a `json_schema` format (`json_object` is served), as
    /// llama-cpp-python's server answers a request its schema validation rejects.
    RejectJsonSchemaWith500,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub body: Value,
    pub authorization: Option<String>,
}

type Responder = dyn Fn(&Value, usize) -> Fault + Send + Sync;

struct Shared {
    script: Mutex<VecDeque<Fault>>,
    fallback: Box<Responder>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    log: Mutex<Vec<Recorded>>,
    started: Instant,
}

/// A fault-injecting OpenAI-compatible server on 127.0.0.1. Stops when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The default reply: echoes the last user message, so answers are deterministic per request.
pub fn echo_reply(body: &Value) -> String {
    let last = body["messages"]
        .as_array()
        .and_then(|msgs| msgs.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    format!("echo: {last}")
}

impl FaultServer {
    /// Starts a server that plays `script` in order, then answers by echo.
    pub async fn start(script: Vec<Fault>) -> Self {
        Self::start_with(script, |body, _| Fault::Reply(echo_reply(body))).await
    }

    /// Starts a server that plays `script`, then asks `fallback(body, request_index)`.
    pub async fn start_with(
        script: Vec<Fault>,
        fallback: impl Fn(&Value, usize) -> Fault + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            fallback: Box::new(fallback),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            shared,
            shutdown: Some(tx),
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<Recorded> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Seconds since start of each request's arrival.
    pub fn arrival_times(&self) -> Vec<f64> {
        self.log()
            .iter()
            .map(|r| r.at.duration_since(self.shared.started).as_secs_f64())
            .collect()
    }

    /// Adds faults to the end of the script.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut s) = self.shared.script.lock() {
            s.extend(faults);
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let index = shared.requests.fetch_add(1, Ordering::SeqCst);
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&shared);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Ok(mut log) = shared.log.lock() {
        log.push(Recorded {
            at: Instant::now(),
            body: body.clone(),
            authorization,
        });
    }
    let scripted = shared.script.lock().ok().and_then(|mut s| s.pop_front());
    let mut fault = scripted.unwrap_or_else(|| (shared.fallback)(&body, index));
    while let Fault::Stall(wait, inner) = fault {
        tokio::time::sleep(wait).await;
        fault = *inner;
    }
    let streaming = body["stream"].as_bool().unwrap_or(false);
    act(fault, &body, streaming)
}

/// The chat completion this server returns for `body` with `text` as the answer (usage
/// estimated from the lengths, the model echoed).
pub fn completion_json(body: &Value, text: &str) -> Value {
    let prompt_chars: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"].as_str().unwrap_or("test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_chars.div_ceil(4),
            "completion_tokens": text.split_whitespace().count(),
            "total_tokens": prompt_chars.div_ceil(4) + text.split_whitespace().count(),
        }
    })
}

fn act(fault: Fault, body: &Value, streaming: bool) -> Response {
    match fault {
        Fault::Reply(text) if streaming => sse(body, &text),
        Fault::Reply(text) => axum::Json(completion_json(body, &text)).into_response(),
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                axum::Json(json!({"error": {"message": format!("injected {code}")}})),
            )
                .into_response()
        }
        Fault::RateLimit { retry_after_s } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", format!("{retry_after_s}"))],
            axum::Json(json!({"error": {"message": "rate limited"}})),
        )
            .into_response(),
        Fault::Stall(_, inner) => act(*inner, body, streaming),
        Fault::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{not json at all",
        )
            .into_response(),
        Fault::Truncated => {
            let full = completion_json(body, "this answer is cut off").to_string();
            let half = Bytes::from(full[..full.len() / 2].to_owned());
            // Data, then an I/O error: hyper aborts the connection mid-body.
            let stream =
                futures::stream::iter([Ok(half), Err(std::io::Error::other("injected hang-up"))]);
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Fault::RefuseResponseFormat if body.get("response_format").is_some() => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": {"message": "response_format is not supported by this server"}}),
            ),
        )
            .into_response(),
        Fault::RefuseResponseFormat => act(Fault::Reply(echo_reply(body)), body, streaming),
        Fault::RejectJsonSchemaWith500 if body["response_format"]["type"] == "json_schema" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"error": {"message": "1 validation error: {'type': 'literal_error', \
                'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or \
                'json_object'\", 'input': 'json_schema'}", "type": "internal_server_error"}}),
            ),
        )
            .into_response(),
        Fault::RejectJsonSchemaWith500 => act(Fault::Reply(echo_reply(body)), body, streaming),
    }
}

fn sse(body: &Value, text: &str) -> Response {
    let model = body["model"].as_str().unwrap_or("test-model");
    let mut out = String::new();
    for piece in text.split_inclusive(' ') {
        let chunk = json!({"object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    let done = json!({"object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": completion_json(body, text)["usage"]});
    out.push_str(&format!("data: {done}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], out).into_response()
}
