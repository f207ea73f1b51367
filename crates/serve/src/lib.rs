//! `demorecon serve`: an OpenAI-compatible HTTP server over any [`ChatModel`].
//!
//! Routes: `POST /v1/chat/completions` (plain JSON and SSE streaming, `response_format`
//! passed through to the model, which the embedded backend enforces by constrained decoding),
//! `GET /v1/models`, `GET /healthz`. Small handlers over shared [`AppState`]; the policies live
//! in layers around them: bearer-token auth, a body-size limit, a bounded queue that answers
//! 503 when full instead of piling requests up, and an access log that never records bodies or
//! keys. Every malformed request gets a 4xx with an OpenAI-style error body. A streaming
//! client that disconnects stops its generation.

mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use demorecon_llm::{ChatModel, LlmError};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

pub use wire::ApiError;

/// What the server needs to run.
#[derive(Clone)]
pub struct AppState {
    pub model: Arc<dyn ChatModel>,
    /// The name clients use in `model` and see in `/v1/models`.
    pub model_name: String,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<Arc<str>>,
    /// Requests admitted at once (running + waiting for the model); more get 503.
    pub queue: Arc<Semaphore>,
    pub started_unix: u64,
}

impl AppState {
    pub fn new(
        model: Arc<dyn ChatModel>,
        model_name: impl Into<String>,
        api_key: Option<String>,
        max_queue: usize,
    ) -> Self {
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            model,
            model_name: model_name.into(),
            api_key: api_key.map(Arc::from),
            queue: Arc::new(Semaphore::new(max_queue.max(1))),
            started_unix,
        }
    }
}

/// The application, with its layers. `max_body_bytes` bounds request bodies (413 past it).
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "demorecon::access",
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
    );
    resp
}

async fn require_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "missing or wrong bearer token",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list_models(State(state): State<AppState>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": state.started_unix, "owned_by": "demorecon"}],
    }))
    .into_response()
}

fn llm_error(err: LlmError) -> ApiError {
    match err {
        LlmError::InvalidRequest(msg) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
        }
        LlmError::OfflineMiss { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "offline_cache_miss",
            err.to_string(),
        ),
        LlmError::BudgetExceeded { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "budget_exceeded",
            err.to_string(),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            other.to_string(),
        ),
    }
}

async fn chat_completions(State(state): State<AppState>, body: Bytes) -> Response {
    let parsed = match wire::parse_chat_request(&body, &state.model_name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Ok(permit) = state.queue.clone().try_acquire_owned() else {
        let mut resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server's queue is full; retry shortly",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let id = format!("chatcmpl-{}", uuid_like());
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let model_name = state.model_name.clone();
    if !parsed.stream {
        let result = state.model.chat(&parsed.request, None).await;
        drop(permit);
        return match result {
            Ok(resp) => {
                let cache = if resp.cached { "hit" } else { "miss" };
                let mut out = axum::Json(wire::completion_body(&id, created, &model_name, &resp))
                    .into_response();
                out.headers_mut()
                    .insert("x-demorecon-cache", HeaderValue::from_static(cache));
                out
            }
            Err(e) => llm_error(e).into_response(),
        };
    }
    // Streaming: the model runs in its own task and feeds deltas through a channel; the
    // queue permit travels with it so a slow reader still counts against the queue.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let model = state.model.clone();
    let request = parsed.request;
    let handle = tokio::spawn(async move {
        let result = model.chat(&request, Some(tx)).await;
        drop(permit);
        result
    });
    let abort = handle.abort_handle();
    let include_usage = parsed.include_usage;
    let head = wire::chunk(
        &id,
        created,
        &model_name,
        json!({"role": "assistant", "content": ""}),
        None,
    );
    let deltas = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map({
        let (id, model_name) = (id.clone(), model_name.clone());
        move |text| wire::chunk(&id, created, &model_name, json!({"content": text}), None)
    });
    let tail = futures::stream::once(async move {
        let mut events = Vec::new();
        match handle.await {
            Ok(Ok(resp)) => {
                events.push(wire::chunk(&id, created, &model_name, json!({}), Some(resp.finish_reason)));
                if include_usage {
                    events.push(wire::usage_chunk(&id, created, &model_name, resp.usage));
                }
            }
            Ok(Err(e)) => events.push(json!({"error": llm_error(e).body()})),
            Err(e) => events.push(json!({"error": {"message": format!("generation task failed: {e}"), "type": "server_error"}})),
        }
        futures::stream::iter(events)
    })
    .flatten();
    // A client that goes away drops this stream; the guard then stops the generation task
    // (and so the generation: backends stop when their caller's future is dropped).
    let guard = AbortOnDrop(abort);
    let events = futures::stream::once(async move { head })
        .chain(deltas)
        .chain(tail)
        .map(move |event| {
            let _alive = &guard;
            event
        })
        .map(|v| Event::default().data(v.to_string()))
        .chain(futures::stream::once(async {
            Event::default().data("[DONE]")
        }))
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(events).into_response()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A unique-enough id for completion objects (time + counter; not a secret).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:04x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}
