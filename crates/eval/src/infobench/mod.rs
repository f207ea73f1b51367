//! InFoBench (Qin et al. 2024): 500 instructions, each broken into yes/no questions that a
//! judge model answers about a response; the score is DRFR, the share of those questions
//! answered YES.
//!
//! Three ways in, one eval folder out:
//! - generate then judge: [`InfoBench`] on the common [`Benchmark`] shape, through
//!   [`crate::bench::run`] with [`crate::bench::Responses::Generate`];
//! - judge given responses: [`read_responses`] joins a file of `{id, output}` rows (the
//!   InFoBench repo's generation format; `response` is accepted too) to the items, and its
//!   texts go to [`crate::bench::run`] as [`crate::bench::Responses::Given`];
//! - aggregate given verdicts: [`InfoBench::from_judgements`] reads the InFoBench repo's
//!   evaluation output (rows with an `eval` list of true/false/null) and makes the records and
//!   the summary without a model call.
//!
//! The judge conversation and its reply parsing are in [`protocol`]; how a verdict list turns
//! into scores and the summary, in [`score`]; the two input files, in [`files`]. The judge's
//! wording is `prompts/infobench.toml` (our own, versioned; see `demorecon_judge::prompts`).
//!
//! Not here: decomposing new instructions into questions (InFoBench ships them), or drawing
//! results (`report`).

pub mod files;
pub mod protocol;
pub mod score;

use std::collections::HashMap;
use std::path::Path;

use demorecon_judge::PromptSet;
use demorecon_llm::{ChatRequest, Message};
use serde::Deserialize;

use crate::bench::{BenchError, Benchmark, Judge, Responses, greedy_request};
use crate::record::{ItemRecord, Summary};

pub use files::{read_judgements, read_responses};
pub use protocol::{JUDGE_MAX_TOKENS, parse_reply};

/// The benchmark's name in summaries and eval folders.
pub const NAME: &str = "infobench";

/// Version of the (fixed) request the model under test answers; in its cache key. Independent
/// of the judge's prompt file, so rewording the judge never regenerates responses.
pub const ANSWER_PROMPT_VERSION: &str = "infobench-answer/1";

/// Which half of InFoBench an instruction belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Subset {
    /// `user_oriented_task_*`: 252 instructions.
    #[serde(rename = "Easy_set")]
    Easy,
    /// `domain_oriented_task_*`: 248 instructions.
    #[serde(rename = "Hard_set")]
    Hard,
}

impl Subset {
    /// The name the data files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Subset::Easy => "Easy_set",
            Subset::Hard => "Hard_set",
        }
    }

    /// The metric key of this subset's DRFR.
    pub fn key(self) -> &'static str {
        match self {
            Subset::Easy => "drfr_easy",
            Subset::Hard => "drfr_hard",
        }
    }
}

/// One InFoBench instruction with its decomposed questions, as `infobench.jsonl` has it.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub id: String,
    /// Extra input the instruction works on; empty for most Easy items.
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub category: String,
    pub instruction: String,
    pub decomposed_questions: Vec<String>,
    pub subset: Subset,
    /// One list of labels per question (Content, Format, Number, Style, Linguistic).
    pub question_label: Vec<Vec<String>>,
}

impl Item {
    /// The text the model under test answers: the instruction, then the input when there is
    /// one, laid out as the reference's generation script does (`"{instruction}\n\n{input}\n"`).
    pub fn prompt(&self) -> String {
        if self.input.is_empty() {
            self.instruction.clone()
        } else {
            format!("{}\n\n{}\n", self.instruction, self.input)
        }
    }
}

/// Reads and checks `infobench.jsonl`: every row parses, ids are unique, there is at least
/// one question, one label list per question, and labels are plain words (they become metric
/// keys). Errors name the file and line.
pub fn load_items(path: &Path) -> Result<Vec<Item>, BenchError> {
    let rows = demorecon_io::read_jsonl::<Item>(path)?;
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    for (line, item) in rows {
        let at = |message: String| -> BenchError {
            demorecon_io::JsonlError::at(path, line, message).into()
        };
        if item.id.is_empty() {
            return Err(at("empty id".into()));
        }
        if let Some(first) = seen.insert(item.id.clone(), line) {
            return Err(at(format!("id {:?} already used on line {first}", item.id)));
        }
        if item.decomposed_questions.is_empty() {
            return Err(at(format!("item {} has no decomposed_questions", item.id)));
        }
        if item.decomposed_questions.len() != item.question_label.len() {
            return Err(at(format!(
                "item {}: {} decomposed_questions but {} question_label entries",
                item.id,
                item.decomposed_questions.len(),
                item.question_label.len()
            )));
        }
        for (q, labels) in item.question_label.iter().enumerate() {
            if let Some(bad) = labels.iter().find(|l| !is_label(l)) {
                return Err(at(format!(
                    "item {} question {}: label {bad:?} is not a word of letters, digits or _",
                    item.id,
                    q + 1
                )));
            }
        }
        items.push(item);
    }
    Ok(items)
}

fn is_label(label: &str) -> bool {
    !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// InFoBench on the common benchmark shape: generation, the judge conversation per item, and
/// the DRFR summary.
pub struct InfoBench {
    items: Vec<Item>,
    prompts: PromptSet,
    /// New-token cap of each judge reply (default [`JUDGE_MAX_TOKENS`]).
    pub judge_max_tokens: u32,
}

impl InfoBench {
    /// Checks that the judge prompt renders (a broken `--prompts` override fails here, before
    /// any call).
    pub fn new(items: Vec<Item>, prompts: PromptSet) -> Result<Self, BenchError> {
        protocol::first_turn(&prompts, "input", "output", "question")
            .map_err(|e| BenchError::Input(e.to_string()))?;
        Ok(InfoBench {
            items,
            prompts,
            judge_max_tokens: JUDGE_MAX_TOKENS,
        })
    }

    /// [`load_items`] then [`InfoBench::new`].
    pub fn load(path: &Path, prompts: PromptSet) -> Result<Self, BenchError> {
        Self::new(load_items(path)?, prompts)
    }

    /// Keeps only the first `n` items (`--limit`). Read a responses or judgements file after
    /// this, so that it is joined to the items that remain.
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
    }

    /// The judge prompt's version tag, for [`Judge::new`] and the summary.
    pub fn prompt_version(&self) -> String {
        self.prompts.version(NAME).to_owned()
    }

    /// The responses of a responses file (`--responses`), joined to the items by id, ready
    /// for [`crate::bench::run`].
    pub fn given_responses(&self, path: &Path) -> Result<Responses, BenchError> {
        Ok(Responses::Given {
            source: path.to_owned(),
            texts: read_responses(path, &self.items)?,
        })
    }

    /// The scored records and the summary from a file of given judge verdicts (the InFoBench
    /// repo's evaluation output), joined to the items by id; no model is asked. Records say
    /// `decided_by: "given"`, and the summary names the file as its responses' source.
    pub fn from_judgements(&self, path: &Path) -> Result<(Summary, Vec<ItemRecord>), BenchError> {
        let given = read_judgements(path, &self.items)?;
        let records: Vec<ItemRecord> = self
            .items
            .iter()
            .zip(given)
            .map(|(item, g)| score::record(item, g.output, g.eval, Vec::new(), "given"))
            .collect();
        let mut summary = score::summarize(&records);
        summary.responses = Some(path.display().to_string());
        Ok((summary, records))
    }
}

#[async_trait::async_trait]
impl Benchmark for InfoBench {
    type Item = Item;

    fn name(&self) -> &'static str {
        NAME
    }

    fn items(&self) -> &[Item] {
        &self.items
    }

    fn item_id(&self, item: &Item) -> String {
        item.id.clone()
    }

    fn request(&self, item: &Item, max_tokens: u32) -> ChatRequest {
        greedy_request(
            vec![Message::user(item.prompt())],
            max_tokens,
            &item.id,
            "infobench/answer",
            Some(ANSWER_PROMPT_VERSION),
        )
    }

    async fn score(
        &self,
        item: &Item,
        response: &str,
        judge: Option<&Judge>,
    ) -> Result<ItemRecord, BenchError> {
        let judge =
            judge.ok_or_else(|| BenchError::Input("InFoBench needs a judge model".into()))?;
        let (verdicts, raw) =
            protocol::converse(&self.prompts, judge, item, response, self.judge_max_tokens).await?;
        Ok(score::record(
            item,
            response.to_owned(),
            verdicts,
            raw,
            "judge",
        ))
    }

    fn summarize(&self, items: &[ItemRecord]) -> Summary {
        score::summarize(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use demorecon_testkit::shared::shared_data;

    pub(crate) fn item(id: &str, input: &str, questions: &[(&str, &[&str])]) -> Item {
        Item {
            id: id.into(),
            input: input.into(),
            category: "test".into(),
            instruction: format!("Instruction of {id}."),
            decomposed_questions: questions.iter().map(|(q, _)| q.to_string()).collect(),
            subset: if id.starts_with("domain") {
                Subset::Hard
            } else {
                Subset::Easy
            },
            question_label: questions
                .iter()
                .map(|(_, l)| l.iter().map(|s| s.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn the_shared_data_loads() {
        let items = load_items(&shared_data().join("infobench/infobench.jsonl")).unwrap();
        assert_eq!(items.len(), 500);
        let easy = items.iter().filter(|i| i.subset == Subset::Easy).count();
        assert_eq!((easy, items.len() - easy), (252, 248));
        let questions: usize = items.iter().map(|i| i.decomposed_questions.len()).sum();
        assert_eq!(questions, 2250);
    }

    /// DRFR of the third-party GPT-4 judgements equals what `scripts/infobench/drfr.py` (the
    /// reference's `bool_ratio` counting, per subset and label too) prints for the same file:
    /// `python3 scripts/infobench/drfr.py ../shared/data/infobench/third_party_gpt4_outputs_with_gpt4_eval.jsonl`.
    #[test]
    fn given_judgements_match_the_reference_aggregation() {
        let data = shared_data().join("infobench");
        let bench = InfoBench::load(&data.join("infobench.jsonl"), PromptSet::builtin()).unwrap();
        let path = data.join("third_party_gpt4_outputs_with_gpt4_eval.jsonl");
        let (summary, records) = bench.from_judgements(&path).unwrap();
        let expected: [(&str, [f64; 2]); 8] = [
            ("drfr", [1971.0, 2250.0]),
            ("drfr_easy", [610.0, 690.0]),
            ("drfr_hard", [1361.0, 1560.0]),
            ("drfr_label_Content", [1273.0, 1395.0]),
            ("drfr_label_Format", [714.0, 794.0]),
            ("drfr_label_Number", [309.0, 419.0]),
            ("drfr_label_Style", [168.0, 190.0]),
            ("drfr_label_Linguistic", [134.0, 168.0]),
        ];
        for (key, [num, den]) in expected {
            let h = summary.metric(key).unwrap();
            assert_eq!((h.num, h.den), (Some(num), Some(den)), "{key}");
            assert_eq!(h.value, Some(num / den), "{key}");
        }
        let keys: Vec<&str> = summary.headline.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, expected.map(|(k, _)| k));
        assert_eq!(
            format!("{:.3}", summary.metric("drfr").unwrap().value.unwrap()),
            "0.876"
        );
        assert_eq!(summary.items, 500);
        assert_eq!(summary.unparsed, 0);
        assert_eq!(summary.details["instructions_stopped_early"], 0);
        assert_eq!(
            summary.responses.as_deref(),
            Some(path.display().to_string().as_str())
        );
        assert!(
            records
                .iter()
                .all(|r| r.decided_by == "given" && r.judge_raw.is_empty())
        );
        assert_eq!(records[0].id, "user_oriented_task_167");
        assert_eq!(records[0].verdict, serde_json::json!([true, true, true]));
        assert!(records[0].response.starts_with("\"Balancing"));
    }

    #[tokio::test]
    async fn given_responses_are_judged_through_the_common_run() {
        use crate::bench::{RunOptions, run};
        use crate::infobench::protocol::tests::Scripted;
        let items = vec![
            item(
                "user_oriented_task_1",
                "",
                &[("Q1?", &["Content"]), ("Q2?", &["Format"])],
            ),
            item(
                "domain_oriented_task_1",
                "in",
                &[("Q1?", &["Number"]), ("Q2?", &["Style"])],
            ),
        ];
        let bench = InfoBench::new(items, PromptSet::builtin()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"domain_oriented_task_1\",\"output\":\"B\"}\n{\"id\":\"user_oriented_task_1\",\"output\":\"A\"}\n",
        )
        .unwrap();
        let model = Scripted::new(&["Yes", "No", "Well...", "YES"]);
        let judge = Judge::new(model.clone(), None, &bench.prompt_version());
        let opts = RunOptions {
            concurrency: 1,
            progress: false,
            ..RunOptions::default()
        };
        let responses = bench.given_responses(&path).unwrap();
        let (summary, records) = run(&bench, responses, Some(&judge), opts).await.unwrap();
        assert_eq!(records[0].response, "A");
        assert_eq!(records[0].verdict, serde_json::json!([true, false]));
        assert_eq!(records[1].verdict, serde_json::json!([null]));
        assert_eq!(records[1].judge_raw, vec!["Well..."]);
        assert_eq!(records[1].decided_by, "judge");
        let drfr = summary.metric("drfr").unwrap();
        assert_eq!((drfr.num, drfr.den), (Some(1.0), Some(3.0)));
        assert_eq!(summary.unparsed, 1);
        assert_eq!(summary.details["not_asked"], 1);
        assert_eq!(model.seen().len(), 3);
        assert!(
            summary
                .judge
                .unwrap()
                .prompt_version
                .unwrap()
                .starts_with("infobench/1+")
        );

        let opts = RunOptions {
            progress: false,
            ..RunOptions::default()
        };
        let responses = bench.given_responses(&path).unwrap();
        let err = run(&bench, responses, None, opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a judge"), "{err}");
    }

    #[test]
    fn bad_items_are_errors_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("items.jsonl");
        let good = r#"{"id":"a","input":"","instruction":"Do.","decomposed_questions":["Q?"],"subset":"Easy_set","question_label":[["Content"]]}"#;
        for (bad, want) in [
            (
                r#"{"id":"b","input":"","instruction":"Do.","decomposed_questions":["Q?","R?"],"subset":"Easy_set","question_label":[["Content"]]}"#,
                "2 decomposed_questions but 1 question_label",
            ),
            (
                r#"{"id":"b","input":"","instruction":"Do.","decomposed_questions":["Q?"],"subset":"Medium_set","question_label":[["Content"]]}"#,
                "Medium_set",
            ),
            (
                r#"{"id":"a","input":"","instruction":"Do.","decomposed_questions":["Q?"],"subset":"Hard_set","question_label":[["Content"]]}"#,
                "already used on line 1",
            ),
            (
                r#"{"id":"b","input":"","instruction":"Do.","decomposed_questions":[],"subset":"Hard_set","question_label":[]}"#,
                "no decomposed_questions",
            ),
            (
                r#"{"id":"b","input":"","instruction":"Do.","decomposed_questions":["Q?"],"subset":"Hard_set","question_label":[["Con tent"]]}"#,
                "label \"Con tent\"",
            ),
            ("{not json", "items.jsonl:2:"),
        ] {
            std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
            let err = load_items(&p).unwrap_err().to_string();
            assert!(err.contains("items.jsonl:2:"), "{err}");
            assert!(err.contains(want), "{want:?} not in {err}");
        }
        std::fs::write(&p, format!("{good}\n")).unwrap();
        assert_eq!(load_items(&p).unwrap().len(), 1);
    }

    #[test]
    fn the_request_adds_the_input_only_when_there_is_one() {
        let bench = InfoBench::new(
            vec![
                item("user_oriented_task_1", "", &[("Q?", &["Content"])]),
                item(
                    "user_oriented_task_2",
                    "Some input.",
                    &[("Q?", &["Content"])],
                ),
            ],
            PromptSet::builtin(),
        )
        .unwrap();
        let r0 = bench.request(&bench.items()[0], 100);
        assert_eq!(
            r0.messages,
            vec![Message::user("Instruction of user_oriented_task_1.")]
        );
        assert_eq!(r0.sampling.temperature, 0.0);
        assert_eq!(r0.sampling.max_tokens, 100);
        assert_eq!(r0.prompt_version.as_deref(), Some(ANSWER_PROMPT_VERSION));
        let r1 = bench.request(&bench.items()[1], 100);
        assert_eq!(
            r1.messages[0].content,
            "Instruction of user_oriented_task_2.\n\nSome input.\n"
        );
        assert_ne!(r0.sampling.seed, r1.sampling.seed);
    }
}
