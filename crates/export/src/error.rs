//! Why an export failed. Every variant names the file (and the line, where there is one), so a
//! person can go and look; an unfinished run lists the units still pending.

use std::path::PathBuf;

use demorecon_io::JsonlError;

/// A unit the run has not finished: `unit` is a seed id or a variant id, `stage` the stage
/// that still has to run for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub unit: String,
    pub stage: &'static str,
}

/// What is unfinished about a run folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Units whose stage records are missing, in input order.
    pub pending: Vec<Pending>,
    /// Record files of the run folder that do not exist.
    pub missing_files: Vec<String>,
    /// `counts.seeds_pending` and `counts.variants_pending` of manifest.json.
    pub manifest_pending: (u64, u64),
    /// The run is one shard (`--shard I/N`) of a larger run.
    pub shard: Option<String>,
}

impl Unfinished {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && self.missing_files.is_empty()
            && self.manifest_pending == (0, 0)
            && self.shard.is_none()
    }

    /// A short account: what is missing and the first pending units.
    pub fn describe(&self, shown: usize) -> String {
        let mut lines = Vec::new();
        if let Some(shard) = &self.shard {
            lines.push(format!(
                "the run is shard {shard} of a larger run (merge the shards with `demorecon merge` first)"
            ));
        }
        for file in &self.missing_files {
            lines.push(format!("{file} is missing"));
        }
        let (seeds, variants) = self.manifest_pending;
        if seeds + variants > 0 {
            lines.push(format!(
                "manifest.json counts {seeds} seeds and {variants} variants pending"
            ));
        }
        if !self.pending.is_empty() {
            lines.push(format!("{} units pending:", self.pending.len()));
            for p in self.pending.iter().take(shown) {
                lines.push(format!("  {} {}", p.stage, p.unit));
            }
            if self.pending.len() > shown {
                lines.push(format!("  … and {} more", self.pending.len() - shown));
            }
        }
        lines.join("\n")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error(
        "{run} is not finished, so exporting it would give half a dataset:\n{}\nFinish the run (rerun the same `demorecon run` command), or export what is final with --partial.",
        .unfinished.describe(20)
    )]
    Unfinished {
        run: PathBuf,
        unfinished: Unfinished,
    },
    #[error("{0}")]
    Usage(String),
}

impl ExportError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn bad(path: &std::path::Path, message: impl Into<String>) -> Self {
        ExportError::Bad {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}
