//! Stage 6, build: turn the run's state into the files people use, always in input order (so
//! the same state gives the same bytes) and always by atomic replacement.
//!
//! Per-stage records go to the run folder (`seeds.jsonl`, `filter.jsonl`,
//! `decompositions.jsonl`, `variants.jsonl`, `responses.jsonl`, `verdicts.jsonl`,
//! `quarantine.jsonl`); training and evaluation data to `datasets/`:
//! SFT (`sft_fgiv_a.jsonl`, `sft_fgiv_r.jsonl`: `messages`), DPO (`dpo_fgiv_a.jsonl`,
//! `dpo_fgiv_r.jsonl`: TRL's conversational `prompt`/`chosen`/`rejected`, the seed's response
//! rejected), the FGIV-Eval split (`fgiv_eval.jsonl`) and its detection set
//! (`fgiv_detection.jsonl`). Splits are by seed: an FGIV-Eval seed contributes no row to any
//! training file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use demorecon_data::{RunState, Seed, records::variant_id};
use demorecon_io::AtomicJsonl;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ask::PipelineError;
use crate::graph::{
    DECOMPOSE, FGIV_A, FGIV_R, FILTER, SEED_RESPONSE, Step, Typed, Unit, VARY, VERIFY,
};
use crate::manifest::Counts;
use crate::records::{
    CallRecord, Calls, Decomposition, FilterResult, Outcome, Quarantine, ResponseRecord, Variant,
    Verdict,
};
use crate::runner::{slot_id, variant_slots};
use crate::shard::Shard;
use crate::verifiable::VariantKinds;

/// Every data file of a run folder, relative to it (the manifest and state aside): the seeds,
/// each step's file ([`crate::graph::step_files`], in graph order), quarantine, then the
/// datasets. All are written on every build, empty or not.
pub const DATA_FILES: [&str; 13] = [
    "seeds.jsonl",
    "filter.jsonl",
    "decompositions.jsonl",
    "variants.jsonl",
    "responses.jsonl",
    "verdicts.jsonl",
    "quarantine.jsonl",
    "datasets/sft_fgiv_a.jsonl",
    "datasets/sft_fgiv_r.jsonl",
    "datasets/dpo_fgiv_a.jsonl",
    "datasets/dpo_fgiv_r.jsonl",
    "datasets/fgiv_eval.jsonl",
    "datasets/fgiv_detection.jsonl",
];

/// The paper's FGIV-Eval size: 170 seeds with 4 variants each.
pub const PAPER_EVAL_SEEDS: usize = 170;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildOptions {
    /// Put pairs in the training files even when verification did not pass them.
    pub keep_unverified: bool,
    /// FGIV-Eval seeds to hold out; `None`: min(170, a tenth of the decomposed seeds, at
    /// least one), as far as there are eligible seeds.
    pub eval_seeds: Option<usize>,
    /// Seed of the held-out choice.
    pub split_seed: u64,
    /// Which variants the run made (read from the run's identity, not a build flag).
    #[serde(skip)]
    pub variant_kinds: VariantKinds,
    #[serde(skip)]
    pub shard: Option<Shard>,
}

/// Everything the store holds about one seed.
pub struct SeedView {
    pub seed: Seed,
    pub filter: Option<Outcome<FilterResult>>,
    pub decomposition: Option<Outcome<Decomposition>>,
    pub seed_response: Option<Outcome<ResponseRecord>>,
    pub variants: Vec<VariantView>,
}

pub struct VariantView {
    pub id: String,
    pub variant: Option<Outcome<Variant>>,
    pub fgiv_a: Option<Outcome<ResponseRecord>>,
    pub fgiv_r: Option<Outcome<ResponseRecord>>,
    pub verdict: Option<Outcome<Verdict>>,
}

impl SeedView {
    pub fn response(&self) -> Option<&ResponseRecord> {
        self.seed_response.as_ref().and_then(Outcome::done)
    }
}

impl VariantView {
    pub fn valid(&self) -> Option<&Variant> {
        self.variant
            .as_ref()
            .and_then(Outcome::done)
            .filter(|v| v.valid)
    }
    fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref().and_then(Outcome::done)
    }
}

/// What `build` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub counts: Counts,
    /// Calls and tokens per stage and model.
    pub usage: BTreeMap<String, BTreeMap<String, StageUsage>>,
    /// Rows per file written, by path relative to the run folder.
    pub files: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageUsage {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn read<T: DeserializeOwned>(
    state: &RunState,
    unit: &str,
    step: Typed<T>,
) -> Result<Option<Outcome<T>>, PipelineError> {
    let stage = step.name;
    state
        .get(unit, stage)?
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                PipelineError::Other(format!(
                    "stored {stage} result of {unit} is unreadable: {e}"
                ))
            })
        })
        .transpose()
}

/// The seeds this build covers (the shard's, if any), in input order.
pub fn seeds_in_scope(state: &RunState, shard: Option<Shard>) -> Result<Vec<Seed>, PipelineError> {
    Ok(state
        .seeds()?
        .into_iter()
        .filter(|s| shard.is_none_or(|sh| sh.contains(&s.id)))
        .collect())
}

/// Everything the store holds about one seed. Read one seed at a time, so a build's memory
/// does not grow with the run.
pub fn load_seed(
    state: &RunState,
    seed: Seed,
    kinds: VariantKinds,
) -> Result<SeedView, PipelineError> {
    let id = seed.id.clone();
    let decomposition: Option<Outcome<Decomposition>> = read(state, &id, DECOMPOSE)?;
    let slots = decomposition
        .as_ref()
        .and_then(Outcome::done)
        .map_or_else(Vec::new, |d| variant_slots(kinds, d));
    let mut variants = Vec::with_capacity(slots.len());
    for slot in slots {
        let vid = slot_id(&id, slot);
        variants.push(VariantView {
            variant: read(state, &vid, VARY)?,
            fgiv_a: read(state, &vid, FGIV_A)?,
            fgiv_r: read(state, &vid, FGIV_R)?,
            verdict: read(state, &vid, VERIFY)?,
            id: vid,
        });
    }
    Ok(SeedView {
        filter: read(state, &id, FILTER)?,
        seed_response: read(state, &id, SEED_RESPONSE)?,
        decomposition,
        variants,
        seed,
    })
}

/// Whether a seed is decomposed, and whether it can be held out for FGIV-Eval (exactly 4
/// sub-instructions, all 4 variants valid): read from its decomposition and variants only,
/// since choosing the split needs nothing else.
fn eval_facts(state: &RunState, seed_id: &str) -> Result<(bool, bool), PipelineError> {
    let Some(Outcome::Done(d)) = read(state, seed_id, DECOMPOSE)? else {
        return Ok((false, false));
    };
    if d.sub_instructions.len() != 4 {
        return Ok((true, false));
    }
    for k in 0..4 {
        let v: Option<Outcome<Variant>> = read(state, &variant_id(seed_id, k), VARY)?;
        if !v.as_ref().and_then(Outcome::done).is_some_and(|v| v.valid) {
            return Ok((true, false));
        }
    }
    Ok((true, true))
}

/// The FGIV-Eval seeds: among the eligible seeds (exactly 4 sub-instructions and 4 valid
/// variants), the first `n` in an order fixed by `split_seed` — independent of sharding and
/// input order. `decomposed` sets the default `n`.
pub fn eval_seed_ids(
    eligible: &[String],
    decomposed: usize,
    opts: &BuildOptions,
) -> HashSet<String> {
    let mut order: Vec<(blake3::Hash, &String)> = eligible
        .iter()
        .map(|id| {
            let mut h = blake3::Hasher::new();
            h.update(&opts.split_seed.to_le_bytes());
            h.update(id.as_bytes());
            (h.finalize(), id)
        })
        .collect();
    order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let n = opts
        .eval_seeds
        .unwrap_or_else(|| PAPER_EVAL_SEEDS.min((decomposed / 10).max(1)));
    order
        .into_iter()
        .take(n)
        .map(|(_, id)| id.clone())
        .collect()
}

/// The data files being written: rows go straight to temporary files that replace the old
/// ones on commit, so a build holds one seed in memory, not the run.
struct Outputs {
    files: BTreeMap<&'static str, AtomicJsonl>,
}

impl Outputs {
    fn create(dir: &Path) -> Result<Self, PipelineError> {
        let mut files = BTreeMap::new();
        for path in DATA_FILES {
            let writer = AtomicJsonl::create(&dir.join(path)).map_err(|e| {
                PipelineError::Other(format!("writing {}: {e}", dir.join(path).display()))
            })?;
            files.insert(path, writer);
        }
        Ok(Self { files })
    }

    /// Appends a row to `path` (one of [`DATA_FILES`]).
    fn add(&mut self, path: &str, row: Value) -> Result<(), PipelineError> {
        let writer = self.files.get_mut(path).expect("a known data file");
        writer
            .push(&row)
            .map_err(|e| PipelineError::Other(format!("writing {path}: {e}")))
    }

    fn commit(self) -> Result<BTreeMap<String, usize>, PipelineError> {
        let mut written = BTreeMap::new();
        for (path, writer) in self.files {
            let rows = writer
                .commit()
                .map_err(|e| PipelineError::Other(format!("writing {path}: {e}")))?;
            written.insert(path.to_owned(), rows);
        }
        Ok(written)
    }
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

fn assistant(content: &str) -> Value {
    json!([{"role": "assistant", "content": content}])
}

fn sft_row(prompt: &str, response: &str, seed_id: &str, variant_id: Option<&str>) -> Value {
    json!({
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ],
        "seed_id": seed_id,
        "variant_id": variant_id,
    })
}

fn status_row<T: Serialize>(key: (&str, &str), outcome: &Outcome<T>) -> Value {
    let mut row = json!({ key.0: key.1 });
    if let (Value::Object(row), Value::Object(rest)) = (
        &mut row,
        serde_json::to_value(outcome).expect("records serialise"),
    ) {
        row.extend(rest);
    }
    row
}

/// Writes every file of the run folder `dir` from the store and returns what was written.
pub fn publish(
    dir: &Path,
    state: &RunState,
    opts: &BuildOptions,
    bad_seeds: &[Value],
) -> Result<BuildReport, PipelineError> {
    let seeds = seeds_in_scope(state, opts.shard)?;
    // Pass 1: which seeds are held out (decompositions and variants only).
    let (mut eligible, mut decomposed) = (Vec::new(), 0);
    for seed in &seeds {
        let (is_decomposed, is_eligible) = eval_facts(state, &seed.id)?;
        decomposed += usize::from(is_decomposed);
        if is_eligible {
            eligible.push(seed.id.clone());
        }
    }
    let eval_ids = eval_seed_ids(&eligible, decomposed, opts);
    let mut counts = Counts::new(bad_seeds.len());
    counts.fgiv_eval_seeds = eval_ids.len();

    let mut files = Outputs::create(dir)?;
    let mut usage = Usage::new();
    for row in bad_seeds {
        files.add("quarantine.jsonl", row.clone())?;
    }

    // Pass 2: counts and files, one seed at a time.
    for seed in seeds {
        let view = &load_seed(state, seed, opts.variant_kinds)?;
        counts.add(view);
        let seed_id = view.seed.id.as_str();
        files.add(
            "seeds.jsonl",
            serde_json::to_value(&view.seed).expect("seeds serialise"),
        )?;
        let mut rows = SeedRows {
            files: &mut files,
            usage: &mut usage,
            seed_id,
            quarantined: Vec::new(),
        };
        rows.record(&FILTER, seed_id, view.filter.as_ref())?;
        rows.record(&DECOMPOSE, seed_id, view.decomposition.as_ref())?;
        rows.record(&SEED_RESPONSE, seed_id, view.seed_response.as_ref())?;
        for v in &view.variants {
            rows.record(&VARY, &v.id, v.variant.as_ref())?;
            rows.record(&FGIV_A, &v.id, v.fgiv_a.as_ref())?;
            rows.record(&FGIV_R, &v.id, v.fgiv_r.as_ref())?;
            rows.record(&VERIFY, &v.id, v.verdict.as_ref())?;
        }
        rows.finish()?;

        // Training and evaluation data.
        let Some(seed_response) = view.response() else {
            continue;
        };
        let prompt = view.seed.prompt();
        if eval_ids.contains(seed_id) {
            eval_rows(view, &mut files)?;
            continue;
        }
        for (name, kind) in [
            ("datasets/sft_fgiv_a.jsonl", "a"),
            ("datasets/sft_fgiv_r.jsonl", "r"),
        ] {
            files.add(name, sft_row(&prompt, &seed_response.text, seed_id, None))?;
            for v in &view.variants {
                if let Some((variant, response)) = pair(v, kind, opts.keep_unverified) {
                    files.add(
                        name,
                        sft_row(&variant.prompt, response, seed_id, Some(&v.id)),
                    )?;
                }
            }
        }
        for (name, kind) in [
            ("datasets/dpo_fgiv_a.jsonl", "a"),
            ("datasets/dpo_fgiv_r.jsonl", "r"),
        ] {
            for v in &view.variants {
                if let Some((variant, response)) = pair(v, kind, opts.keep_unverified) {
                    files.add(
                        name,
                        json!({
                            "prompt": user(&variant.prompt),
                            "chosen": assistant(response),
                            "rejected": assistant(&seed_response.text),
                            "seed_id": seed_id,
                            "variant_id": v.id,
                            "edit_kind": variant.edit_kind,
                            "modified_sub_instruction": variant.modified_sub_instruction,
                        }),
                    )?;
                }
            }
        }
    }

    let written = files.commit()?;
    Ok(BuildReport {
        counts,
        usage,
        files: written,
    })
}

/// Calls and tokens per step and model.
type Usage = BTreeMap<String, BTreeMap<String, StageUsage>>;

/// One seed's rows in the per-step files, its calls in the usage, and the quarantine rows it
/// adds (written after its other rows).
struct SeedRows<'a> {
    files: &'a mut Outputs,
    usage: &'a mut Usage,
    seed_id: &'a str,
    quarantined: Vec<Value>,
}

impl SeedRows<'_> {
    /// Publishes `unit`'s result of `step`, if there is one.
    fn record<T: Serialize + Calls>(
        &mut self,
        step: &Step,
        unit: &str,
        outcome: Option<&Outcome<T>>,
    ) -> Result<(), PipelineError> {
        let Some(outcome) = outcome else {
            return Ok(());
        };
        self.tally(step, outcome.calls());
        if let Outcome::Quarantined(q) = outcome {
            self.quarantined
                .push(quarantine_row(unit, self.seed_id, step.name, q));
        }
        self.files
            .add(step.file, step_row(step, unit, self.seed_id, outcome))
    }

    fn tally(&mut self, step: &Step, calls: &[CallRecord]) {
        for c in calls {
            let u = self
                .usage
                .entry(step.name.to_owned())
                .or_default()
                .entry(c.model.clone())
                .or_default();
            u.calls += 1;
            u.prompt_tokens += c.prompt_tokens;
            u.completion_tokens += c.completion_tokens;
        }
    }

    fn finish(self) -> Result<(), PipelineError> {
        for row in self.quarantined {
            self.files.add("quarantine.jsonl", row)?;
        }
        Ok(())
    }
}

/// A step's row: keyed as the graph says, with the seed (and variant) it belongs to.
fn step_row<T: Serialize>(step: &Step, unit: &str, seed_id: &str, outcome: &Outcome<T>) -> Value {
    let mut row = status_row((step.key, unit), outcome);
    row["seed_id"] = json!(seed_id);
    if step.unit == Unit::Variant {
        row["variant_id"] = json!(unit);
    }
    if let Some(kind) = step.kind {
        row["kind"] = json!(kind);
    }
    row
}

fn quarantine_row(unit: &str, seed_id: &str, stage: &str, q: &Quarantine) -> Value {
    json!({
        "unit": unit,
        "seed_id": seed_id,
        "stage": stage,
        "kind": q.kind,
        "reason": q.reason,
        "raw": q.raw,
        "calls": q.calls.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
    })
}

/// A variant's training pair of one kind (`a` or `r`): the variant and its response, when the
/// pair is valid (or `keep_unverified`).
fn pair<'v>(
    v: &'v VariantView,
    kind: &str,
    keep_unverified: bool,
) -> Option<(&'v Variant, &'v str)> {
    let variant = v.valid()?;
    let response = if kind == "a" { &v.fgiv_a } else { &v.fgiv_r };
    let response = response.as_ref().and_then(Outcome::done)?;
    let verified = v.verdict().is_some_and(|d| {
        if kind == "a" {
            d.pair_valid_a
        } else {
            d.pair_valid_r
        }
    });
    (verified || keep_unverified).then_some((variant, response.text.as_str()))
}

/// FGIV-Eval prompts (one per variant) and balanced detection rows for one held-out seed.
fn eval_rows(view: &SeedView, files: &mut Outputs) -> Result<(), PipelineError> {
    let seed_id = view.seed.id.as_str();
    let subs = view
        .decomposition
        .as_ref()
        .and_then(Outcome::done)
        .map(|d| d.sub_instructions.clone())
        .unwrap_or_default();
    let answers: Vec<Option<&str>> = view
        .variants
        .iter()
        .map(|v| {
            let free = v
                .variant
                .as_ref()
                .and_then(Outcome::done)
                .is_some_and(|v| v.constraint.is_none());
            v.fgiv_a
                .as_ref()
                .and_then(Outcome::done)
                .filter(|_| free)
                .map(|r| r.text.as_str())
        })
        .collect();
    for (i, v) in view.variants.iter().enumerate() {
        // FGIV-Eval is the paper's free-form variants; verifiable ones only train.
        let Some(variant) = v.valid().filter(|v| v.constraint.is_none()) else {
            continue;
        };
        let mut sub_instructions = subs.clone();
        if let Some(s) = sub_instructions.get_mut(variant.k) {
            s.clone_from(&variant.modified_sub_instruction);
        }
        files.add(
            "datasets/fgiv_eval.jsonl",
            json!({
                "seed_id": seed_id,
                "variant_id": v.id,
                "prompt": variant.prompt,
                "sub_instructions": sub_instructions,
                "modified_index": variant.k,
                "original_sub_instruction": variant.original_sub_instruction,
                "modified_sub_instruction": variant.modified_sub_instruction,
                "edit_kind": variant.edit_kind,
                "seed_prompt": view.seed.prompt(),
            }),
        )?;
        // Detection: its own answer (yes) against a sibling's or the seed's (no), one each, so
        // the set stays balanced.
        let Some(own) = answers[i] else { continue };
        let use_sibling = blake3::hash(v.id.as_bytes()).as_bytes()[0].is_multiple_of(2);
        let sibling = (1..answers.len())
            .map(|d| (i + d) % answers.len())
            .find_map(|j| answers[j].map(|a| (a, view.variants[j].id.as_str())));
        let negative = match (use_sibling, sibling, view.response()) {
            (true, Some(s), _) | (false, Some(s), None) => Some(s),
            (_, _, Some(seed)) => Some((seed.text.as_str(), seed_id)),
            (_, None, None) => None,
        };
        let Some((negative, from)) = negative else {
            continue;
        };
        files.add(
            "datasets/fgiv_detection.jsonl",
            json!({
                "seed_id": seed_id, "variant_id": v.id, "prompt": variant.prompt,
                "response": own, "response_from": v.id, "label": "yes",
            }),
        )?;
        files.add(
            "datasets/fgiv_detection.jsonl",
            json!({
                "seed_id": seed_id, "variant_id": v.id, "prompt": variant.prompt,
                "response": negative, "response_from": from, "label": "no",
            }),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_the_seeds_the_steps_files_quarantine_and_datasets() {
        let mut expected = vec!["seeds.jsonl"];
        expected.extend(crate::graph::step_files());
        expected.push("quarantine.jsonl");
        assert_eq!(DATA_FILES[..expected.len()], expected[..]);
        assert!(
            DATA_FILES[expected.len()..]
                .iter()
                .all(|f| f.starts_with("datasets/"))
        );
    }
}
