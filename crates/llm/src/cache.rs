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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO calls (key, backend, model, request, response, created_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key, identity.kind, identity.model, request, response, now],
        )
        .map_err(|e| db_err(&self.path, e))?;
        Ok(())
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
