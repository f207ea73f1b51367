//! FollowBench (Jiang et al. 2024) on the common benchmark shape: multi-level fine-grained
//! constraints, scored as HSR / SSR per level and CSL per category ([`metrics`]).
//!
//! Flow: [`load`] reads the six data files (`{type}_constraints.jsonl`, errors name the file
//! and line) into the 820 evaluated items (levels 1–5; id `{type}/{example_id}/L{level}`);
//! [`read_responses`] joins a folder in FollowBench's output layout (one
//! `{type}_constraint.jsonl` per category, `prompt_new` or `prompt` + `choices[0].message.content`)
//! to the items by exact instruction text; [`FollowBench`] scores each item by the
//! reference's rule when one applies (`demorecon_checks::followbench`, `decided_by:
//! "rule:NAME"`) and otherwise by the LLM judge over the item's constraint-evolution path
//! ([`judge`], `decided_by: "judge"`). With [`Options::rules_only`] judge items are recorded
//! unscored (`decided_by: "none"`); with [`Options::reask_strict`] an unparseable judge reply
//! is asked once more with the stricter template before it is recorded as unparsed. Unparsed
//! replies are reported and left out of every total.
//!
//! Not here: generating responses or running the eval (`crate::bench::run`), or drawing
//! results (`report`).

pub mod judge;
pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use demorecon_checks::followbench::Rule;
use demorecon_io::JsonlError;
use demorecon_judge::PromptSet;
use demorecon_llm::{ChatRequest, Message};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bench::{BenchError, Benchmark, Judge, Responses, greedy_request};
use crate::record::{ItemRecord, Summary};

/// FollowBench's constraint categories, in its order (also the data files' prefixes).
pub const CONSTRAINT_TYPES: [&str; 6] = [
    "content",
    "situation",
    "style",
    "format",
    "example",
    "mixed",
];

/// The data file of a category: `{type}_constraints.jsonl`.
pub fn data_file(dir: &Path, constraint_type: &str) -> PathBuf {
    dir.join(format!("{constraint_type}_constraints.jsonl"))
}

/// The responses file of a category in FollowBench's output layout: `{type}_constraint.jsonl`.
pub fn responses_file(dir: &Path, constraint_type: &str) -> PathBuf {
    dir.join(format!("{constraint_type}_constraint.jsonl"))
}

/// How many levels FollowBench has above the initial instruction.
pub const MAX_LEVEL: u32 = 5;

/// One evaluated FollowBench item (a level ≥ 1 instruction).
#[derive(Debug, Clone)]
pub struct Item {
    /// `{constraint_type}/{example_id}/L{level}`.
    pub id: String,
    /// The data file's category (`content` … `mixed`).
    pub constraint_type: String,
    pub example_id: u64,
    pub level: u32,
    pub source: String,
    pub instruction: String,
    pub target: String,
    /// The reference's rule for this item, or `None` when the judge decides it.
    pub rule: Option<Rule>,
    /// Judge items: the group's instructions of levels 0..=level, in order. Empty for rule
    /// items.
    pub evolution: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DataRow {
    example_id: u64,
    #[serde(default)]
    source: String,
    level: u32,
    instruction: String,
    #[serde(default)]
    target: Option<String>,
}

/// Reads all six categories from `dir` (e.g. `…/followbench`).
pub fn load(dir: &Path) -> Result<Vec<Item>, BenchError> {
    load_types(dir, &CONSTRAINT_TYPES)
}

/// Reads the given categories from `dir`, in the order given.
pub fn load_types(dir: &Path, types: &[&str]) -> Result<Vec<Item>, BenchError> {
    let mut items = Vec::new();
    for t in types {
        items.extend(load_file(&data_file(dir, t), t)?);
    }
    Ok(items)
}

fn load_file(path: &Path, constraint_type: &str) -> Result<Vec<Item>, BenchError> {
    let rows: Vec<(usize, DataRow)> = demorecon_io::read_jsonl(path)?;
    let mut by_level: HashMap<(u64, u32), (usize, &DataRow)> = HashMap::new();
    for (line, row) in &rows {
        if row.level > MAX_LEVEL {
            return Err(
                JsonlError::at(path, *line, format!("level {} is above 5", row.level)).into(),
            );
        }
        if let Some((first, _)) = by_level.insert((row.example_id, row.level), (*line, row)) {
            return Err(JsonlError::at(
                path,
                *line,
                format!(
                    "example_id {} level {} appears twice (first on line {first})",
                    row.example_id, row.level
                ),
            )
            .into());
        }
    }
    let mut items = Vec::new();
    for (line, row) in &rows {
        if row.level == 0 {
            continue;
        }
        let at = |message: String| BenchError::from(JsonlError::at(path, *line, message));
        if row.instruction.trim().is_empty() {
            return Err(at("empty instruction".into()));
        }
        let id = format!("{constraint_type}/{}/L{}", row.example_id, row.level);
        let target = row.target.clone().unwrap_or_default();
        let rule = Rule::for_item(constraint_type, &row.source, row.example_id);
        let mut evolution = Vec::new();
        match rule {
            Some(rule) => {
                // A malformed target fails here, not halfway through an eval.
                rule.check("", &target, row.level)
                    .map_err(|e| at(format!("{id}: {e}")))?;
            }
            None => {
                for level in 0..=row.level {
                    let (_, r) = by_level.get(&(row.example_id, level)).ok_or_else(|| {
                        at(format!(
                            "{id} goes to the judge, whose prompt needs every level 0..{} of example_id {}; level {level} is missing",
                            row.level, row.example_id
                        ))
                    })?;
                    evolution.push(r.instruction.clone());
                }
            }
        }
        items.push(Item {
            id,
            constraint_type: constraint_type.to_owned(),
            example_id: row.example_id,
            level: row.level,
            source: row.source.clone(),
            instruction: row.instruction.clone(),
            target,
            rule,
            evolution,
        });
    }
    if items.is_empty() {
        return Err(BenchError::Input(format!(
            "{}: no item of level 1-5",
            path.display()
        )));
    }
    Ok(items)
}

/// The instruction and response text of one row of a responses file.
fn response_row(value: &Value) -> Result<(&str, &str), &'static str> {
    let prompt = ["prompt_new", "prompt", "instruction"]
        .iter()
        .find_map(|k| value.get(*k).and_then(Value::as_str))
        .ok_or("no \"prompt_new\" (or \"prompt\") string")?;
    let text = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .or_else(|| {
            ["response", "generation", "output"]
                .iter()
                .find_map(|k| value.get(*k).and_then(Value::as_str))
        })
        .ok_or("no response text (\"choices\"[0].message.content, or \"response\")")?;
    Ok((prompt, text))
}

/// Reads the responses for `items` from `dir` in FollowBench's output layout and returns
/// them in item order. Joined by exact instruction text (the first row wins when a text
/// repeats); items without a response are an error naming them.
pub fn read_responses(dir: &Path, items: &[Item]) -> Result<Vec<String>, BenchError> {
    let mut types: Vec<&str> = items.iter().map(|it| it.constraint_type.as_str()).collect();
    types.dedup();
    let mut by_type: HashMap<String, HashMap<String, String>> = HashMap::new();
    for t in types {
        if by_type.contains_key(t) {
            continue;
        }
        let path = responses_file(dir, t);
        if !path.is_file() {
            return Err(BenchError::Input(format!(
                "{} not found: a FollowBench responses folder holds one {{type}}_constraint.jsonl per category",
                path.display()
            )));
        }
        let mut map = HashMap::new();
        for (line, value) in demorecon_io::read_jsonl_values(&path)? {
            let (prompt, text) =
                response_row(&value).map_err(|m| JsonlError::at(&path, line, m))?;
            map.entry(prompt.to_owned())
                .or_insert_with(|| text.to_owned());
        }
        by_type.insert(t.to_owned(), map);
    }
    let mut missing = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        match by_type
            .get(&it.constraint_type)
            .and_then(|m| m.get(&it.instruction))
        {
            Some(text) => out.push(text.clone()),
            None => missing.push(it.id.as_str()),
        }
    }
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(5)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let more = if missing.len() > 5 { ", …" } else { "" };
        return Err(BenchError::Input(format!(
            "{} of {} items have no response in {} (joined by exact instruction text): {shown}{more}",
            missing.len(),
            items.len(),
            dir.display()
        )));
    }
    Ok(out)
}

/// Writes `texts` (one per item, in item order) into `dir` in FollowBench's output layout
/// (`{type}_constraint.jsonl`, rows `{"prompt_new", "choices": [{"message": {"content"}}]}`),
/// so the reference's own scripts can read generated responses. Returns the files written.
pub fn write_responses(
    dir: &Path,
    items: &[Item],
    texts: &[String],
) -> std::io::Result<Vec<PathBuf>> {
    if items.len() != texts.len() {
        return Err(std::io::Error::other(format!(
            "{} responses for {} items",
            texts.len(),
            items.len()
        )));
    }
    let mut files: Vec<(String, demorecon_io::AtomicJsonl)> = Vec::new();
    for (it, text) in items.iter().zip(texts) {
        let i = match files.iter().position(|(t, _)| *t == it.constraint_type) {
            Some(i) => i,
            None => {
                let f =
                    demorecon_io::AtomicJsonl::create(&responses_file(dir, &it.constraint_type))?;
                files.push((it.constraint_type.clone(), f));
                files.len() - 1
            }
        };
        files[i].1.push(&json!({
            "prompt_new": it.instruction,
            "choices": [{"message": {"content": text}}],
        }))?;
    }
    let mut paths = Vec::new();
    for (t, f) in files {
        f.commit()?;
        paths.push(responses_file(dir, &t));
    }
    Ok(paths)
}

/// Scoring options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Score rule items only; judge items are recorded unscored.
    pub rules_only: bool,
    /// Re-ask the judge once with the stricter template when its reply does not parse.
    pub reask_strict: bool,
    /// New-token cap of a judge reply (the reference uses 1024).
    pub judge_max_tokens: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rules_only: false,
            reask_strict: false,
            judge_max_tokens: 1024,
        }
    }
}

/// FollowBench on the common benchmark shape.
pub struct FollowBench {
    items: Vec<Item>,
    prompts: PromptSet,
    opts: Options,
}

impl FollowBench {
    /// Checks that both judge templates render (so a broken `--prompts` override fails here).
    pub fn new(items: Vec<Item>, prompts: PromptSet, opts: Options) -> Result<Self, BenchError> {
        if let Some(item) = items.iter().find(|it| it.rule.is_none()) {
            for t in [judge::Template::Judge, judge::Template::Strict] {
                judge::request(&prompts, t, item, "", opts.judge_max_tokens)
                    .map_err(|e| BenchError::Input(e.to_string()))?;
            }
        }
        Ok(FollowBench {
            items,
            prompts,
            opts,
        })
    }

    /// [`load`] + [`FollowBench::new`].
    pub fn load(dir: &Path, prompts: PromptSet, opts: Options) -> Result<Self, BenchError> {
        Self::new(load(dir)?, prompts, opts)
    }

    /// The judge prompt's version tag (for [`Judge::new`] and the summary).
    pub fn prompt_version(&self) -> String {
        self.prompts.version(judge::PROMPT_FILE).to_owned()
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    /// Responses read from a folder in FollowBench's layout, for [`crate::bench::run`].
    pub fn given_responses(&self, dir: &Path) -> Result<Responses, BenchError> {
        Ok(Responses::Given {
            source: dir.to_owned(),
            texts: read_responses(dir, &self.items)?,
        })
    }

    /// Rule-checked items per category.
    pub fn rule_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for it in self.items.iter().filter(|it| it.rule.is_some()) {
            *out.entry(it.constraint_type.clone()).or_default() += 1;
        }
        out
    }

    fn record(&self, item: &Item, response: &str) -> ItemRecord {
        let extra = BTreeMap::from([
            ("constraint_type".to_owned(), json!(item.constraint_type)),
            ("example_id".to_owned(), json!(item.example_id)),
            ("level".to_owned(), json!(item.level)),
            ("source".to_owned(), json!(item.source)),
        ]);
        ItemRecord {
            id: item.id.clone(),
            prompt: item.instruction.clone(),
            response: response.to_owned(),
            extra,
            ..Default::default()
        }
    }

    async fn ask(
        &self,
        judge: &Judge,
        template: judge::Template,
        item: &Item,
        response: &str,
    ) -> Result<String, BenchError> {
        let req = judge::request(
            &self.prompts,
            template,
            item,
            response,
            self.opts.judge_max_tokens,
        )
        .map_err(|e| BenchError::Input(e.to_string()))?;
        judge.ask(&req).await.map_err(|source| BenchError::Call {
            what: "judge",
            id: item.id.clone(),
            source,
        })
    }
}

/// An item's scores: `[hard, 1]` and `[met, L]`, per level and overall.
fn scores(level: u32, met: usize) -> BTreeMap<String, [f64; 2]> {
    let l = f64::from(level);
    let met = met as f64;
    let hard = f64::from(u8::from(met >= l));
    BTreeMap::from([
        (format!("hsr_l{level}"), [hard, 1.0]),
        (format!("ssr_l{level}"), [met, l]),
        ("hsr".to_owned(), [hard, 1.0]),
        ("ssr".to_owned(), [met, l]),
    ])
}

#[async_trait::async_trait]
impl Benchmark for FollowBench {
    type Item = Item;

    fn name(&self) -> &'static str {
        "followbench"
    }

    fn items(&self) -> &[Item] {
        &self.items
    }

    fn item_id(&self, item: &Item) -> String {
        item.id.clone()
    }

    fn request(&self, item: &Item, max_tokens: u32) -> ChatRequest {
        greedy_request(
            vec![Message::user(item.instruction.clone())],
            max_tokens,
            &item.id,
            "followbench/answer",
            None,
        )
    }

    async fn score(
        &self,
        item: &Item,
        response: &str,
        judge: Option<&Judge>,
    ) -> Result<ItemRecord, BenchError> {
        let mut rec = self.record(item, response);
        if let Some(rule) = item.rule {
            let v = rule
                .check(response, &item.target, item.level)
                .map_err(|e| BenchError::Input(format!("{}: {e}", item.id)))?;
            let met = if v.pass { item.level as usize } else { 0 };
            rec.decided_by = v.rule.to_owned();
            rec.verdict = json!({ "hard": v.pass, "met": met, "of": item.level });
            rec.scores = scores(item.level, met);
            return Ok(rec);
        }
        if self.opts.rules_only {
            rec.decided_by = "none".into();
            rec.note = Some("not scored: a judge item, and the eval ran with rules only".into());
            return Ok(rec);
        }
        let judge = judge.ok_or_else(|| {
            BenchError::Input(format!(
                "FollowBench item {} needs the judge (or run with rules only)",
                item.id
            ))
        })?;
        rec.decided_by = "judge".into();
        let first = self
            .ask(judge, judge::Template::Judge, item, response)
            .await?;
        let mut parsed = judge::parse_reply(&first, item.level);
        rec.judge_raw.push(first);
        let mut notes = Vec::new();
        if let Err(e) = &parsed
            && self.opts.reask_strict
        {
            notes.push(format!(
                "first reply unparsed ({e}); re-asked with the strict template"
            ));
            let second = self
                .ask(judge, judge::Template::Strict, item, response)
                .await?;
            parsed = judge::parse_reply(&second, item.level);
            rec.judge_raw.push(second);
        }
        match parsed {
            Ok(j) => {
                rec.verdict = json!({
                    "hard": j.hard(),
                    "met": j.count(),
                    "of": item.level,
                    "constraints": j.satisfied,
                });
                rec.scores = scores(item.level, j.count());
            }
            Err(e) => {
                notes.push(format!(
                    "unparsed judge reply ({e}): left out of HSR, SSR and CSL"
                ));
                rec.verdict = Value::Null;
            }
        }
        if !notes.is_empty() {
            rec.note = Some(notes.join("; "));
        }
        Ok(rec)
    }

    fn summarize(&self, items: &[ItemRecord]) -> Summary {
        metrics::summarize(
            items,
            json!({
                "rules_only": self.opts.rules_only,
                "reask_strict": self.opts.reask_strict,
                "judge_max_tokens": self.opts.judge_max_tokens,
            }),
        )
    }
}

#[cfg(test)]
mod tests;
