//! FGIV-Eval: the DeMoRecon paper's own benchmark, over the held-out seeds of a pipeline run
//! (`RUN/datasets/fgiv_eval.jsonl` and `fgiv_detection.jsonl`, or the same two files from
//! anywhere).
//!
//! Two kinds of item, one eval folder:
//! - **Direct** (one per variant): the model under test answers the variant greedily; the judge
//!   answers Yes or No to whether the response attempts to address every instruction of the
//!   prompt (`fgiv.pass`). Pass rate = Yes / items. A reply that is neither is recorded as
//!   unparsed and does not count as Yes. Beyond the paper, each sub-instruction of the prompt
//!   is judged on its own (`demorecon_judge::requirement`: code checks when the requirement is
//!   code-checkable, marked so, else the judge), and accuracy is reported for the modified
//!   sub-instruction against the unmodified ones, overall and by kind of edit.
//! - **Detection** (balanced Yes/No rows): the model under test itself says, in at most three
//!   greedy tokens, whether a response follows the instruction (`fgiv.detect`); an answer is
//!   correct only if it starts with the expected word. Balanced accuracy = mean of the accuracy
//!   on Yes rows and on No rows.
//!
//! Not here: making the sets (the pipeline's `build`) or drawing results (`report`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use demorecon_judge::checkable::checks_for;
use demorecon_judge::requirement::{Question, by_code, by_judge};
use demorecon_judge::{AskError, PromptSet, ask::unit_seed};
use demorecon_llm::ChatRequest;
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bench::{BenchError, Benchmark, Judge, greedy_request};
use crate::record::{Headline, ItemRecord, Summary};

/// The file names inside a data folder (a run's `datasets/`).
pub const EVAL_FILE: &str = "fgiv_eval.jsonl";
pub const DETECTION_FILE: &str = "fgiv_detection.jsonl";

/// New tokens the model under test may spend on a detection answer.
pub const DETECTION_TOKENS: u32 = 3;

/// One FGIV-Eval prompt: a variant of a held-out seed, as `build` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalRow {
    pub seed_id: String,
    pub variant_id: String,
    pub prompt: String,
    pub sub_instructions: Vec<String>,
    pub modified_index: usize,
    #[serde(default)]
    pub original_sub_instruction: String,
    pub modified_sub_instruction: String,
    pub edit_kind: String,
}

/// One detection row: does `response` follow `prompt`? `label` is the expected answer.
#[derive(Debug, Clone, Deserialize)]
pub struct DetectionRow {
    pub seed_id: String,
    pub variant_id: String,
    pub prompt: String,
    pub response: String,
    #[serde(default)]
    pub response_from: String,
    pub label: Label,
    /// The rendered detection request (filled by [`FgivEval::new`]).
    #[serde(skip)]
    messages: Vec<demorecon_llm::Message>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Yes,
    No,
}

impl Label {
    fn word(self) -> &'static str {
        match self {
            Label::Yes => "yes",
            Label::No => "no",
        }
    }
}

/// An item of either kind.
#[derive(Debug, Clone)]
pub enum Item {
    Direct(EvalRow),
    Detect(DetectionRow),
}

/// Where the two files are: `DIR/datasets/` for a run folder, else `DIR` itself.
pub fn data_dir(path: &Path) -> PathBuf {
    let datasets = path.join("datasets");
    if datasets.join(EVAL_FILE).is_file() {
        datasets
    } else {
        path.to_owned()
    }
}

/// Reads the direct items and, when the file is there, the detection items of `dir` (a run
/// folder or a data folder).
pub fn load(path: &Path) -> Result<Vec<Item>, BenchError> {
    let dir = data_dir(path);
    let eval_path = dir.join(EVAL_FILE);
    if !eval_path.is_file() {
        return Err(BenchError::Input(format!(
            "{} not found: pass a run folder (with datasets/{EVAL_FILE}) or a folder holding {EVAL_FILE} and {DETECTION_FILE}",
            eval_path.display()
        )));
    }
    if std::fs::metadata(&eval_path).is_ok_and(|m| m.len() == 0) {
        return Err(BenchError::Input(format!(
            "{} is empty: the run held out no seed with enough valid variants (see its manifest's fgiv_eval_seeds; rerun with more seeds or --eval-seeds)",
            eval_path.display()
        )));
    }
    let mut items = Vec::new();
    for (line, row) in demorecon_io::read_jsonl::<EvalRow>(&eval_path)? {
        if row.modified_index >= row.sub_instructions.len() {
            return Err(demorecon_io::JsonlError::at(
                &eval_path,
                line,
                format!(
                    "modified_index {} is past the {} sub_instructions",
                    row.modified_index,
                    row.sub_instructions.len()
                ),
            )
            .into());
        }
        items.push(Item::Direct(row));
    }
    let detection_path = dir.join(DETECTION_FILE);
    if detection_path.is_file() && std::fs::metadata(&detection_path).is_ok_and(|m| m.len() > 0) {
        for (_, row) in demorecon_io::read_jsonl::<DetectionRow>(&detection_path)? {
            items.push(Item::Detect(row));
        }
    }
    Ok(items)
}

/// Parses a Yes/No reply: the first word, ignoring case, markdown emphasis and punctuation
/// around it. Anything else is `None` (unparsed).
pub fn parse_yes_no(reply: &str) -> Option<bool> {
    let first = reply
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .split(|c: char| !c.is_alphanumeric())
        .next()?
        .to_lowercase();
    match first.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Whether a detection answer starts with the expected word (case-insensitive, after leading
/// whitespace), as the paper scores it.
pub fn detection_correct(answer: &str, label: Label) -> bool {
    answer.trim_start().to_lowercase().starts_with(label.word())
}

/// FGIV-Eval on the common benchmark shape.
pub struct FgivEval {
    items: Vec<Item>,
    prompts: PromptSet,
    /// Judge every sub-instruction on its own (beyond the paper).
    pub per_sub_instruction: bool,
}

impl FgivEval {
    /// Renders every detection question up front, so a broken prompt override fails here.
    pub fn new(mut items: Vec<Item>, prompts: PromptSet) -> Result<Self, BenchError> {
        for item in &mut items {
            if let Item::Detect(r) = item {
                r.messages = prompts
                    .render(
                        "fgiv",
                        "detect",
                        context! { instruction => &r.prompt, response => &r.response },
                    )
                    .map_err(|e| BenchError::Input(e.to_string()))?;
            }
        }
        Ok(FgivEval {
            items,
            prompts,
            per_sub_instruction: true,
        })
    }

    /// The prompt versions the eval's calls are made under (for the summary).
    pub fn prompt_version(&self) -> String {
        format!(
            "{} {}",
            self.prompts.version("fgiv"),
            self.prompts.version("verify")
        )
    }

    async fn score_direct(
        &self,
        row: &EvalRow,
        response: &str,
        judge: &Judge,
    ) -> Result<ItemRecord, BenchError> {
        let call_err = |source| BenchError::Call {
            what: "judge",
            id: row.variant_id.clone(),
            source,
        };
        let messages = self
            .prompts
            .render(
                "fgiv",
                "pass",
                context! { prompt => &row.prompt, response => response },
            )
            .map_err(|e| BenchError::Input(e.to_string()))?;
        let req = greedy_request(
            messages,
            16,
            &row.variant_id,
            "fgiv/pass",
            Some(self.prompts.version("fgiv")),
        );
        let reply = judge.ask(&req).await.map_err(call_err)?;
        let pass = parse_yes_no(&reply);

        let mut scores = BTreeMap::new();
        let yes = f64::from(u8::from(pass == Some(true)));
        scores.insert("pass_rate".to_owned(), [yes, 1.0]);
        scores.insert(format!("pass_{}", row.edit_kind), [yes, 1.0]);

        let mut subs = Vec::new();
        if self.per_sub_instruction {
            let (mut mod_ok, mut unmod) = (None, [0.0, 0.0]);
            for (i, text) in row.sub_instructions.iter().enumerate() {
                let verdict = self.judge_sub(row, i, text, response, judge).await?;
                let modified = i == row.modified_index;
                if let Some(sat) = verdict.0 {
                    if modified {
                        mod_ok = Some(sat);
                    } else {
                        unmod[0] += f64::from(u8::from(sat));
                        unmod[1] += 1.0;
                    }
                }
                subs.push(json!({
                    "text": text,
                    "modified": modified,
                    "satisfied": verdict.0,
                    "by": verdict.1,
                    "reason": verdict.2,
                }));
            }
            if let Some(ok) = mod_ok {
                let v = [f64::from(u8::from(ok)), 1.0];
                scores.insert("sub_modified".to_owned(), v);
                scores.insert(format!("sub_modified_{}", row.edit_kind), v);
            }
            if unmod[1] > 0.0 {
                scores.insert("sub_unmodified".to_owned(), unmod);
            }
        }
        let mut extra = BTreeMap::new();
        extra.insert("kind".to_owned(), json!("direct"));
        extra.insert("seed_id".to_owned(), json!(row.seed_id));
        extra.insert("edit_kind".to_owned(), json!(row.edit_kind));
        extra.insert(
            "modified_sub_instruction".to_owned(),
            json!(row.modified_sub_instruction),
        );
        Ok(ItemRecord {
            id: row.variant_id.clone(),
            prompt: row.prompt.clone(),
            response: response.to_owned(),
            judge_raw: vec![reply],
            verdict: json!({ "pass": pass, "sub_instructions": subs }),
            decided_by: "judge".into(),
            note: pass
                .is_none()
                .then(|| "the judge's reply is neither Yes nor No".into()),
            scores,
            extra,
        })
    }

    /// One sub-instruction's verdict: (satisfied or unparsed, decided by, reason).
    async fn judge_sub(
        &self,
        row: &EvalRow,
        i: usize,
        text: &str,
        response: &str,
        judge: &Judge,
    ) -> Result<(Option<bool>, String, String), BenchError> {
        let checks = checks_for(text);
        if !checks.is_empty() {
            let j = by_code(&checks, response);
            let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
            return Ok((
                Some(j.satisfied),
                format!("code:{}", names.join(",")),
                j.reason,
            ));
        }
        let q = Question {
            instruction: &row.prompt,
            requirement: text,
            response,
            seed: unit_seed(&format!("{}/{i}", row.variant_id), "fgiv/sub"),
        };
        match by_judge(judge.model(), &self.prompts, &q).await {
            Ok((j, calls)) => {
                if let Some(c) = calls.first() {
                    judge.note_reported(&c.model);
                }
                Ok((Some(j.satisfied), "judge".into(), j.reason))
            }
            Err(AskError::Failed(f)) => Ok((None, "judge".into(), f.reason)),
            Err(AskError::Stop(source)) => Err(BenchError::Call {
                what: "judge",
                id: row.variant_id.clone(),
                source,
            }),
            Err(AskError::Prompt(e)) => Err(BenchError::Input(e.to_string())),
        }
    }

    fn score_detect(row: &DetectionRow, answer: &str) -> ItemRecord {
        let correct = detection_correct(answer, row.label);
        let key = format!("detection_{}", row.label.word());
        let mut extra = BTreeMap::new();
        extra.insert("kind".to_owned(), json!("detection"));
        extra.insert("seed_id".to_owned(), json!(row.seed_id));
        extra.insert("label".to_owned(), json!(row.label.word()));
        extra.insert("response_from".to_owned(), json!(row.response_from));
        ItemRecord {
            id: detection_id(row),
            prompt: row.prompt.clone(),
            response: answer.to_owned(),
            judge_raw: Vec::new(),
            verdict: json!({ "correct": correct, "expected": row.label.word() }),
            decided_by: "code:starts_with_expected".into(),
            scores: BTreeMap::from([(key, [f64::from(u8::from(correct)), 1.0])]),
            note: None,
            extra,
        }
    }
}

fn detection_id(row: &DetectionRow) -> String {
    format!("{}/detect/{}", row.variant_id, row.label.word())
}

#[async_trait::async_trait]
impl Benchmark for FgivEval {
    type Item = Item;

    fn name(&self) -> &'static str {
        "fgiv"
    }

    fn items(&self) -> &[Item] {
        &self.items
    }

    fn item_id(&self, item: &Item) -> String {
        match item {
            Item::Direct(r) => r.variant_id.clone(),
            Item::Detect(r) => detection_id(r),
        }
    }

    fn request(&self, item: &Item, max_tokens: u32) -> ChatRequest {
        let version = Some(self.prompts.version("fgiv"));
        match item {
            Item::Direct(r) => greedy_request(
                vec![demorecon_llm::Message::user(r.prompt.clone())],
                max_tokens,
                &r.variant_id,
                "fgiv/answer",
                version,
            ),
            Item::Detect(r) => greedy_request(
                r.messages.clone(),
                DETECTION_TOKENS,
                &detection_id(r),
                "fgiv/detect",
                version,
            ),
        }
    }

    async fn score(
        &self,
        item: &Item,
        response: &str,
        judge: Option<&Judge>,
    ) -> Result<ItemRecord, BenchError> {
        match item {
            Item::Direct(row) => {
                let judge = judge.ok_or_else(|| {
                    BenchError::Input("FGIV-Eval's direct items need a judge".into())
                })?;
                self.score_direct(row, response, judge).await
            }
            Item::Detect(row) => Ok(Self::score_detect(row, response)),
        }
    }

    fn summarize(&self, items: &[ItemRecord]) -> Summary {
        let pass = Headline::ratio("pass_rate", "FGIV-Eval pass rate", items);
        let yes = Headline::ratio("detection_yes", "detection accuracy (Yes rows)", items);
        let no = Headline::ratio("detection_no", "detection accuracy (No rows)", items);
        let balanced = Headline::mean("detection", "detection balanced accuracy", &[&yes, &no]);
        let sub_mod = Headline::ratio("sub_modified", "modified sub-instruction followed", items);
        let sub_unmod = Headline::ratio(
            "sub_unmodified",
            "unmodified sub-instructions followed",
            items,
        );
        let mut kinds: Vec<String> = items
            .iter()
            .filter_map(|it| it.extra.get("edit_kind").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        kinds.sort();
        kinds.dedup();
        let mut by_kind = serde_json::Map::new();
        for kind in &kinds {
            let n = items
                .iter()
                .filter(|it| it.extra.get("edit_kind").and_then(Value::as_str) == Some(kind))
                .count();
            let p = Headline::ratio(&format!("pass_{kind}"), "", items);
            let m = Headline::ratio(&format!("sub_modified_{kind}"), "", items);
            by_kind.insert(
                kind.clone(),
                json!({"items": n, "pass_rate": p.value, "sub_modified": m.value}),
            );
        }
        let direct = items
            .iter()
            .filter(|it| it.extra.get("kind") == Some(&json!("direct")))
            .count();
        let unparsed_pass = items
            .iter()
            .filter(|it| it.verdict.get("pass").is_some_and(Value::is_null))
            .count();
        let unparsed_sub = items
            .iter()
            .filter_map(|it| it.verdict.get("sub_instructions").and_then(Value::as_array))
            .flatten()
            .filter(|s| s.get("satisfied").is_some_and(Value::is_null))
            .count();
        let by_code = items
            .iter()
            .filter_map(|it| it.verdict.get("sub_instructions").and_then(Value::as_array))
            .flatten()
            .filter(|s| {
                s.get("by")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.starts_with("code:"))
            })
            .count();
        let details = json!({
            "direct_items": direct,
            "detection_items": items.len() - direct,
            "by_edit_kind": by_kind,
            "unparsed_pass_replies": unparsed_pass,
            "unparsed_sub_instruction_verdicts": unparsed_sub,
            "sub_instructions_decided_by_code": by_code,
        });
        let mut summary = Summary::new(
            "fgiv",
            items.len(),
            vec![pass, balanced, yes, no, sub_mod, sub_unmod],
            details,
        );
        summary.unparsed = unparsed_pass + unparsed_sub;
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_replies() {
        for (reply, want) in [
            ("Yes", Some(true)),
            ("yes.", Some(true)),
            ("**No** — it ignores the word limit", Some(false)),
            ("  NO", Some(false)),
            ("Yes, it does.", Some(true)),
            ("Not really", None),
            ("Nope", None),
            ("Yesterday", None),
            ("", None),
            ("The response does", None),
        ] {
            assert_eq!(parse_yes_no(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn detection_needs_the_expected_word_first() {
        assert!(detection_correct("Yes", Label::Yes));
        assert!(detection_correct(" yes, it", Label::Yes));
        assert!(detection_correct("No.", Label::No));
        assert!(!detection_correct("The answer is yes", Label::Yes));
        assert!(!detection_correct("Yes", Label::No));
        // Starts-with, as the paper scores it: "Nope" starts with "no".
        assert!(detection_correct("Nope", Label::No));
    }

    #[test]
    fn load_reads_run_folders_and_reports_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("datasets");
        std::fs::create_dir_all(&ds).unwrap();
        let row = json!({"seed_id": "s", "variant_id": "s/v1", "prompt": "Write a casual SMS.",
            "sub_instructions": ["write an SMS", "be casual"], "modified_index": 1,
            "original_sub_instruction": "be polite", "modified_sub_instruction": "be casual",
            "edit_kind": "contradict", "seed_prompt": "Write a polite SMS."});
        std::fs::write(ds.join(EVAL_FILE), format!("{row}\n")).unwrap();
        let det = json!({"seed_id": "s", "variant_id": "s/v1", "prompt": "p", "response": "r",
            "response_from": "s", "label": "no"});
        std::fs::write(ds.join(DETECTION_FILE), format!("{det}\n")).unwrap();
        let items = load(dir.path()).unwrap();
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[1], Item::Detect(r) if r.label == Label::No));

        let mut bad = row.clone();
        bad["modified_index"] = json!(5);
        std::fs::write(ds.join(EVAL_FILE), format!("{row}\n{bad}\n")).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fgiv_eval.jsonl:2: modified_index 5"), "{err}");

        std::fs::write(ds.join(EVAL_FILE), "").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = load(&dir.path().join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
