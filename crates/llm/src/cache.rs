//! The content-addressed call cache (DESIGN §4).
//!
//! Every LLM call is keyed by a hash of what determines its answer — backend identity, model,
//! messages, sampling (seed included), response format and prompt-template version — and the
//! answer is stored in SQLite (WAL mode, so several `demorecon` processes can share one file).
//! Parsers are not part of the key: a changed parser re-reads cached text instead of re-calling.
//! Secrets never enter the key or the value: requests carry none, and identities hold none.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::{BackendIdentity, ChatModel, ChatRequest, ChatResponse, LlmError, TokenSink};

/// Bump when the key's recipe changes, so old rows are never misread as new ones.
const KEY_SCHEMA: &str = "demorecon-cache-key/1";

/// The cache key of a request sent to a backend: a hex blake3 digest.
pub fn request_key(identity: &BackendIdentity, req: &ChatRequest) -> String {
    #[derive(Serialize)]
    struct KeyMaterial<'a> {
        schema: &'static str,
        identity: &'a BackendIdentity,
        request: &'a ChatRequest,
    }
    // serde_json writes struct fields in declaration order, so the encoding is canonical.
    let material = KeyMaterial {
        schema: KEY_SCHEMA,
        identity,
        request: req,
    };
    let bytes = serde_json::to_vec(&material).expect("request types always serialize");
    blake3::hash(&bytes).to_hex().to_string()
}

/// How the cache is used for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Read and write.
    ReadWrite,
    /// Read only; a miss is an error naming the request hash.
    Offline,
}

/// Hit and miss counts since this process opened the cache.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

/// A SQLite file of cached answers, shared by every model wrapper of a process.
pub struct CallCache {
    path: PathBuf,
    conn: Mutex<Connection>,
    mode: CacheMode,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for CallCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCache")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .finish()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn db_err(path: &Path, err: rusqlite::Error) -> LlmError {
    LlmError::Cache(format!("{}: {err}", path.display()))
}

impl CallCache {
    /// Opens (creating if needed) the cache file at `path`.
    pub fn open(path: &Path, mode: CacheMode) -> Result<Self, LlmError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LlmError::Cache(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| db_err(path, e))?;
        // Another process may hold the write lock for a moment; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(|e| db_err(path, e))?;
        // Switching to WAL and creating the table can report SQLITE_BUSY without consulting the
        // busy handler when another process is initialising the same new file: retry those.
        let started = std::time::Instant::now();
        loop {
            let init = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
                .and_then(|()| {
                    conn.execute_batch(
                        "CREATE TABLE IF NOT EXISTS calls (
                            key TEXT PRIMARY KEY,
                            backend TEXT NOT NULL,
                            model TEXT NOT NULL,
                            request TEXT NOT NULL,
                            response TEXT NOT NULL,
                            created_unix INTEGER NOT NULL
                        );
                        CREATE TABLE IF NOT EXISTS batch_pending (
                            key TEXT PRIMARY KEY,
                            backend TEXT NOT NULL,
                            model TEXT NOT NULL,
                            request TEXT NOT NULL,
                            written_unix INTEGER NOT NULL
                        );",
                    )
                });
            match init {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < Duration::from_secs(60) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(db_err(path, e)),
            }
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            mode,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite owns the state.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stored answer for `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<ChatResponse>, LlmError> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row(
                "SELECT response FROM calls WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_err(&self.path, e))?;
        drop(conn);
        match text {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                LlmError::Cache(format!(
                    "{}: unreadable row {key}: {e}",
                    self.path.display()
                ))
            }),
        }
    }

    /// Stores an answer. A row already present (another process got there first) is kept.
    pub fn put(
        &self,
        key: &str,
        identity: &BackendIdentity,
        req: &ChatRequest,
        resp: &ChatResponse,
    ) -> Result<(), LlmError> {
        let request = serde_json::to_string(req).map_err(|e| LlmError::Cache(e.to_string()))?;
        let response = serde_json::to_string(resp).map_err(|e| LlmError::Cache(e.to_string()))?;
        let now = unix_now();
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO calls (key, backend, model, request, response, created_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key, identity.kind, identity.model, request, response, now],
        )
        .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }

    /// Records requests written to a batch file, so their answers can be stored with the
    /// request when the batch's results are imported ([`crate::batch::import`]). One
    /// transaction; a request already recorded is kept.
    pub fn defer<'a>(
        &self,
        requests: impl IntoIterator<Item = (&'a str, &'a BackendIdentity, &'a ChatRequest)>,
    ) -> Result<(), LlmError> {
        let now = unix_now();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| db_err(&self.path, e))?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO batch_pending (key, backend, model, request, written_unix)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| db_err(&self.path, e))?;
            for (key, identity, req) in requests {
                let request =
                    serde_json::to_string(req).map_err(|e| LlmError::Cache(e.to_string()))?;
                insert
                    .execute(params![key, identity.kind, identity.model, request, now])
                    .map_err(|e| db_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| db_err(&self.path, e))
    }

    /// Whether `key` was written to a batch and has no answer yet.
    pub fn is_pending(&self, key: &str) -> Result<bool, LlmError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT 1 FROM batch_pending WHERE key = ?1",
            params![key],
            |_| Ok(()),
        )
        .optional()
        .map(|row| row.is_some())
        .map_err(|e| db_err(&self.path, e))
    }

    /// Stores the answer to a request that was written to a batch, and forgets that it was
    /// pending. An answer already cached is kept; a key that is neither pending nor cached
    /// stores nothing.
    pub fn resolve(&self, key: &str, resp: &ChatResponse) -> Result<Resolved, LlmError> {
        let response = serde_json::to_string(resp).map_err(|e| LlmError::Cache(e.to_string()))?;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| db_err(&self.path, e))?;
        let cached = tx
            .query_row("SELECT 1 FROM calls WHERE key = ?1", params![key], |_| {
                Ok(())
            })
            .optional()
            .map_err(|e| db_err(&self.path, e))?
            .is_some();
        let stored = tx
            .execute(
                "INSERT OR IGNORE INTO calls (key, backend, model, request, response, created_unix)
                 SELECT key, backend, model, request, ?2, ?3 FROM batch_pending WHERE key = ?1",
                params![key, response, unix_now()],
            )
            .map_err(|e| db_err(&self.path, e))?;
        tx.execute("DELETE FROM batch_pending WHERE key = ?1", params![key])
            .map_err(|e| db_err(&self.path, e))?;
        tx.commit().map_err(|e| db_err(&self.path, e))?;
        Ok(if cached {
            Resolved::AlreadyCached
        } else if stored > 0 {
            Resolved::Stored
        } else {
            Resolved::NotPending
        })
    }

    /// Number of stored answers.
    pub fn len(&self) -> Result<u64, LlmError> {
        let conn = self.lock();
        conn.query_row("SELECT COUNT(*) FROM calls", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| db_err(&self.path, e))
    }

    pub fn is_empty(&self) -> Result<bool, LlmError> {
        Ok(self.len()? == 0)
    }
}

/// What [`CallCache::resolve`] did with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Stored,
    AlreadyCached,
    /// No batch of this cache asked for the key.
    NotPending,
}

/// A model whose calls go through a [`CallCache`].
pub struct CachedModel {
    inner: Arc<dyn ChatModel>,
    cache: Arc<CallCache>,
}

impl CachedModel {
    pub fn new(inner: Arc<dyn ChatModel>, cache: Arc<CallCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait::async_trait]
impl ChatModel for CachedModel {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let identity = self.inner.identity();
        let key = request_key(&identity, req);
        if let Some(mut hit) = self.cache.get(&key)? {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%key, "cache hit");
            if let Some(sink) = stream {
                let _ = sink.send(hit.text.clone());
            }
            hit.cached = true;
            return Ok(hit);
        }
        self.cache.misses.fetch_add(1, Ordering::Relaxed);
        if self.cache.mode == CacheMode::Offline {
            return Err(LlmError::OfflineMiss { hash: key });
        }
        tracing::debug!(%key, "cache miss");
        let resp = self.inner.chat(req, stream).await?;
        self.cache.put(&key, &identity, req, &resp)?;
        Ok(resp)
    }
}

/// What [`CallCache::absorb`] did with one cache file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Answers copied in.
    pub copied: u64,
    /// Answers this cache already held, identical.
    pub already: u64,
    /// Keys this cache already held with a different answer (this cache's answer is kept).
    pub conflicts: Vec<String>,
}

impl MergeReport {
    fn add(&mut self, other: MergeReport) {
        self.copied += other.copied;
        self.already += other.already;
        self.conflicts.extend(other.conflicts);
    }
}

impl CallCache {
    /// Copies every answer of the cache file `other` into this one, in one transaction. A key
    /// both hold must hold the same answer; one that does not is a conflict, reported, and this
    /// cache's answer is kept. Absorbing a file twice changes nothing. This is how per-shard
    /// cache files (one per process, since SQLite on network filesystems is unsafe to share)
    /// become one cache.
    pub fn absorb(&self, other: &Path) -> Result<MergeReport, LlmError> {
        if !other.is_file() {
            return Err(LlmError::Cache(format!(
                "{}: no such cache file",
                other.display()
            )));
        }
        let err = |e: rusqlite::Error| db_err(other, e);
        let mut conn = self.lock();
        conn.execute(
            "ATTACH DATABASE ?1 AS src",
            params![other.to_string_lossy()],
        )
        .map_err(err)?;
        let result = absorb_attached(&mut conn).map_err(err);
        conn.execute_batch("DETACH DATABASE src").map_err(err)?;
        result
    }
}

/// The body of [`CallCache::absorb`], with the other file attached as `src`.
fn absorb_attached(conn: &mut Connection) -> Result<MergeReport, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut report = MergeReport::default();
    {
        let mut both = tx.prepare(
            "SELECT o.key, o.response, m.response FROM src.calls o
             JOIN main.calls m ON m.key = o.key ORDER BY o.key",
        )?;
        let rows = both.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (key, theirs, ours) = row?;
            if same_answer(&theirs, &ours) {
                report.already += 1;
            } else {
                report.conflicts.push(key);
            }
        }
    }
    report.copied = tx.execute(
        "INSERT OR IGNORE INTO main.calls (key, backend, model, request, response, created_unix)
         SELECT key, backend, model, request, response, created_unix FROM src.calls",
        [],
    )? as u64;
    tx.commit()?;
    Ok(report)
}

/// Two stored answers are the same if their text is, or failing that their JSON.
fn same_answer(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Merges the cache files `inputs` into `out` (created if needed; an input that is `out`
/// itself is skipped). Conflicts are reported, not fatal: see [`CallCache::absorb`].
pub fn merge_files(out: &Path, inputs: &[PathBuf]) -> Result<MergeReport, LlmError> {
    let cache = CallCache::open(out, CacheMode::ReadWrite)?;
    let own = out.canonicalize().ok();
    let mut report = MergeReport::default();
    for input in inputs {
        if input.canonicalize().ok() == own {
            continue;
        }
        report.add(cache.absorb(input)?);
    }
    Ok(report)
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use crate::{FinishReason, Message, Usage};

    fn answer(text: &str) -> ChatResponse {
        ChatResponse {
            text: text.into(),
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            model: "m".into(),
            cached: false,
        }
    }

    fn put(cache: &CallCache, prompt: &str, text: &str) -> String {
        let identity = BackendIdentity {
            kind: "openai".into(),
            model: "m".into(),
            detail: String::new(),
        };
        let req = ChatRequest::new(vec![Message::user(prompt)]);
        let key = request_key(&identity, &req);
        cache.put(&key, &identity, &req, &answer(text)).unwrap();
        key
    }

    #[test]
    fn merge_copies_everything_once_and_reports_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, all) = (
            dir.path().join("a.sqlite"),
            dir.path().join("b.sqlite"),
            dir.path().join("all.sqlite"),
        );
        let (ca, cb) = (
            CallCache::open(&a, CacheMode::ReadWrite).unwrap(),
            CallCache::open(&b, CacheMode::ReadWrite).unwrap(),
        );
        let k1 = put(&ca, "one", "1");
        put(&cb, "two", "2");
        put(&ca, "both", "same");
        put(&cb, "both", "same");
        let inputs = [a.clone(), b.clone()];
        let first = merge_files(&all, &inputs).unwrap();
        assert_eq!((first.copied, first.already), (3, 1));
        assert!(first.conflicts.is_empty());
        let again = merge_files(&all, &inputs).unwrap();
        assert_eq!((again.copied, again.already), (0, 4), "idempotent");
        let merged = CallCache::open(&all, CacheMode::ReadWrite).unwrap();
        assert_eq!(merged.len().unwrap(), 3);
        assert_eq!(merged.get(&k1).unwrap().unwrap().text, "1");

        let c = dir.path().join("c.sqlite");
        let cc = CallCache::open(&c, CacheMode::ReadWrite).unwrap();
        let clash = put(&cc, "one", "not 1");
        put(&cc, "three", "3");
        let report = merge_files(&all, &[c]).unwrap();
        assert_eq!(report.conflicts, std::slice::from_ref(&clash));
        assert_eq!(report.copied, 1, "the rest is still merged");
        assert_eq!(merged.get(&clash).unwrap().unwrap().text, "1", "first kept");
        let missing = merge_files(&all, &[dir.path().join("nope.sqlite")]).unwrap_err();
        assert!(
            missing.to_string().contains("no such cache file"),
            "{missing}"
        );
        assert!(!dir.path().join("nope.sqlite").exists());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, ResponseFormat};

    fn id() -> BackendIdentity {
        BackendIdentity {
            kind: "openai".into(),
            model: "m".into(),
            detail: String::new(),
        }
    }

    fn base() -> ChatRequest {
        let mut r = ChatRequest::new(vec![Message::system("s"), Message::user("u")]);
        r.prompt_version = Some("decompose/1".into());
        r
    }

    #[test]
    fn key_changes_with_every_keyed_field_and_only_then() {
        let k0 = request_key(&id(), &base());
        assert_eq!(k0, request_key(&id(), &base()), "same request, same key");
        let variants: Vec<(&str, BackendIdentity, ChatRequest)> = vec![
            (
                "kind",
                BackendIdentity {
                    kind: "embedded".into(),
                    ..id()
                },
                base(),
            ),
            (
                "model",
                BackendIdentity {
                    model: "m2".into(),
                    ..id()
                },
                base(),
            ),
            (
                "detail",
                BackendIdentity {
                    detail: "sha".into(),
                    ..id()
                },
                base(),
            ),
            ("message", id(), {
                let mut r = base();
                r.messages[1].content = "u2".into();
                r
            }),
            ("role", id(), {
                let mut r = base();
                r.messages[0].role = crate::Role::User;
                r
            }),
            ("temperature", id(), {
                let mut r = base();
                r.sampling.temperature = 0.5;
                r
            }),
            ("top_p", id(), {
                let mut r = base();
                r.sampling.top_p = 0.9;
                r
            }),
            ("max_tokens", id(), {
                let mut r = base();
                r.sampling.max_tokens = 7;
                r
            }),
            ("stop", id(), {
                let mut r = base();
                r.sampling.stop = vec!["\n".into()];
                r
            }),
            ("seed", id(), {
                let mut r = base();
                r.sampling.seed = 1;
                r
            }),
            ("schema", id(), {
                let mut r = base();
                r.response_format = ResponseFormat::JsonSchema {
                    name: "x".into(),
                    schema: serde_json::json!({}),
                };
                r
            }),
            ("prompt version", id(), {
                let mut r = base();
                r.prompt_version = Some("decompose/2".into());
                r
            }),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(k0.clone());
        for (what, identity, req) in variants {
            let k = request_key(&identity, &req);
            assert!(seen.insert(k), "changing {what} did not change the key");
        }
    }
}
