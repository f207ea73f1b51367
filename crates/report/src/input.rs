//! Reading the folders a report is made from, each recognised by what it holds: an eval
//! folder (`summary.json` + `items.jsonl`), a pipeline run folder (`manifest.json`), or a
//! training folder (`metrics.jsonl`). Every failure names the folder or file (and line, for
//! JSONL) and what was expected.
//!
//! Not here: any statistic or any drawing; this module only loads and checks shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use demorecon_eval::record::{self, ItemRecord, Summary};
use serde::Deserialize;
use serde_json::Value;

use crate::ReportError;

/// The manifest of a pipeline run folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The per-step training log of a training folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One input folder, by kind.
#[derive(Debug, Clone)]
pub enum Input {
    Eval(Box<EvalInput>),
    Run(Box<RunInput>),
    Train(TrainInput),
}

/// An eval folder: its summary and its items.
#[derive(Debug, Clone)]
pub struct EvalInput {
    pub dir: PathBuf,
    pub summary: Summary,
    pub items: Vec<ItemRecord>,
}

/// A pipeline run folder: the parts of `manifest.json` the report shows.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub dir: PathBuf,
    pub counts: RunCounts,
    /// `tool.version`, `input.seeds`, `shard`, `cost_usd`, when present.
    pub tool_version: Option<String>,
    pub seeds_path: Option<String>,
    pub shard: Option<String>,
    pub cost_usd: Option<f64>,
}

/// The manifest's `counts` (the fields the funnel needs; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunCounts {
    pub seeds_in: u64,
    pub seeds_unreadable: u64,
    pub seeds_filtered_out: u64,
    pub seeds_quarantined: u64,
    pub seeds_done: u64,
    pub seeds_pending: u64,
    pub variants: u64,
    pub variants_valid: u64,
    pub variants_invalid: u64,
    pub variants_quarantined: u64,
    pub pairs_valid_fgiv_a: u64,
    pub pairs_valid_fgiv_r: u64,
    pub fgiv_eval_seeds: u64,
    pub quarantined_by_reason: BTreeMap<String, u64>,
    /// Verifiable variants per constraint family (runs with `--variant-kinds`).
    pub verifiable: BTreeMap<String, FamilyCounts>,
}

/// One constraint family's yield, as the manifest counts it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FamilyCounts {
    pub variants: u64,
    pub verified: u64,
    pub seed_response_fails: u64,
    pub fgiv_a: SampleCounts,
    pub fgiv_r: SampleCounts,
}

/// Rejection sampling of one response kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SampleCounts {
    pub responses: u64,
    pub passed: u64,
    pub samples: u64,
    pub pairs_valid: u64,
}

impl RunCounts {
    /// Seeds the filter kept: all seeds less those it dropped and those it quarantined
    /// (seeds not yet filtered, in an interrupted run, are counted as kept).
    pub fn kept_by_filter(&self) -> u64 {
        let filter_quarantined: u64 = self
            .quarantined_by_reason
            .iter()
            .filter(|(k, _)| k.starts_with("filter/"))
            .map(|(_, n)| *n)
            .sum();
        self.seeds_in
            .saturating_sub(self.seeds_filtered_out)
            .saturating_sub(filter_quarantined)
    }
}

/// A training folder: one row per optimiser step.
#[derive(Debug, Clone)]
pub struct TrainInput {
    pub dir: PathBuf,
    pub steps: Vec<StepRow>,
}

/// One line of `metrics.jsonl`; `None` where a figure does not apply (SFT rows) or was not a
/// number (serde writes a NaN loss as `null`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StepRow {
    pub step: u64,
    #[serde(default)]
    pub loss: Option<f64>,
    #[serde(default)]
    pub dpo_loss: Option<f64>,
    #[serde(default)]
    pub nll: Option<f64>,
    #[serde(default)]
    pub reward_chosen: Option<f64>,
    #[serde(default)]
    pub reward_rejected: Option<f64>,
    #[serde(default)]
    pub reward_margin: Option<f64>,
    #[serde(default)]
    pub reward_accuracy: Option<f64>,
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
}

/// Recognises `dir` by its files and reads it.
pub fn load(dir: &Path) -> Result<Input, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotAFolder {
            dir: dir.to_owned(),
        });
    }
    let has = |name: &str| dir.join(name).is_file();
    if has(record::SUMMARY_FILE) || has(record::ITEMS_FILE) {
        return load_eval(dir).map(|e| Input::Eval(Box::new(e)));
    }
    if has(MANIFEST_FILE) {
        return load_run(dir).map(|r| Input::Run(Box::new(r)));
    }
    if has(METRICS_FILE) {
        return load_train(dir).map(Input::Train);
    }
    Err(ReportError::Unrecognised {
        dir: dir.to_owned(),
    })
}

fn load_eval(dir: &Path) -> Result<EvalInput, ReportError> {
    for name in [record::SUMMARY_FILE, record::ITEMS_FILE] {
        if !dir.join(name).is_file() {
            return Err(ReportError::Incomplete {
                dir: dir.to_owned(),
                missing: name,
            });
        }
    }
    let (summary, items) = record::read_eval_dir(dir)?;
    Ok(EvalInput {
        dir: dir.to_owned(),
        summary,
        items,
    })
}

fn load_run(dir: &Path) -> Result<RunInput, ReportError> {
    let path = dir.join(MANIFEST_FILE);
    let bad = |message: String| ReportError::BadFile {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let counts = value
        .get("counts")
        .filter(|c| c.is_object())
        .ok_or_else(|| bad("no `counts` object: not a run manifest".into()))?;
    let counts: RunCounts =
        serde_json::from_value(counts.clone()).map_err(|e| bad(format!("bad `counts`: {e}")))?;
    let text_at = |ptr: &str| {
        value
            .pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(RunInput {
        dir: dir.to_owned(),
        counts,
        tool_version: text_at("/tool/version"),
        seeds_path: text_at("/input/seeds"),
        shard: text_at("/shard"),
        cost_usd: value.get("cost_usd").and_then(Value::as_f64),
    })
}

fn load_train(dir: &Path) -> Result<TrainInput, ReportError> {
    let path = dir.join(METRICS_FILE);
    let mut steps: Vec<StepRow> = demorecon_io::read_jsonl::<StepRow>(&path)?
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    steps.sort_by_key(|r| r.step);
    Ok(TrainInput {
        dir: dir.to_owned(),
        steps,
    })
}

/// A short name for a folder: its last component, or the path as given.
pub fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_by_filter_subtracts_drops_and_filter_quarantines() {
        let mut c = RunCounts {
            seeds_in: 10,
            seeds_filtered_out: 3,
            ..Default::default()
        };
        c.quarantined_by_reason.insert("filter/parse".into(), 1);
        c.quarantined_by_reason.insert("decompose/parse".into(), 2);
        assert_eq!(c.kept_by_filter(), 6);
    }

    #[test]
    fn folders_are_recognised_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("summary.json") && err.contains("manifest.json"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":1,\"loss\":0.5}\n",
        )
        .unwrap();
        let Input::Train(t) = load(dir.path()).unwrap() else {
            panic!("not train")
        };
        assert_eq!(t.steps.len(), 1);
        std::fs::write(
            dir.path().join("manifest.json"),
            "{\"counts\":{\"seeds_in\":4}}",
        )
        .unwrap();
        let Input::Run(r) = load(dir.path()).unwrap() else {
            panic!("not run")
        };
        assert_eq!(r.counts.seeds_in, 4);
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("items.jsonl"), "{err}");
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, "{\"step\":1,\"loss\":0.5}\n{\"loss\":2}\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:2"), "{err}");
        let m = dir.path().join("manifest.json");
        std::fs::write(&m, "[1,2]").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("counts"),
            "{err}"
        );
        let missing = load(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
