//! The OpenAI-compatible backend: chat completions against vLLM, llama.cpp, Ollama, OpenAI or
//! `demorecon serve`, from one or several base URLs.
//!
//! Reliability lives here, per base URL ("endpoint"): a concurrency limit, requests- and
//! tokens-per-minute buckets, and a cool-down. A 429 cools the *whole* endpoint down for as long
//! as its `Retry-After` / rate-limit headers say, so every request waiting on it backs off
//! together; 5xx answers, timeouts, broken connections and malformed bodies cool it down with
//! exponential backoff and jitter. Requests go to the healthiest endpoint, so a failing one is
//! routed around while others serve. Structured output degrades per endpoint from
//! `json_schema` to `json_object` to a prompt-only instruction when a server refuses it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{
    BackendIdentity, ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, Message,
    ResponseFormat, Role, TokenSink, Usage,
};

/// One OpenAI-compatible model behind one or more base URLs (each ending in `/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    pub base_urls: Vec<String>,
    pub model: String,
    /// Name of the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Requests in flight per base URL.
    pub max_concurrency: usize,
    /// Requests per minute per base URL.
    pub rpm: Option<u32>,
    /// Tokens (prompt estimate + max_tokens) per minute per base URL.
    pub tpm: Option<u32>,
    /// Whole-request timeout, seconds.
    pub timeout_s: f64,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// First backoff step, milliseconds; doubles per consecutive failure, with full jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            base_urls: Vec::new(),
            model: String::new(),
            api_key_env: None,
            max_concurrency: 8,
            rpm: None,
            tpm: None,
            timeout_s: 300.0,
            max_retries: 6,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

/// How much structured-output support an endpoint has shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FormatLevel {
    JsonSchema,
    /// `json_object` carrying the schema (`{"type": "json_object", "schema": …}`), which
    /// llama-cpp-python's server enforces with a grammar while it refuses `json_schema`.
    JsonObjectSchema,
    JsonObject,
    PromptOnly,
}

/// A token bucket refilled continuously; may go negative so one oversized request still passes.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn per_minute(n: u32) -> Self {
        let capacity = f64::from(n.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `n` if available now; otherwise returns how long to wait before trying again.
    fn try_take(&mut self, n: f64) -> Result<(), Duration> {
        let now = Instant::now();
        self.level = (self.level + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.capacity);
        self.last = now;
        let need = n.min(self.capacity);
        if self.level >= need {
            self.level -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.level) / self.per_sec))
        }
    }

    fn give_back(&mut self, n: f64) {
        self.level = (self.level + n).min(self.capacity);
    }
}

#[derive(Debug)]
struct EndpointState {
    cool_until: Option<Instant>,
    consecutive_failures: u32,
    format: FormatLevel,
}

#[derive(Debug)]
struct Endpoint {
    base_url: String,
    permits: Semaphore,
    state: Mutex<EndpointState>,
    rpm: Option<Mutex<Bucket>>,
    tpm: Option<Mutex<Bucket>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    fn cooling_for(&self, now: Instant) -> Option<Duration> {
        lock(&self.state)
            .cool_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Extends the cool-down to at least `wait` from now.
    fn cool_down(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut st = lock(&self.state);
        if st.cool_until.is_none_or(|t| t < until) {
            st.cool_until = Some(until);
        }
    }

    fn record_success(&self) {
        lock(&self.state).consecutive_failures = 0;
    }

    fn record_failure(&self, cfg: &EndpointConfig) -> Duration {
        let failures = {
            let mut st = lock(&self.state);
            st.consecutive_failures += 1;
            st.consecutive_failures
        };
        let exp = cfg
            .backoff_base_ms
            .saturating_mul(1u64 << (failures - 1).min(20));
        let cap = exp.min(cfg.backoff_max_ms).max(1);
        // Full jitter: spreads the retries of many clients hit by the same outage.
        let wait = Duration::from_millis(rand::rng().random_range(cap / 2..=cap));
        self.cool_down(wait);
        wait
    }

    fn format(&self) -> FormatLevel {
        lock(&self.state).format
    }

    fn degrade_format(&self, from: FormatLevel) {
        let mut st = lock(&self.state);
        if st.format == from {
            st.format = match from {
                FormatLevel::JsonSchema => FormatLevel::JsonObjectSchema,
                FormatLevel::JsonObjectSchema => FormatLevel::JsonObject,
                _ => FormatLevel::PromptOnly,
            };
            tracing::warn!(endpoint = %self.base_url, to = ?st.format, "server refused response_format; degrading");
        }
    }

    /// Waits for the request and token buckets.
    async fn rate_limit(&self, tokens: f64) {
        for (bucket, n) in [(&self.rpm, 1.0), (&self.tpm, tokens)] {
            let Some(bucket) = bucket else { continue };
            loop {
                let wait = lock(bucket).try_take(n);
                match wait {
                    Ok(()) => break,
                    Err(d) => tokio::time::sleep(d).await,
                }
            }
        }
    }

    fn refund_tokens(&self, estimated: f64, actual: f64) {
        if let Some(bucket) = &self.tpm {
            lock(bucket).give_back(estimated - actual);
        }
    }
}

/// Why one attempt failed, and what to do about it.
enum AttemptError {
    /// Cool the endpoint for this long, then retry.
    RateLimited(Duration, LlmError),
    /// The server refused this response_format; degrade and retry at once.
    /// The server refused `response_format` at this level.
    FormatRefused(FormatLevel),
    /// Retry with backoff (5xx, timeout, connection, malformed body).
    Transient(LlmError),
    /// Give up.
    Fatal(LlmError),
}

/// Chat completions against one model behind one or several base URLs.
pub struct OpenAiChat {
    cfg: EndpointConfig,
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    api_key: Option<String>,
    next: AtomicUsize,
}

impl std::fmt::Debug for OpenAiChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately leaves out the API key.
        f.debug_struct("OpenAiChat")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl OpenAiChat {
    pub fn new(cfg: EndpointConfig) -> Result<Self, LlmError> {
        if cfg.base_urls.is_empty() {
            return Err(LlmError::InvalidRequest(
                "an endpoint needs at least one base URL".into(),
            ));
        }
        if cfg.model.is_empty() {
            return Err(LlmError::InvalidRequest(
                "an endpoint needs a model name".into(),
            ));
        }
        for url in &cfg.base_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(LlmError::InvalidRequest(format!(
                    "base URL {url:?} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)"
                )));
            }
        }
        let api_key = match &cfg.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => Some(key),
                _ => {
                    return Err(LlmError::InvalidRequest(format!(
                        "environment variable {var} (named for the API key) is not set"
                    )));
                }
            },
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_s.max(0.001)))
            .connect_timeout(Duration::from_secs_f64(cfg.timeout_s.clamp(0.001, 30.0)))
            .build()
            .map_err(|e| LlmError::InvalidRequest(format!("HTTP client: {e}")))?;
        let endpoints = cfg
            .base_urls
            .iter()
            .map(|url| Endpoint {
                base_url: url.trim_end_matches('/').to_owned(),
                permits: Semaphore::new(cfg.max_concurrency.max(1)),
                state: Mutex::new(EndpointState {
                    cool_until: None,
                    consecutive_failures: 0,
                    format: FormatLevel::JsonSchema,
                }),
                rpm: cfg.rpm.map(|n| Mutex::new(Bucket::per_minute(n))),
                tpm: cfg.tpm.map(|n| Mutex::new(Bucket::per_minute(n))),
            })
            .collect();
        Ok(Self {
            cfg,
            client,
            endpoints,
            api_key,
            next: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// The endpoint to use next: round robin over those not cooling down, preferring ones
    /// with a free slot; if all are cooling, the one that recovers first, after its wait.
    async fn choose(&self) -> &Endpoint {
        loop {
            let now = Instant::now();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let n = self.endpoints.len();
            let order = (0..n).map(|i| &self.endpoints[(start + i) % n]);
            let ready: Vec<&Endpoint> = order.filter(|e| e.cooling_for(now).is_none()).collect();
            if let Some(free) = ready.iter().find(|e| e.permits.available_permits() > 0) {
                return free;
            }
            if let Some(first) = ready.first() {
                return first;
            }
            let wait = self
                .endpoints
                .iter()
                .filter_map(|e| e.cooling_for(now))
                .min()
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
        }
    }

    /// The request body a batch file carries for `req`: what a direct call sends to a server
    /// that accepts `json_schema` (batch servers do), without streaming.
    pub fn batch_body(&self, req: &ChatRequest) -> Value {
        self.build_body(req, FormatLevel::JsonSchema, false)
    }

    fn build_body(&self, req: &ChatRequest, format: FormatLevel, streaming: bool) -> Value {
        let mut messages: Vec<Message> = req.messages.clone();
        let mut response_format = Value::Null;
        match (&req.response_format, format) {
            (ResponseFormat::Text, _) => {}
            (ResponseFormat::JsonSchema { name, schema }, FormatLevel::JsonSchema) => {
                response_format = json!({
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": true},
                });
            }
            (ResponseFormat::JsonSchema { schema, .. }, level) => {
                add_schema_instruction(&mut messages, Some(schema));
                response_format = match level {
                    FormatLevel::JsonObjectSchema => {
                        json!({"type": "json_object", "schema": schema})
                    }
                    FormatLevel::JsonObject => json!({"type": "json_object"}),
                    _ => Value::Null,
                };
            }
            (ResponseFormat::JsonObject, FormatLevel::PromptOnly) => {
                add_schema_instruction(&mut messages, None);
            }
            (ResponseFormat::JsonObject, _) => {
                // OpenAI's json_object mode requires the word JSON somewhere in the messages.
                add_schema_instruction(&mut messages, None);
                response_format = json!({"type": "json_object"});
            }
        }
        let mut body = json!({
            "model": self.cfg.model,
            "messages": messages,
            "temperature": req.sampling.temperature,
            "top_p": req.sampling.top_p,
            "max_tokens": req.sampling.max_tokens,
            "seed": req.sampling.seed,
        });
        let obj = body.as_object_mut().expect("literal object");
        if !req.sampling.stop.is_empty() {
            obj.insert("stop".into(), json!(req.sampling.stop));
        }
        if !response_format.is_null() {
            obj.insert("response_format".into(), response_format);
        }
        if streaming {
            obj.insert("stream".into(), json!(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
        body
    }

    async fn attempt(
        &self,
        ep: &Endpoint,
        req: &ChatRequest,
        stream: Option<&TokenSink>,
        sent_any: &mut bool,
    ) -> Result<ChatResponse, AttemptError> {
        let format = ep.format();
        let body = self.build_body(req, format, stream.is_some());
        let url = format!("{}/chat/completions", ep.base_url);
        let mut http = self.client.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let endpoint = ep.base_url.clone();
        let resp = http
            .send()
            .await
            .map_err(|e| AttemptError::Transient(transport_error(&endpoint, &e)))?;
        let status = resp.status().as_u16();
        if status == 429 {
            let wait = rate_limit_wait(resp.headers()).unwrap_or(Duration::from_secs(1));
            let body = resp.text().await.unwrap_or_default();
            return Err(AttemptError::RateLimited(
                wait,
                LlmError::Http {
                    endpoint,
                    status,
                    body: snippet(&body),
                },
            ));
        }
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            let lower = body.to_ascii_lowercase();
            // 400/422 are the usual refusals; llama-cpp-python's server answers a
            // `json_schema` format its request validation rejects with a 500 naming the field.
            if matches!(status, 400 | 422 | 500)
                && !matches!(req.response_format, ResponseFormat::Text)
                && format != FormatLevel::PromptOnly
                && (lower.contains("response_format") || lower.contains("json_schema"))
            {
                return Err(AttemptError::FormatRefused(format));
            }
            let err = LlmError::Http {
                endpoint,
                status,
                body: snippet(&body),
            };
            return Err(if err.is_transient() || status == 408 {
                AttemptError::Transient(err)
            } else {
                AttemptError::Fatal(err)
            });
        }
        match stream {
            None => {
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| AttemptError::Transient(transport_error(&endpoint, &e)))?;
                parse_completion(&endpoint, &bytes).map_err(AttemptError::Transient)
            }
            Some(sink) => read_sse(&endpoint, resp, sink, sent_any)
                .await
                .map_err(AttemptError::Transient),
        }
    }
}

/// Adds "answer with JSON (matching this schema)" to the system message, for servers that
/// cannot enforce the format themselves.
fn add_schema_instruction(messages: &mut Vec<Message>, schema: Option<&Value>) {
    let note = match schema {
        Some(schema) => format!(
            "Reply with a single JSON value and nothing else. It must validate against this JSON schema:\n{schema}"
        ),
        None => "Reply with a single JSON object and nothing else.".to_owned(),
    };
    match messages.iter_mut().find(|m| m.role == Role::System) {
        Some(system) => {
            system.content.push_str("\n\n");
            system.content.push_str(&note);
        }
        None => messages.insert(0, Message::system(note)),
    }
}

fn snippet(body: &str) -> String {
    const MAX: usize = 500;
    if body.len() <= MAX {
        return body.to_owned();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

fn transport_error(endpoint: &str, err: &reqwest::Error) -> LlmError {
    if err.is_timeout() {
        LlmError::Timeout {
            endpoint: endpoint.to_owned(),
        }
    } else if err.is_decode() || err.is_body() {
        LlmError::BadResponse {
            endpoint: endpoint.to_owned(),
            message: err.to_string(),
        }
    } else {
        LlmError::Connection {
            endpoint: endpoint.to_owned(),
            message: err.to_string(),
        }
    }
}

/// Parses a duration as rate-limit headers write it: `"2"`, `"0.5"`, `"1s"`, `"6m0s"`, `"20ms"`.
pub fn parse_reset_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// How long a 429 asks us to wait: the longest of `Retry-After` (seconds or HTTP date),
/// `retry-after-ms` and the `x-ratelimit-reset-*` headers.
pub fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut waits = Vec::new();
    if let Some(v) = get("retry-after") {
        if let Some(d) = parse_reset_duration(v) {
            waits.push(d);
        } else if let Ok(when) = httpdate::parse_http_date(v) {
            waits.push(
                when.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        waits.push(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
        if let Some(d) = get(name).and_then(parse_reset_duration) {
            waits.push(d);
        }
    }
    waits.into_iter().max()
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn finish_reason(v: Option<&str>) -> FinishReason {
    match v {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

/// Reads a chat completion body (as a server returns it, or as a batch output line carries
/// it); `endpoint` names the source in errors.
pub fn parse_completion(endpoint: &str, bytes: &[u8]) -> Result<ChatResponse, LlmError> {
    #[derive(Deserialize)]
    struct WireMessage {
        content: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireChoice {
        message: WireMessage,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireCompletion {
        #[serde(default)]
        model: String,
        choices: Vec<WireChoice>,
        usage: Option<WireUsage>,
    }
    let bad = |message: String| LlmError::BadResponse {
        endpoint: endpoint.to_owned(),
        message,
    };
    let wire: WireCompletion =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a chat completion: {e}")))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| bad("no choices".into()))?;
    let usage = wire.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    });
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        finish_reason: finish_reason(choice.finish_reason.as_deref()),
        usage: usage.unwrap_or_default(),
        model: wire.model,
        cached: false,
    })
}

/// Reads a server-sent-events completion, forwarding deltas as they arrive. A stream that
/// ends before `[DONE]` is an error (truncated), never a silently short answer.
async fn read_sse(
    endpoint: &str,
    resp: reqwest::Response,
    sink: &TokenSink,
    sent_any: &mut bool,
) -> Result<ChatResponse, LlmError> {
    #[derive(Deserialize)]
    struct Delta {
        content: Option<String>,
    }
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Delta>,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        model: String,
        #[serde(default)]
        choices: Vec<Choice>,
        usage: Option<WireUsage>,
    }
    let bad = |message: String| LlmError::BadResponse {
        endpoint: endpoint.to_owned(),
        message,
    };
    let mut text = String::new();
    let mut model = String::new();
    let mut finish = FinishReason::Stop;
    let mut usage = Usage::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| transport_error(endpoint, &e))?;
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8(line).map_err(|_| bad("stream is not UTF-8".into()))?;
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(ChatResponse {
                    text,
                    finish_reason: finish,
                    usage,
                    model,
                    cached: false,
                });
            }
            let chunk: Chunk =
                serde_json::from_str(data).map_err(|e| bad(format!("bad stream chunk: {e}")))?;
            if !chunk.model.is_empty() {
                model = chunk.model;
            }
            if let Some(u) = chunk.usage {
                usage = Usage {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                };
            }
            for choice in chunk.choices {
                if let Some(content) = choice
                    .delta
                    .and_then(|d| d.content)
                    .filter(|c| !c.is_empty())
                {
                    text.push_str(&content);
                    *sent_any = true;
                    let _ = sink.send(content);
                }
                if choice.finish_reason.is_some() {
                    finish = finish_reason(choice.finish_reason.as_deref());
                }
            }
        }
    }
    Err(bad("stream ended before [DONE]".into()))
}

#[async_trait::async_trait]
impl ChatModel for OpenAiChat {
    fn identity(&self) -> BackendIdentity {
        // Base URLs are not identity: replicas of one model answer alike, and a key must not
        // change when a replica is added.
        BackendIdentity {
            kind: "openai".into(),
            model: self.cfg.model.clone(),
            detail: String::new(),
        }
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let est_tokens = req
            .messages
            .iter()
            .map(|m| m.content.len() / 4 + 4)
            .sum::<usize>() as f64
            + f64::from(req.sampling.max_tokens);
        let mut retries = 0u32;
        let mut sent_any = false;
        loop {
            let ep = self.choose().await;
            let _permit = ep
                .permits
                .acquire()
                .await
                .map_err(|_| LlmError::Model("endpoint closed".into()))?;
            ep.rate_limit(est_tokens).await;
            let outcome = self.attempt(ep, req, stream.as_ref(), &mut sent_any).await;
            let err = match outcome {
                Ok(mut resp) => {
                    ep.record_success();
                    let actual = (resp.usage.prompt_tokens + resp.usage.completion_tokens) as f64;
                    if actual > 0.0 {
                        ep.refund_tokens(est_tokens, actual);
                    }
                    if resp.model.is_empty() {
                        resp.model = self.cfg.model.clone();
                    }
                    return Ok(resp);
                }
                Err(AttemptError::FormatRefused(refused)) => {
                    // The level this attempt used: concurrent refusals of one level step the
                    // endpoint down once, not once each.
                    ep.degrade_format(refused);
                    continue;
                }
                Err(AttemptError::Fatal(err)) => return Err(err),
                Err(AttemptError::RateLimited(wait, err)) => {
                    tracing::info!(endpoint = %ep.base_url, ?wait, "429: cooling the endpoint down");
                    ep.cool_down(wait);
                    err
                }
                Err(AttemptError::Transient(err)) => {
                    let wait = ep.record_failure(&self.cfg);
                    tracing::info!(endpoint = %ep.base_url, ?wait, error = %err, "transient failure");
                    err
                }
            };
            // Text already shown to a streaming caller cannot be taken back by a retry.
            if sent_any || retries >= self.cfg.max_retries {
                return Err(err);
            }
            retries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_parse_like_openai_headers() {
        assert_eq!(parse_reset_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_reset_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_reset_duration("20ms"),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            parse_reset_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_reset_duration("soon"), None);
        assert_eq!(parse_reset_duration("-1"), None);
    }

    #[test]
    fn bucket_waits_when_empty_and_refills() {
        let mut b = Bucket::per_minute(60);
        for _ in 0..60 {
            assert!(b.try_take(1.0).is_ok());
        }
        let wait = b.try_take(1.0).unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_millis(1001),
            "{wait:?}"
        );
    }

    #[test]
    fn schema_falls_back_to_prompt_instruction() {
        let chat = OpenAiChat::new(EndpointConfig {
            base_urls: vec!["http://127.0.0.1:9/v1".into()],
            model: "m".into(),
            ..Default::default()
        })
        .unwrap();
        let mut req = ChatRequest::new(vec![Message::user("hi")]);
        req.response_format = ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: json!({"type": "object"}),
        };
        let full = chat.build_body(&req, FormatLevel::JsonSchema, false);
        assert_eq!(full["response_format"]["type"], "json_schema");
        let with_schema = chat.build_body(&req, FormatLevel::JsonObjectSchema, false);
        assert_eq!(with_schema["response_format"]["type"], "json_object");
        assert_eq!(with_schema["response_format"]["schema"]["type"], "object");
        let obj = chat.build_body(&req, FormatLevel::JsonObject, false);
        assert_eq!(obj["response_format"], json!({"type": "json_object"}));
        assert!(
            obj["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("JSON schema")
        );
        let prompt = chat.build_body(&req, FormatLevel::PromptOnly, false);
        assert!(prompt.get("response_format").is_none());
        assert_eq!(prompt["messages"][0]["role"], "system");
    }
}
