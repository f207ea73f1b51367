//! `demorecon report`: one self-contained HTML page over eval, run and training folders.
//!
//! [`build_report`] reads each folder (recognised by its files, see [`input`]), recomputes
//! every headline metric from the items with a seeded 95 % bootstrap interval, compares
//! models item by item ([`evals`]), and renders the page: tables, inline SVG charts, inline
//! CSS, no JavaScript and nothing fetched from the network. The same folders and options give
//! the same bytes.
//!
//! Not here: scoring (each benchmark does that in `demorecon-eval`) or command-line parsing.

pub mod charts;
pub mod evals;
pub mod input;
pub mod markdown;
pub mod page;
pub mod stats;

use std::path::{Path, PathBuf};

pub use evals::{Benchmark, Estimate, McNemar, MetricRow, ModelEval, PairedTest};
pub use input::{EvalInput, Input, RunCounts, RunInput, StepRow, TrainInput};

/// Which pairs of models the paired tests compare within a benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PairMode {
    /// Every pair, the folder given earlier as the reference (difference = later − earlier).
    #[default]
    AllPairs,
    /// Each model against the first folder of its benchmark.
    FirstAsBaseline,
}

/// How the report is made.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// The page title.
    pub title: String,
    /// Bootstrap resamples per interval and per paired test.
    pub resamples: usize,
    /// Seed of every bootstrap (each also keyed by benchmark and model, so adding a folder
    /// leaves the other numbers alone).
    pub seed: u64,
    pub pairs: PairMode,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            title: "demorecon report".into(),
            resamples: 2000,
            seed: 0,
            pairs: PairMode::AllPairs,
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no input folders given")]
    NoInputs,
    #[error("{dir}: not a folder")]
    NotAFolder { dir: PathBuf },
    #[error(
        "{dir}: not an eval folder (summary.json + items.jsonl), a run folder (manifest.json) \
         or a training folder (metrics.jsonl)"
    )]
    Unrecognised { dir: PathBuf },
    #[error("{dir}: looks like an eval folder but has no {missing}")]
    Incomplete { dir: PathBuf, missing: &'static str },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error(transparent)]
    Eval(#[from] demorecon_eval::record::RecordError),
    #[error(transparent)]
    Jsonl(#[from] demorecon_io::JsonlError),
    #[error("rendering the report: {0}")]
    Render(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A finished report: what it found, and the page.
#[derive(Debug, Clone)]
pub struct Report {
    /// Model labels in order of first appearance; a model's index is its colour.
    pub models: Vec<String>,
    pub benchmarks: Vec<Benchmark>,
    pub runs: Vec<RunInput>,
    pub trains: Vec<TrainInput>,
    /// Things a reader should know (mismatched headlines, items not shared, …).
    pub warnings: Vec<String>,
    html: String,
}

impl Report {
    /// The page.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// Writes the page to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        demorecon_io::write_atomic(path, self.html.as_bytes()).map_err(|source| {
            ReportError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}

/// Reads every folder in `inputs` and makes the report.
pub fn build_report(inputs: &[PathBuf], opts: &ReportOptions) -> Result<Report, ReportError> {
    if inputs.is_empty() {
        return Err(ReportError::NoInputs);
    }
    let (mut evals, mut runs, mut trains) = (Vec::new(), Vec::new(), Vec::new());
    for dir in inputs {
        match input::load(dir)? {
            Input::Eval(e) => evals.push(*e),
            Input::Run(r) => runs.push(*r),
            Input::Train(t) => trains.push(t),
        }
    }
    let labels = evals::model_labels(&evals);
    let mut models: Vec<String> = Vec::new();
    let colors: Vec<usize> = labels
        .iter()
        .map(|l| {
            models.iter().position(|m| m == l).unwrap_or_else(|| {
                models.push(l.clone());
                models.len() - 1
            })
        })
        .collect();
    let mut warnings = Vec::new();
    for ev in &evals {
        if ev.summary.unparsed > 0 {
            warnings.push(format!(
                "{}: {} judge replies could not be parsed (counted as not passed)",
                ev.dir.display(),
                ev.summary.unparsed
            ));
        }
    }
    let benchmarks = evals::benchmarks(&evals, &labels, &colors, opts, &mut warnings);
    let mut report = Report {
        models,
        benchmarks,
        runs,
        trains,
        warnings,
        html: String::new(),
    };
    report.html = page::render(&report, opts)?;
    Ok(report)
}
