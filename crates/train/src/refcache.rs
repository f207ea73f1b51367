//! Reference log-probabilities on disk: the frozen base model's summed log-probability of each
//! response, computed once and reused by every later run and resume.
//!
//! An entry's key is the blake3 of the model's sha256, the tokenizer's digest, and the
//! sequence's token ids and label mask, so a different model, tokenizer, template or
//! truncation can never be served a stale value. The file is append-only JSONL
//! (`{"key", "logp", "bits"}`); `bits` is the f32's bit pattern, so a value read back is the
//! value computed, exactly (resumed runs stay bit-identical to uninterrupted ones).

use crate::data::Sequence;
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Identifies the reference model for cache keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelKey {
    pub model_sha256: String,
    pub tokenizer_digest: String,
}

impl ModelKey {
    /// The cache key of `seq` under this model.
    pub fn key(&self, seq: &Sequence) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"demorecon-refcache-v1\0");
        h.update(self.model_sha256.as_bytes());
        h.update(b"\0");
        h.update(self.tokenizer_digest.as_bytes());
        h.update(b"\0");
        for (&id, &label) in seq.ids.iter().zip(&seq.labels) {
            h.update(&id.to_le_bytes());
            h.update(&[label as u8]);
        }
        h.finalize().to_hex().to_string()
    }
}

/// The cache, loaded in memory, appending new entries to its file (if any).
pub struct RefCache {
    path: Option<PathBuf>,
    entries: HashMap<String, f32>,
    /// Entries found on disk when opened (for the "reused" count).
    pub loaded: usize,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    key: String,
    logp: f32,
    bits: u32,
}

impl RefCache {
    /// A cache that lives only in memory.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            entries: HashMap::new(),
            loaded: 0,
        }
    }

    /// Opens (or starts) the cache file at `path`; unreadable lines are skipped (a crash may
    /// leave a torn last line).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut entries = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines() {
                    if let Ok(e) = serde_json::from_str::<Entry>(line) {
                        entries.insert(e.key, f32::from_bits(e.bits));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
            loaded: entries.len(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<f32> {
        self.entries.get(key).copied()
    }

    /// Records values and appends them to the file in one write.
    pub fn insert_all(&mut self, values: &[(String, f32)]) -> anyhow::Result<()> {
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut text = String::new();
            for (key, logp) in values {
                let entry = Entry {
                    key: key.clone(),
                    logp: *logp,
                    bits: logp.to_bits(),
                };
                text.push_str(&serde_json::to_string(&entry)?);
                text.push('\n');
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        for (key, logp) in values {
            self.entries.insert(key.clone(), *logp);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
