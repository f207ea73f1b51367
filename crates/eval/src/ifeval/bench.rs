//! IFEval on the common benchmark shape ([`crate::bench::Benchmark`]): the request per prompt
//! is [`super::generate::request_for`], scoring is [`super::evaluate`] (one parallel batch,
//! strict and loose), and each row becomes an [`ItemRecord`] whose scores feed the four
//! headline metrics. The summary keeps lm-eval's metric names and the reference's `strict` /
//! `loose` blocks at the top level, so `summary.json` still compares field by field with the
//! reference implementation's own summary; the reference's row files are rebuilt from the
//! records by [`evaluation_from`].

use std::collections::BTreeMap;

use demorecon_llm::ChatRequest;
use serde_json::json;

use super::generate::{GenerateOptions, request_for};
use super::{
    EvalError, Evaluation, InputRow, RowResult, ScoreOptions, Summary as IfevalSummary,
    constraints_for, evaluate, score_row, strip_think, summarize,
};
use crate::bench::{BenchError, Benchmark, Judge};
use crate::record::{Headline, ItemRecord, Summary};

/// The four headline metrics: key, label.
pub const HEADLINE: [(&str, &str); 4] = [
    ("prompt_strict", "IFEval prompt-level strict"),
    ("inst_strict", "IFEval instruction-level strict"),
    ("prompt_loose", "IFEval prompt-level loose"),
    ("inst_loose", "IFEval instruction-level loose"),
];

/// IFEval over a prompt file.
pub struct Ifeval {
    inputs: Vec<InputRow>,
    opts: ScoreOptions,
}

impl Ifeval {
    pub fn new(inputs: Vec<InputRow>, opts: ScoreOptions) -> Self {
        Ifeval { inputs, opts }
    }

    fn record(&self, row: &InputRow, text: &str, strict: &[bool], loose: &[bool]) -> ItemRecord {
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64;
        let n = strict.len() as f64;
        let all = |v: &[bool]| f64::from(u8::from(v.iter().all(|&b| b)));
        let scores = BTreeMap::from([
            ("prompt_strict".to_owned(), [all(strict), 1.0]),
            ("inst_strict".to_owned(), [count(strict), n]),
            ("prompt_loose".to_owned(), [all(loose), 1.0]),
            ("inst_loose".to_owned(), [count(loose), n]),
        ]);
        let extra = BTreeMap::from([
            ("key".to_owned(), json!(row.key)),
            (
                "instruction_id_list".to_owned(),
                json!(row.instruction_id_list),
            ),
        ]);
        ItemRecord {
            id: row.key.to_string(),
            prompt: row.prompt.clone(),
            response: text.to_owned(),
            judge_raw: Vec::new(),
            verdict: json!({ "strict": strict, "loose": loose }),
            decided_by: "code:ifeval".into(),
            scores,
            note: None,
            extra,
        }
    }
}

fn eval_err(e: EvalError) -> BenchError {
    BenchError::Input(e.to_string())
}

#[async_trait::async_trait]
impl Benchmark for Ifeval {
    type Item = InputRow;

    fn name(&self) -> &'static str {
        "ifeval"
    }

    fn items(&self) -> &[InputRow] {
        &self.inputs
    }

    fn item_id(&self, item: &InputRow) -> String {
        item.key.to_string()
    }

    fn request(&self, item: &InputRow, max_tokens: u32) -> ChatRequest {
        request_for(
            item,
            &GenerateOptions {
                max_tokens,
                concurrency: 1,
            },
        )
    }

    async fn score(
        &self,
        item: &InputRow,
        response: &str,
        _judge: Option<&Judge>,
    ) -> Result<ItemRecord, BenchError> {
        let text = if self.opts.strip_think {
            strip_think(response)
        } else {
            response
        };
        let (s, l) = score_row(&constraints_for(item).map_err(eval_err)?, text);
        Ok(self.record(item, text, &s, &l))
    }

    fn score_batch(&self, responses: &[String]) -> Option<Result<Vec<ItemRecord>, BenchError>> {
        Some(
            evaluate(&self.inputs, responses, self.opts)
                .map_err(eval_err)
                .map(|ev| {
                    self.inputs
                        .iter()
                        .zip(ev.strict.iter().zip(&ev.loose))
                        .map(|(row, (s, l))| {
                            self.record(
                                row,
                                &s.response,
                                &s.follow_instruction_list,
                                &l.follow_instruction_list,
                            )
                        })
                        .collect()
                }),
        )
    }

    fn summarize(&self, items: &[ItemRecord]) -> Summary {
        let ev = evaluation_from(items);
        let headline = HEADLINE
            .iter()
            .map(|(k, label)| Headline::ratio(k, label, items))
            .collect();
        let mut summary = Summary::new("ifeval", items.len(), headline, json!({}));
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&ev.summary) {
            summary.extra = map;
        }
        summary
    }
}

/// The reference's strict and loose rows and summary, rebuilt from IFEval item records.
pub fn evaluation_from(items: &[ItemRecord]) -> Evaluation {
    let rows = |mode: &str| -> Vec<RowResult> {
        items
            .iter()
            .map(|it| {
                let list: Vec<bool> = it
                    .verdict
                    .get(mode)
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                RowResult {
                    follow_all_instructions: list.iter().all(|&b| b),
                    follow_instruction_list: list,
                    instruction_id_list: it
                        .extra
                        .get("instruction_id_list")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default(),
                    prompt: it.prompt.clone(),
                    response: it.response.clone(),
                }
            })
            .collect()
    };
    let (strict, loose) = (rows("strict"), rows("loose"));
    let (s, l) = (summarize(&strict), summarize(&loose));
    Evaluation {
        summary: IfevalSummary {
            prompt_level_strict_acc: s.prompt_level_accuracy,
            inst_level_strict_acc: s.instruction_level_accuracy,
            prompt_level_loose_acc: l.prompt_level_accuracy,
            inst_level_loose_acc: l.instruction_level_accuracy,
            strict: s,
            loose: l,
        },
        strict,
        loose,
    }
}
