//! Batch APIs: a run that writes its calls to files instead of sending them, and the import
//! of the answers that come back.
//!
//! [`DeferredModel`] stands in for an endpoint: a call that misses the cache is added to a
//! [`BatchCollector`] and fails with [`LlmError::Deferred`], which the pipeline reads as
//! "pending, ask again next round". [`BatchCollector::write`] then writes every collected
//! call as OpenAI Batch input lines (`custom_id` = the cache key, the body a direct call
//! would send), one model per file and at most [`MAX_LINES_PER_FILE`] lines a file, and
//! records each request as pending in the [`CallCache`]. [`import`] reads result files —
//! OpenAI's output and error files, or vLLM `run_batch` output with its errors inline — and
//! stores every answer under its key, so rerunning the same command finds them as cache
//! hits and writes the next round. A failed line is reported and stays pending: the next
//! round asks again.
//!
//! Not for the embedded model (it answers in process) and not for streaming.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use crate::cache::{CallCache, Resolved, request_key};
use crate::openai::{OpenAiChat, parse_completion};
use crate::{BackendIdentity, ChatModel, ChatRequest, ChatResponse, LlmError, TokenSink};

/// OpenAI's limit on requests in one batch input file.
pub const MAX_LINES_PER_FILE: usize = 50_000;

/// The endpoint every line of a written batch targets.
pub const CHAT_COMPLETIONS_URL: &str = "/v1/chat/completions";

struct Entry {
    identity: BackendIdentity,
    request: ChatRequest,
    body: Value,
}

/// The calls a run deferred, by cache key (so a request asked twice is written once, and
/// files come out in a stable order).
#[derive(Default)]
pub struct BatchCollector {
    entries: Mutex<BTreeMap<String, Entry>>,
}

/// One file [`BatchCollector::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WrittenFile {
    pub path: PathBuf,
    /// The `model` every line of the file asks for (OpenAI takes one model per batch).
    pub model: String,
    pub lines: usize,
}

impl BatchCollector {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls collected so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, key: String, identity: BackendIdentity, request: &ChatRequest, body: Value) {
        self.lock().entry(key).or_insert_with(|| Entry {
            identity,
            request: request.clone(),
            body,
        });
    }

    /// Records every collected call as pending in `cache`, then writes them into `dir` as
    /// OpenAI Batch input files named `{model}-{digest}-{part}.jsonl`; the digest covers
    /// the file group's keys, so writing the same calls again gives the same names and
    /// bytes. Returns the files written (none when nothing was collected).
    pub fn write(&self, dir: &Path, cache: &CallCache) -> Result<Vec<WrittenFile>, LlmError> {
        let entries = self.lock();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        cache.defer(
            entries
                .iter()
                .map(|(key, e)| (key.as_str(), &e.identity, &e.request)),
        )?;
        let mut by_model: BTreeMap<&str, Vec<(&String, &Entry)>> = BTreeMap::new();
        for (key, entry) in entries.iter() {
            let model = entry.body["model"].as_str().unwrap_or_default();
            by_model.entry(model).or_default().push((key, entry));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| LlmError::Cache(format!("cannot create {}: {e}", dir.display())))?;
        let mut written = Vec::new();
        for (model, group) in by_model {
            let mut digest = blake3::Hasher::new();
            for (key, _) in &group {
                digest.update(key.as_bytes());
            }
            let digest = digest.finalize().to_hex();
            for (part, chunk) in group.chunks(MAX_LINES_PER_FILE).enumerate() {
                let name = format!("{}-{}-{:03}.jsonl", slug(model), &digest[..12], part + 1);
                let path = dir.join(name);
                let mut text = String::new();
                for (key, entry) in chunk {
                    let line = json!({
                        "custom_id": key,
                        "method": "POST",
                        "url": CHAT_COMPLETIONS_URL,
                        "body": entry.body,
                    });
                    text.push_str(&line.to_string());
                    text.push('\n');
                }
                demorecon_io::write_atomic(&path, text.as_bytes()).map_err(|e| {
                    LlmError::Cache(format!("cannot write {}: {e}", path.display()))
                })?;
                written.push(WrittenFile {
                    path,
                    model: model.to_owned(),
                    lines: chunk.len(),
                });
            }
        }
        Ok(written)
    }
}

/// A file-name-safe form of a model id (`org/model:tag` → `org_model_tag`).
fn slug(model: &str) -> String {
    let s: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "model".into() } else { s }
}

/// An endpoint that is not called: each request goes to the batch and fails as
/// [`LlmError::Deferred`]. It has the endpoint's identity, so the keys it writes are the
/// keys a direct call would be cached under.
pub struct DeferredModel {
    endpoint: Arc<OpenAiChat>,
    batch: Arc<BatchCollector>,
}

impl DeferredModel {
    pub fn new(endpoint: Arc<OpenAiChat>, batch: Arc<BatchCollector>) -> Self {
        Self { endpoint, batch }
    }
}

#[async_trait::async_trait]
impl ChatModel for DeferredModel {
    fn identity(&self) -> BackendIdentity {
        self.endpoint.identity()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        _stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let identity = self.identity();
        let hash = request_key(&identity, req);
        self.batch
            .add(hash.clone(), identity, req, self.endpoint.batch_body(req));
        Err(LlmError::Deferred { hash })
    }
}

/// A line of a result file that gave no answer, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineIssue {
    pub file: PathBuf,
    pub line: usize,
    pub custom_id: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for LineIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(id) = &self.custom_id {
            write!(f, "{id}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// What [`import`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub files: usize,
    pub lines: usize,
    /// Answers stored in the cache.
    pub imported: usize,
    /// Answers the cache already had (a line seen twice, or a file imported again).
    pub already_cached: usize,
    /// Requests that failed: still pending, asked again by the next round.
    pub failed: Vec<LineIssue>,
    /// Lines whose `custom_id` this cache never wrote to a batch (another cache's batch?).
    pub unknown: Vec<LineIssue>,
    /// Lines that are not batch output at all.
    pub malformed: Vec<LineIssue>,
}

/// A result line, read.
enum LineResult {
    Answer(ChatResponse),
    Failed(String),
}

/// Reads batch result files into `cache`: OpenAI output and error files (errors in a file of
/// their own, `error` an object) and vLLM `run_batch` output (errors inline, `error` a
/// string or an error response), in any order. A request answered in one line and failed in
/// another counts as answered.
pub fn import(cache: &CallCache, files: &[PathBuf]) -> Result<ImportReport, LlmError> {
    let mut report = ImportReport::default();
    let mut failed = Vec::new();
    let mut answered: HashSet<String> = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| LlmError::Cache(format!("cannot read {}: {e}", file.display())))?;
        report.files += 1;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            let issue = |custom_id: Option<&str>, reason: String| LineIssue {
                file: file.clone(),
                line: i + 1,
                custom_id: custom_id.map(str::to_owned),
                reason,
            };
            let value: Value = match serde_json::from_str(line) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    report
                        .malformed
                        .push(issue(None, "not a JSON object".into()));
                    continue;
                }
                Err(e) => {
                    report.malformed.push(issue(None, format!("not JSON: {e}")));
                    continue;
                }
            };
            let Some(key) = value["custom_id"].as_str() else {
                report
                    .malformed
                    .push(issue(None, "no custom_id: not a batch output line".into()));
                continue;
            };
            if value.get("response").is_none() && value.get("error").is_none() {
                let what = if value.get("body").is_some() {
                    "a batch input line (a request), not a result"
                } else {
                    "neither `response` nor `error`: not a batch output line"
                };
                report.malformed.push(issue(Some(key), what.into()));
                continue;
            }
            let source = format!("{}:{}", file.display(), i + 1);
            match read_line(&source, &value) {
                LineResult::Answer(resp) => match cache.resolve(key, &resp)? {
                    Resolved::Stored => {
                        report.imported += 1;
                        answered.insert(key.to_owned());
                    }
                    Resolved::AlreadyCached => {
                        report.already_cached += 1;
                        answered.insert(key.to_owned());
                    }
                    Resolved::NotPending => report.unknown.push(issue(
                        Some(key),
                        "this cache wrote no batch request with this id".into(),
                    )),
                },
                LineResult::Failed(reason) => failed.push(issue(Some(key), reason)),
            }
        }
    }
    for f in failed {
        let key = f.custom_id.as_deref().unwrap_or_default();
        if answered.contains(key) || cache.get(key)?.is_some() {
            continue;
        }
        if cache.is_pending(key)? {
            report.failed.push(f);
        } else {
            report.unknown.push(LineIssue {
                reason: format!(
                    "{} (and this cache wrote no batch request with this id)",
                    f.reason
                ),
                ..f
            });
        }
    }
    Ok(report)
}

/// An answer or a failure, from one output line of either form.
fn read_line(source: &str, line: &Value) -> LineResult {
    let error = &line["error"];
    let response = &line["response"];
    let status = response["status_code"].as_u64().unwrap_or(200);
    let body = &response["body"];
    if !error.is_null() {
        return LineResult::Failed(format!("{} (HTTP {status})", error_text(error)));
    }
    if response.is_null() {
        return LineResult::Failed("no response and no error".into());
    }
    if status != 200 {
        let detail = if body.is_null() {
            "no body".to_owned()
        } else {
            error_text(body)
        };
        return LineResult::Failed(format!("HTTP {status}: {detail}"));
    }
    if !body.is_object() {
        return LineResult::Failed("HTTP 200 without a completion body".into());
    }
    match parse_completion(source, body.to_string().as_bytes()) {
        Ok(resp) => LineResult::Answer(resp),
        Err(e) => LineResult::Failed(e.to_string()),
    }
}

/// The message of an error as either form writes it: a string (vLLM), `{code, message}`
/// (OpenAI), an error response `{"error": {...}}` or `{"object": "error", "message", ...}`.
fn error_text(error: &Value) -> String {
    if let Some(s) = error.as_str() {
        return s.to_owned();
    }
    let inner = if error["error"].is_object() {
        &error["error"]
    } else {
        error
    };
    let message = inner["message"].as_str();
    let code = match &inner["code"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => inner["type"].as_str().map(str::to_owned),
    };
    match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (None, Some(m)) => m.to_owned(),
        (Some(c), None) => c,
        (None, None) => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheMode;
    use crate::openai::EndpointConfig;
    use crate::{Message, Sampling};

    fn endpoint(model: &str) -> Arc<OpenAiChat> {
        Arc::new(
            OpenAiChat::new(EndpointConfig {
                base_urls: vec!["http://127.0.0.1:9/v1".into()],
                model: model.into(),
                ..EndpointConfig::default()
            })
            .unwrap(),
        )
    }

    fn req(i: usize) -> ChatRequest {
        ChatRequest {
            sampling: Sampling {
                seed: i as u64,
                ..Sampling::default()
            },
            ..ChatRequest::new(vec![Message::user(format!("question {i}"))])
        }
    }

    fn completion(text: &str) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    }

    async fn deferred(model: &DeferredModel, r: &ChatRequest) -> String {
        match model.chat(r, None).await {
            Err(LlmError::Deferred { hash }) => hash,
            other => panic!("expected a deferral, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_one_model_per_file_dedups_and_imports_both_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CallCache::open(&tmp.path().join("c.sqlite"), CacheMode::ReadWrite).unwrap();
        let batch = BatchCollector::new();
        let a = DeferredModel::new(endpoint("org/gen-model"), batch.clone());
        let b = DeferredModel::new(endpoint("judge"), batch.clone());
        let mut keys = Vec::new();
        for i in 0..4 {
            keys.push(deferred(&a, &req(i)).await);
        }
        // The same request twice is one line.
        assert_eq!(deferred(&a, &req(0)).await, keys[0]);
        let judge_key = deferred(&b, &req(0)).await;
        assert_ne!(judge_key, keys[0], "another model, another key");
        assert_eq!(keys[0], request_key(&a.identity(), &req(0)));

        let dir = tmp.path().join("batch");
        let files = batch.write(&dir, &cache).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].model, "judge");
        assert_eq!(files[1].model, "org/gen-model");
        assert_eq!(files[1].lines, 4);
        assert!(
            files[1]
                .path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("org_gen-model-")
        );
        let first = std::fs::read(&files[1].path).unwrap();
        let line: Value =
            serde_json::from_str(std::str::from_utf8(&first).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(line["method"], "POST");
        assert_eq!(line["url"], CHAT_COMPLETIONS_URL);
        assert_eq!(line["body"]["model"], "org/gen-model");
        assert!(line["body"].get("stream").is_none());
        // Writing again gives the same names and bytes.
        assert_eq!(batch.write(&dir, &cache).unwrap(), files);
        assert_eq!(std::fs::read(&files[1].path).unwrap(), first);

        // OpenAI: answers out of order in the output file, failures in the error file.
        let out = tmp.path().join("openai-output.jsonl");
        let err = tmp.path().join("openai-errors.jsonl");
        let ok_line = |key: &str, text: &str| {
            json!({"id": "batch_req_abc", "custom_id": key,
                "response": {"status_code": 200, "request_id": "req_1", "body": completion(text)},
                "error": null})
            .to_string()
        };
        std::fs::write(
            &out,
            format!(
                "{}\n{}\n",
                ok_line(&keys[2], "two"),
                ok_line(&keys[0], "zero")
            ),
        )
        .unwrap();
        std::fs::write(
            &err,
            format!(
                "{}\n{}\n",
                json!({"id": "batch_req_x", "custom_id": keys[1],
                    "response": {"status_code": 500, "request_id": "req_2",
                        "body": {"error": {"message": "The server had an error", "type": "server_error"}}},
                    "error": null}),
                json!({"id": "batch_req_y", "custom_id": keys[3], "response": null,
                    "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
            ),
        )
        .unwrap();
        let report = import(&cache, &[out.clone(), err.clone()]).unwrap();
        assert_eq!(report.imported, 2);
        assert_eq!(report.failed.len(), 2, "{report:?}");
        assert!(
            report.failed[0]
                .reason
                .contains("HTTP 500: server_error: The server had an error")
        );
        assert!(report.failed[1].reason.contains("batch_expired"));
        assert_eq!(report.failed[1].to_string().split(':').nth(1), Some("2"));
        assert_eq!(cache.get(&keys[2]).unwrap().unwrap().text, "two");
        assert!(cache.get(&keys[1]).unwrap().is_none());
        assert!(cache.is_pending(&keys[1]).unwrap() && !cache.is_pending(&keys[0]).unwrap());
        // The input file given by mistake: every line is reported as a request, not a result.
        let mistaken = import(&cache, std::slice::from_ref(&files[1].path)).unwrap();
        assert_eq!((mistaken.malformed.len(), mistaken.failed.len()), (4, 0));
        assert!(mistaken.malformed[0].reason.contains("batch input line"));
        // Importing the same files again stores nothing new.
        let again = import(&cache, &[out, err]).unwrap();
        assert_eq!((again.imported, again.already_cached), (0, 2));

        // vLLM: errors inline, as a string or as an error response; ids of its own form.
        let vllm = tmp.path().join("vllm.jsonl");
        std::fs::write(
            &vllm,
            [
                json!({"id": "vllm-5f0c", "custom_id": keys[3],
                    "response": {"status_code": 400, "request_id": "vllm-batch-1", "body": null},
                    "error": "Request must not be sent in stream mode"}),
                json!({"id": "vllm-77aa", "custom_id": judge_key,
                    "response": {"status_code": 400, "request_id": "vllm-batch-2", "body": null},
                    "error": {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "code": 400}}),
                json!({"id": "vllm-9b1e", "custom_id": keys[1],
                    "response": {"status_code": 200, "request_id": "vllm-batch-3", "body": completion("one")},
                    "error": null}),
                json!({"id": "vllm-0000", "custom_id": "f".repeat(64),
                    "response": {"status_code": 200, "request_id": "vllm-batch-4", "body": completion("stray")},
                    "error": null}),
            ]
            .iter()
            .map(|v| format!("{v}\n"))
            .collect::<String>()
                + "{\"truncated\n",
        )
        .unwrap();
        let report = import(&cache, std::slice::from_ref(&vllm)).unwrap();
        assert_eq!(report.imported, 1);
        assert_eq!(report.failed.len(), 2);
        assert!(report.failed[0].reason.contains("stream mode"));
        assert!(
            report.failed[1]
                .reason
                .contains("400: max_tokens is too large")
        );
        assert_eq!(report.unknown.len(), 1);
        assert_eq!(report.malformed.len(), 1);
        assert_eq!(report.malformed[0].line, 5);
        assert_eq!(cache.get(&keys[1]).unwrap().unwrap().text, "one");

        // What is still pending goes into the next round's batch; answered calls do not.
        let next = BatchCollector::new();
        let a2 = DeferredModel::new(endpoint("org/gen-model"), next.clone());
        deferred(&a2, &req(3)).await;
        let files = next.write(&dir, &cache).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].lines, 1);
    }

    #[test]
    fn a_large_batch_splits_at_the_line_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CallCache::open(&tmp.path().join("c.sqlite"), CacheMode::ReadWrite).unwrap();
        let batch = BatchCollector::new();
        let ep = endpoint("m");
        let identity = ep.identity();
        for i in 0..MAX_LINES_PER_FILE + 1 {
            let r = req(i);
            batch.add(
                request_key(&identity, &r),
                identity.clone(),
                &r,
                ep.batch_body(&r),
            );
        }
        let files = batch.write(&tmp.path().join("b"), &cache).unwrap();
        let lines: Vec<usize> = files.iter().map(|f| f.lines).collect();
        assert_eq!(lines, vec![MAX_LINES_PER_FILE, 1]);
        let counted = std::fs::read_to_string(&files[0].path)
            .unwrap()
            .lines()
            .count();
        assert_eq!(counted, MAX_LINES_PER_FILE);
    }
}
