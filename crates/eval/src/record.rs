//! What every benchmark writes into its eval folder, and how those files are read back: the
//! contract between the benchmarks, `demorecon report`, and anyone scripting over results.
//!
//! An eval folder holds
//! - `summary.json` — a [`Summary`]: which benchmark, the model under test and the judge (as
//!   configured and as the endpoint reported itself), the headline metrics, and the
//!   benchmark's own breakdowns under `details`;
//! - `items.jsonl` — one [`ItemRecord`] per item in input order: the prompt, the response,
//!   every raw judge reply, the parsed verdict, what decided it (a rule, code, or the judge),
//!   and the item's contribution to each headline metric.
//!
//! Headline metrics are ratios of sums: an item adds `[num, den]` to each metric it takes part
//! in, and the value is Σnum / Σden (a fraction in [0, 1]; tables print it ×100). A metric
//! that is the plain mean of others (balanced accuracy = mean of the accuracy on items whose
//! answer should be Yes and on those whose answer should be No) names them in `mean_of`. This
//! is what lets the report bootstrap an interval for every headline number and pair two models
//! item by item without knowing any benchmark.
//!
//! Not here: how a benchmark scores (its own module) or how results are drawn (`report`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the eval-folder layout; bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;
/// The summary file's name inside an eval folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// The per-item file's name inside an eval folder.
pub const ITEMS_FILE: &str = "items.jsonl";

/// A model as an eval saw it: the spec it was configured with, the backend's identity, and the
/// model name the endpoint reported in its answers (which may differ from the one requested).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The role spec as given (`embedded`, `MODEL@URL`, …), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Backend kind (`embedded`, `openai`).
    pub kind: String,
    /// Model id as requested.
    pub model: String,
    /// Model id as the backend reported it in its answers (first answer seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
    /// Extra identity, e.g. the GGUF's sha256.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Version of the prompt set the model was asked with (judges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_version: Option<String>,
}

/// One headline metric of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// Stable key, also used in each item's `scores` (e.g. `drfr`, `pass_rate`, `hsr_l3`).
    pub key: String,
    /// Human label (`InFoBench DRFR`, `FollowBench HSR level 3`).
    pub label: String,
    /// The value as a fraction in [0, 1]; `null` when no item took part.
    pub value: Option<f64>,
    /// Σ num over items (ratio metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<f64>,
    /// Σ den over items (ratio metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub den: Option<f64>,
    /// For a metric that is the mean of other headline metrics: their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean_of: Vec<String>,
}

impl Headline {
    /// A ratio metric summed from `items`.
    pub fn ratio(key: &str, label: &str, items: &[ItemRecord]) -> Self {
        let (num, den) = items
            .iter()
            .filter_map(|it| it.scores.get(key))
            .fold((0.0, 0.0), |(n, d), s| (n + s[0], d + s[1]));
        Headline {
            key: key.to_owned(),
            label: label.to_owned(),
            value: (den > 0.0).then(|| num / den),
            num: Some(num),
            den: Some(den),
            mean_of: Vec::new(),
        }
    }

    /// The mean of the already computed metrics `of` (missing or empty ones make it empty).
    pub fn mean(key: &str, label: &str, of: &[&Headline]) -> Self {
        let values: Option<Vec<f64>> = of.iter().map(|h| h.value).collect();
        Headline {
            key: key.to_owned(),
            label: label.to_owned(),
            value: values
                .filter(|v| !v.is_empty())
                .map(|v| v.iter().sum::<f64>() / v.len() as f64),
            num: None,
            den: None,
            mean_of: of.iter().map(|h| h.key.clone()).collect(),
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `ifeval`, `fgiv`, `infobench` or `followbench`.
    pub benchmark: String,
    pub schema: u32,
    /// `demorecon <version>`.
    pub tool: String,
    /// The model under test; absent when responses were given as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    /// Where the responses came from when they were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<String>,
    /// The judge; absent when nothing was judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<ModelInfo>,
    /// Items scored.
    pub items: usize,
    /// Judge replies that could not be parsed (reported, never counted as a pass).
    #[serde(default)]
    pub unparsed: usize,
    pub headline: Vec<Headline>,
    /// The benchmark's own breakdowns (per subset, label, level, …).
    #[serde(default)]
    pub details: Value,
    /// Top-level fields a benchmark keeps for compatibility with its reference's own summary
    /// (IFEval: lm-eval's four metric names and the reference's `strict` / `loose` blocks).
    #[serde(flatten, default)]
    pub extra: serde_json::Map<String, Value>,
}

impl Summary {
    pub fn new(benchmark: &str, items: usize, headline: Vec<Headline>, details: Value) -> Self {
        Summary {
            benchmark: benchmark.to_owned(),
            schema: SCHEMA,
            tool: format!("demorecon {}", env!("CARGO_PKG_VERSION")),
            model: None,
            responses: None,
            judge: None,
            items,
            unparsed: 0,
            headline,
            details,
            extra: serde_json::Map::new(),
        }
    }

    /// The headline metric with `key`.
    pub fn metric(&self, key: &str) -> Option<&Headline> {
        self.headline.iter().find(|h| h.key == key)
    }
}

/// One line of `items.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Stable id of the item within its benchmark (same id ⇒ same item across models).
    pub id: String,
    pub prompt: String,
    pub response: String,
    /// Every judge reply for this item, in the order asked; empty when no judge was asked.
    #[serde(default)]
    pub judge_raw: Vec<String>,
    /// The parsed verdict (benchmark-specific shape); `null` when unparsed.
    #[serde(default)]
    pub verdict: Value,
    /// What decided the verdict: `judge`, `rule:NAME`, `code:CHECK`, `given` (verdicts read
    /// from a file), or `none` (not scored, with the reason in `note`).
    pub decided_by: String,
    /// The item's `[num, den]` for each headline metric it takes part in.
    #[serde(default)]
    pub scores: BTreeMap<String, [f64; 2]>,
    /// Why an item was not scored or what went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Benchmark-specific fields (`constraint_type`, `level`, `subset`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why an eval folder could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Jsonl(#[from] demorecon_io::JsonlError),
}

/// Writes `summary.json` and `items.jsonl` into `dir` (atomically, each), returning the paths.
pub fn write_eval_dir(
    dir: &Path,
    summary: &Summary,
    items: &[ItemRecord],
) -> Result<Vec<PathBuf>, RecordError> {
    let items_path = dir.join(ITEMS_FILE);
    demorecon_io::write_atomic_with(&items_path, |w| {
        for it in items {
            serde_json::to_writer(&mut *w, it)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|source| RecordError::Write {
        path: items_path.clone(),
        source,
    })?;
    let summary_path = dir.join(SUMMARY_FILE);
    demorecon_io::write_json_pretty(&summary_path, summary).map_err(|source| {
        RecordError::Write {
            path: summary_path.clone(),
            source,
        }
    })?;
    Ok(vec![summary_path, items_path])
}

/// Reads an eval folder back: its summary and its items.
pub fn read_eval_dir(dir: &Path) -> Result<(Summary, Vec<ItemRecord>), RecordError> {
    let summary_path = dir.join(SUMMARY_FILE);
    let text = std::fs::read_to_string(&summary_path).map_err(|e| RecordError::Read {
        path: summary_path.clone(),
        message: e.to_string(),
    })?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| RecordError::Read {
        path: summary_path.clone(),
        message: format!("not an eval summary: {e}"),
    })?;
    let items = demorecon_io::read_jsonl::<ItemRecord>(&dir.join(ITEMS_FILE))?
        .into_iter()
        .map(|(_, it)| it)
        .collect();
    Ok((summary, items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(id: &str, scores: &[(&str, [f64; 2])]) -> ItemRecord {
        ItemRecord {
            id: id.into(),
            decided_by: "judge".into(),
            scores: scores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn headlines_are_ratios_of_sums_and_means() {
        let items = vec![
            item("a", &[("drfr", [2.0, 3.0]), ("yes", [1.0, 1.0])]),
            item("b", &[("drfr", [0.0, 1.0]), ("no", [0.0, 1.0])]),
            item("c", &[("drfr", [4.0, 4.0]), ("no", [1.0, 1.0])]),
        ];
        let drfr = Headline::ratio("drfr", "DRFR", &items);
        assert_eq!(drfr.value, Some(6.0 / 8.0));
        let yes = Headline::ratio("yes", "acc yes", &items);
        let no = Headline::ratio("no", "acc no", &items);
        assert_eq!(no.value, Some(0.5));
        let bal = Headline::mean("balanced", "balanced accuracy", &[&yes, &no]);
        assert_eq!(bal.value, Some(0.75));
        assert_eq!(bal.mean_of, vec!["yes", "no"]);
        assert_eq!(Headline::ratio("none", "x", &items).value, None);
    }

    #[test]
    fn eval_dirs_round_trip_with_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut it = item("x/1", &[("pass_rate", [1.0, 1.0])]);
        it.extra.insert("level".into(), json!(3));
        it.judge_raw = vec!["Yes.".into()];
        let items = vec![it];
        let mut summary = Summary::new(
            "fgiv",
            1,
            vec![Headline::ratio("pass_rate", "pass rate", &items)],
            json!({"by_kind": {}}),
        );
        summary.judge = Some(ModelInfo {
            kind: "embedded".into(),
            model: "smollm2".into(),
            prompt_version: Some("fgiv-judge/1".into()),
            ..Default::default()
        });
        write_eval_dir(dir.path(), &summary, &items).unwrap();
        let line = std::fs::read_to_string(dir.path().join(ITEMS_FILE)).unwrap();
        assert!(line.contains("\"level\":3"), "{line}");
        let (s, back) = read_eval_dir(dir.path()).unwrap();
        assert_eq!(s, summary);
        assert_eq!(back, items);
    }
}
