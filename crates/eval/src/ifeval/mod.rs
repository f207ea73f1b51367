//! IFEval: read the prompt file and responses, score them strict and loose exactly as Google's
//! reference `evaluation_main` does, and write its output files.
//!
//! Flow: [`read_inputs`] and [`read_responses`] parse the JSONL files (errors name the file and
//! line), [`join_responses`] pairs every prompt with its response by `key` or by exact prompt
//! text (missing ones are an error that lists the keys), [`evaluate`] builds each row's
//! constraints (bad kwargs are errors) and applies them, and [`write_outputs`] writes
//! `eval_results_strict.jsonl`, `eval_results_loose.jsonl` (rows in the reference's format,
//! keys sorted) and `summary.json` (lm-eval's four metric names plus per-tier detail).
//! [`lint`] reports contradictions in the prompt data; [`generate`] produces responses with a
//! model; [`fetch`] downloads the official prompt file.

pub mod bench;
pub mod fetch;
pub mod generate;
pub mod lint;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use demorecon_checks::{CheckError, Constraint, pystr};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// sha256 of the official IFEval prompt file (`google/IFEval` on the Hugging Face Hub).
pub const INPUT_DATA_SHA256: &str =
    "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49";

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    BadLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error(
        "{count} prompt(s) have no response (keys: {keys}); every prompt needs one, joined by `key` or by exact prompt text"
    )]
    MissingResponses { count: usize, keys: String },
    #[error("prompt key {key}: {source}")]
    Constraint { key: i64, source: CheckError },
    #[error("prompt key {key}: {len_ids} instruction ids but {len_kwargs} kwargs objects")]
    KwargsLength {
        key: i64,
        len_ids: usize,
        len_kwargs: usize,
    },
    #[error("{0}")]
    Fetch(String),
    #[error("generation failed for {count} prompt(s) (first: key {key}: {message})")]
    Generate {
        count: usize,
        key: i64,
        message: String,
    },
}

/// One prompt of the IFEval input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRow {
    pub key: i64,
    pub prompt: String,
    pub instruction_id_list: Vec<String>,
    pub kwargs: Vec<Value>,
}

/// One line of a responses file: a response and what identifies its prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    pub response: String,
}

/// One output row, in the reference's format (fields in sorted key order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub follow_all_instructions: bool,
    pub follow_instruction_list: Vec<bool>,
    pub instruction_id_list: Vec<String>,
    pub prompt: String,
    pub response: String,
}

/// Accuracy of one mode (strict or loose), as the reference's report prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeSummary {
    pub prompt_level_correct: u64,
    pub prompt_total: u64,
    pub prompt_level_accuracy: f64,
    pub instruction_level_correct: u64,
    pub instruction_total: u64,
    pub instruction_level_accuracy: f64,
    pub tier0_accuracy: BTreeMap<String, f64>,
    pub tier1_accuracy: BTreeMap<String, f64>,
    pub tier0_counts: BTreeMap<String, [u64; 2]>,
    pub tier1_counts: BTreeMap<String, [u64; 2]>,
}

/// `summary.json`: lm-eval's four metric names, then the detail per mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub prompt_level_strict_acc: f64,
    pub inst_level_strict_acc: f64,
    pub prompt_level_loose_acc: f64,
    pub inst_level_loose_acc: f64,
    pub strict: ModeSummary,
    pub loose: ModeSummary,
}

/// Scored rows, both modes, and their summary.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub strict: Vec<RowResult>,
    pub loose: Vec<RowResult>,
    pub summary: Summary,
}

/// Options of [`evaluate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreOptions {
    /// Remove a leading `<think>…</think>` block from each response before scoring.
    pub strip_think: bool,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, EvalError> {
    use demorecon_io::JsonlError;
    demorecon_io::read_jsonl(path)
        .map(|rows| rows.into_iter().map(|(_, r)| r).collect())
        .map_err(|e| match e {
            JsonlError::Io { path, source } => EvalError::Read { path, source },
            JsonlError::Line {
                path,
                line,
                message,
            } => EvalError::BadLine {
                path,
                line,
                message,
            },
            JsonlError::Empty { path } => EvalError::Empty { path },
        })
}

/// Reads an IFEval prompt file (`{"key","prompt","instruction_id_list","kwargs"}` per line).
pub fn read_inputs(path: &Path) -> Result<Vec<InputRow>, EvalError> {
    let rows: Vec<InputRow> = read_jsonl(path)?;
    for r in &rows {
        if r.instruction_id_list.len() != r.kwargs.len() {
            return Err(EvalError::KwargsLength {
                key: r.key,
                len_ids: r.instruction_id_list.len(),
                len_kwargs: r.kwargs.len(),
            });
        }
    }
    Ok(rows)
}

/// Reads a responses file (`{"prompt","response"}` or `{"key","response"}` per line).
pub fn read_responses(path: &Path) -> Result<Vec<ResponseRow>, EvalError> {
    let rows: Vec<ResponseRow> = read_jsonl(path)?;
    if let Some((i, _)) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.key.is_none() && r.prompt.is_none())
    {
        return Err(EvalError::BadLine {
            path: path.into(),
            line: i + 1,
            message: "a response row needs a \"key\" or a \"prompt\" to join on".into(),
        });
    }
    Ok(rows)
}

/// Pairs every input with its response: by `key` when the response row has one, else by exact
/// prompt text (the last row wins for duplicates, as in the reference). Missing responses are
/// an error listing their keys.
pub fn join_responses(
    inputs: &[InputRow],
    responses: &[ResponseRow],
) -> Result<Vec<String>, EvalError> {
    let mut by_key: HashMap<i64, &str> = HashMap::new();
    let mut by_prompt: HashMap<&str, &str> = HashMap::new();
    for r in responses {
        if let Some(k) = r.key {
            by_key.insert(k, &r.response);
        } else if let Some(p) = &r.prompt {
            by_prompt.insert(p, &r.response);
        }
    }
    let mut out = Vec::with_capacity(inputs.len());
    let mut missing = Vec::new();
    for inp in inputs {
        match by_key
            .get(&inp.key)
            .or_else(|| by_prompt.get(inp.prompt.as_str()))
        {
            Some(r) => out.push((*r).to_owned()),
            None => missing.push(inp.key.to_string()),
        }
    }
    if !missing.is_empty() {
        let count = missing.len();
        if missing.len() > 50 {
            missing.truncate(50);
            missing.push("...".into());
        }
        return Err(EvalError::MissingResponses {
            count,
            keys: missing.join(", "),
        });
    }
    Ok(out)
}

/// Removes a leading `<think>…</think>` block (and the whitespace after it). A response with an
/// unclosed `<think>` is left as it is.
pub fn strip_think(response: &str) -> &str {
    let t = response.trim_start();
    if let Some(rest) = t.strip_prefix("<think>")
        && let Some(end) = rest.find("</think>")
    {
        return rest[end + "</think>".len()..].trim_start();
    }
    response
}

/// The eight texts the loose mode tries, in the reference's order: the response; without `*`;
/// without its first line; without its last line; without both; and the last three without `*`.
pub fn loose_variants(response: &str) -> [String; 8] {
    let lines: Vec<&str> = response.split('\n').collect();
    let n = lines.len();
    let join = |a: usize, b: usize| -> String {
        if a >= b {
            String::new()
        } else {
            pystr::strip(&lines[a..b].join("\n")).to_owned()
        }
    };
    let first = join(1, n);
    let last = join(0, n.saturating_sub(1));
    let both = join(1, n.saturating_sub(1));
    let nostar = |s: &str| s.replace('*', "");
    [
        response.to_owned(),
        nostar(response),
        first.clone(),
        last.clone(),
        both.clone(),
        nostar(&first),
        nostar(&last),
        nostar(&both),
    ]
}

/// Builds the constraints of one input row.
pub fn constraints_for(row: &InputRow) -> Result<Vec<Constraint>, EvalError> {
    row.instruction_id_list
        .iter()
        .zip(&row.kwargs)
        .map(|(id, kw)| {
            Constraint::from_id(id, kw).map_err(|source| EvalError::Constraint {
                key: row.key,
                source,
            })
        })
        .collect()
}

/// Strict and loose verdicts of one row.
pub fn score_row(constraints: &[Constraint], response: &str) -> (Vec<bool>, Vec<bool>) {
    let nonblank = !pystr::strip(response).is_empty();
    let strict: Vec<bool> = constraints
        .iter()
        .map(|c| nonblank && c.check(response))
        .collect();
    // The loose variants only matter for instructions strict mode failed; most rows have
    // none, so the eight texts are built only when needed.
    if strict.iter().all(|&s| s) {
        return (strict.clone(), strict);
    }
    let variants = loose_variants(response);
    // Checks are pure functions of the text, so a variant equal to one already tried cannot
    // change the verdict: without `*` in the response, the last four variants repeat earlier
    // ones. A variant equal to the response is skipped too: strict already failed on it (or
    // it is blank, which loose mode skips anyway).
    let mut distinct: Vec<&str> = Vec::with_capacity(7);
    for v in &variants[1..] {
        if v != response && !distinct.contains(&v.as_str()) {
            distinct.push(v);
        }
    }
    let loose = constraints
        .iter()
        .zip(&strict)
        .map(|(c, &s)| {
            s || distinct
                .iter()
                .any(|v| !pystr::strip(v).is_empty() && c.check(v))
        })
        .collect();
    (strict, loose)
}

/// Scores every row, strict and loose. `responses[i]` answers `inputs[i]`.
pub fn evaluate(
    inputs: &[InputRow],
    responses: &[String],
    opts: ScoreOptions,
) -> Result<Evaluation, EvalError> {
    let texts: Vec<&str> = responses
        .iter()
        .map(|r| {
            if opts.strip_think {
                strip_think(r)
            } else {
                r.as_str()
            }
        })
        .collect();
    let verdicts = score_parallel(inputs, &texts)?;
    let mut strict = Vec::with_capacity(inputs.len());
    let mut loose = Vec::with_capacity(inputs.len());
    for ((inp, text), (s, l)) in inputs.iter().zip(&texts).zip(verdicts) {
        let row = |list: Vec<bool>| RowResult {
            follow_all_instructions: list.iter().all(|&b| b),
            follow_instruction_list: list,
            instruction_id_list: inp.instruction_id_list.clone(),
            prompt: inp.prompt.clone(),
            response: (*text).to_owned(),
        };
        strict.push(row(s));
        loose.push(row(l));
    }
    let s = summarize(&strict);
    let l = summarize(&loose);
    let summary = Summary {
        prompt_level_strict_acc: s.prompt_level_accuracy,
        inst_level_strict_acc: s.instruction_level_accuracy,
        prompt_level_loose_acc: l.prompt_level_accuracy,
        inst_level_loose_acc: l.instruction_level_accuracy,
        strict: s,
        loose: l,
    };
    Ok(Evaluation {
        strict,
        loose,
        summary,
    })
}

type Verdicts = (Vec<bool>, Vec<bool>);

fn build_and_score(row: &InputRow, text: &str) -> Result<Verdicts, EvalError> {
    Ok(score_row(&constraints_for(row)?, text))
}

/// Builds each row's constraints and scores it, on all available cores; results stay in input
/// order, and the first error in input order is returned.
fn score_parallel(inputs: &[InputRow], texts: &[&str]) -> Result<Vec<Verdicts>, EvalError> {
    let n = texts.len().min(inputs.len());
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(8)
        .min(n.max(1));
    if threads <= 1 {
        return inputs
            .iter()
            .zip(texts)
            .map(|(r, t)| build_and_score(r, t))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<Result<Verdicts, EvalError>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        done.push((i, build_and_score(&inputs[i], texts[i])));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            // A panicking worker would be a bug in a check; re-raise it rather than lose rows.
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        out[i] = Some(r);
                    }
                }
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| build_and_score(&inputs[i], texts[i])))
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Prompt- and instruction-level accuracy with tier0 (id prefix) and tier1 (full id) detail.
pub fn summarize(rows: &[RowResult]) -> ModeSummary {
    let mut tier0: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    let mut tier1: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    let (mut p_ok, mut i_ok, mut i_total) = (0u64, 0u64, 0u64);
    for r in rows {
        p_ok += u64::from(r.follow_all_instructions);
        for (id, &ok) in r.instruction_id_list.iter().zip(&r.follow_instruction_list) {
            i_total += 1;
            i_ok += u64::from(ok);
            let t0 = id.split(':').next().unwrap_or(id).to_owned();
            for (map, k) in [(&mut tier0, t0), (&mut tier1, id.clone())] {
                let e = map.entry(k).or_insert([0, 0]);
                e[0] += u64::from(ok);
                e[1] += 1;
            }
        }
    }
    let acc = |m: &BTreeMap<String, [u64; 2]>| {
        m.iter()
            .map(|(k, [a, b])| (k.clone(), ratio(*a, *b)))
            .collect()
    };
    ModeSummary {
        prompt_level_correct: p_ok,
        prompt_total: rows.len() as u64,
        prompt_level_accuracy: ratio(p_ok, rows.len() as u64),
        instruction_level_correct: i_ok,
        instruction_total: i_total,
        instruction_level_accuracy: ratio(i_ok, i_total),
        tier0_accuracy: acc(&tier0),
        tier1_accuracy: acc(&tier1),
        tier0_counts: tier0,
        tier1_counts: tier1,
    }
}

/// Writes a file atomically through `fill` (buffered, so the output files stay out of peak
/// memory).
fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), EvalError> {
    demorecon_io::write_atomic_with(path, fill).map_err(|source| EvalError::Write {
        path: path.into(),
        source,
    })
}

/// Writes rows as JSON lines (the reference's format).
fn write_rows(w: &mut dyn Write, rows: &[RowResult]) -> std::io::Result<()> {
    for r in rows {
        serde_json::to_writer(&mut *w, r)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Rows as JSON lines (the reference's format).
pub fn rows_jsonl(rows: &[RowResult]) -> String {
    let mut out = String::new();
    for r in rows {
        // Serializing plain strings and bools cannot fail.
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Writes `eval_results_strict.jsonl`, `eval_results_loose.jsonl` and `summary.json` into `dir`
/// (created if needed). Returns the paths written.
pub fn write_outputs(dir: &Path, ev: &Evaluation) -> Result<Vec<PathBuf>, EvalError> {
    let mut written = write_row_files(dir, ev)?;
    let summary = dir.join("summary.json");
    write_file(&summary, |w| {
        serde_json::to_writer_pretty(&mut *w, &ev.summary)?;
        w.write_all(b"\n")
    })?;
    written.push(summary);
    Ok(written)
}

/// Writes the reference's two row files only (`eval_results_strict.jsonl`,
/// `eval_results_loose.jsonl`), for callers that write their own summary.
pub fn write_row_files(dir: &Path, ev: &Evaluation) -> Result<Vec<PathBuf>, EvalError> {
    let strict = dir.join("eval_results_strict.jsonl");
    let loose = dir.join("eval_results_loose.jsonl");
    // The two row files are independent: write them side by side.
    let (r1, r2) = std::thread::scope(|scope| {
        let other = scope.spawn(|| write_file(&loose, |w| write_rows(w, &ev.loose)));
        let r1 = write_file(&strict, |w| write_rows(w, &ev.strict));
        // A panic while serialising would be a bug; re-raise it.
        let r2 = other
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (r1, r2)
    });
    r1?;
    r2?;
    Ok(vec![strict, loose])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An input row for tests (shared with the lint's tests).
    pub(crate) fn input(key: i64, prompt: &str, ids: &[&str], kwargs: Vec<Value>) -> InputRow {
        InputRow {
            key,
            prompt: prompt.into(),
            instruction_id_list: ids.iter().map(|s| s.to_string()).collect(),
            kwargs,
        }
    }

    #[test]
    fn loose_variants_in_reference_order() {
        let v = loose_variants("Sure!\n**Body** text\nBye");
        assert_eq!(v[0], "Sure!\n**Body** text\nBye");
        assert_eq!(v[1], "Sure!\nBody text\nBye");
        assert_eq!(v[2], "**Body** text\nBye");
        assert_eq!(v[3], "Sure!\n**Body** text");
        assert_eq!(v[4], "**Body** text");
        assert_eq!(v[5], "Body text\nBye");
        assert_eq!(v[6], "Sure!\nBody text");
        assert_eq!(v[7], "Body text");
        let one = loose_variants("single");
        assert_eq!(one[2], "");
        assert_eq!(one[4], "");
    }

    #[test]
    fn strict_fails_blank_and_loose_recovers_intro_lines() {
        let c = vec![Constraint::from_id("punctuation:no_comma", &Value::Null).unwrap()];
        assert_eq!(score_row(&c, "  \n "), (vec![false], vec![false]));
        let c = vec![Constraint::from_id("startend:quotation", &Value::Null).unwrap()];
        assert_eq!(
            score_row(&c, "Here you go:\n\"quoted\""),
            (vec![false], vec![true])
        );
    }

    #[test]
    fn join_by_key_or_prompt_and_report_missing() {
        let inputs = vec![
            input(
                1,
                "a",
                &["punctuation:no_comma"],
                vec![serde_json::json!({})],
            ),
            input(
                2,
                "b",
                &["punctuation:no_comma"],
                vec![serde_json::json!({})],
            ),
            input(
                3,
                "c",
                &["punctuation:no_comma"],
                vec![serde_json::json!({})],
            ),
        ];
        let resp = vec![
            ResponseRow {
                key: Some(2),
                prompt: None,
                response: "two".into(),
            },
            ResponseRow {
                key: None,
                prompt: Some("a".into()),
                response: "one".into(),
            },
        ];
        match join_responses(&inputs, &resp) {
            Err(EvalError::MissingResponses { count: 1, keys }) => assert_eq!(keys, "3"),
            other => panic!("{other:?}"),
        }
        let mut resp = resp;
        resp.push(ResponseRow {
            key: None,
            prompt: Some("c".into()),
            response: "x".into(),
        });
        resp.push(ResponseRow {
            key: None,
            prompt: Some("c".into()),
            response: "three".into(),
        });
        assert_eq!(
            join_responses(&inputs, &resp).unwrap(),
            vec!["one", "two", "three"]
        );
    }

    #[test]
    fn think_blocks_are_stripped_only_when_closed() {
        assert_eq!(strip_think("<think>hmm, ok</think>\n\nAnswer"), "Answer");
        assert_eq!(strip_think("  <think>a</think>b"), "b");
        assert_eq!(strip_think("<think>never closed"), "<think>never closed");
        assert_eq!(
            strip_think("Answer <think>x</think>"),
            "Answer <think>x</think>"
        );
    }

    #[test]
    fn summary_counts_tiers() {
        let rows = vec![
            RowResult {
                follow_all_instructions: false,
                follow_instruction_list: vec![true, false],
                instruction_id_list: vec!["a:x".into(), "a:y".into()],
                prompt: "p".into(),
                response: "r".into(),
            },
            RowResult {
                follow_all_instructions: true,
                follow_instruction_list: vec![true],
                instruction_id_list: vec!["b:z".into()],
                prompt: "q".into(),
                response: "s".into(),
            },
        ];
        let s = summarize(&rows);
        assert_eq!((s.prompt_level_correct, s.prompt_total), (1, 2));
        assert_eq!((s.instruction_level_correct, s.instruction_total), (2, 3));
        assert_eq!(s.tier0_counts["a"], [1, 2]);
        assert_eq!(s.tier1_accuracy["a:y"], 0.0);
        assert_eq!(summarize(&[]).prompt_level_accuracy, 0.0);
    }

    #[test]
    fn bad_kwargs_name_the_prompt_key() {
        let inputs = vec![input(
            7,
            "p",
            &["length_constraints:number_words"],
            vec![serde_json::json!({"num_words": 3})],
        )];
        let err = evaluate(&inputs, &["x".into()], ScoreOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prompt key 7") && err.contains("relation"),
            "{err}"
        );
    }
}
