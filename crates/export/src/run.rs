//! Reading a finished run folder through the files it publishes — `manifest.json`, the
//! per-stage record files and `datasets/*.jsonl` — never through `state.sqlite`. Besides the
//! rows, this works out whether the run is finished: every unit the pipeline would still make
//! (a missing filter, decomposition, variant, response or verdict record) is listed as
//! pending. It does not judge the data; the pipeline's `build` already chose the rows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use demorecon_io::{JsonlError, read_jsonl_values};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ExportError, Pending, Unfinished};
use crate::rows::{Fgiv, Message, Pair, SftRow};

/// Everything an export takes from a run folder.
#[derive(Debug)]
pub struct RunData {
    pub dir: PathBuf,
    pub manifest: Value,
    /// FGIV-A pairs, then FGIV-R pairs, each in the run's input order.
    pub pairs: Vec<Pair>,
    /// FGIV-A SFT rows, then FGIV-R ones.
    pub sft: Vec<SftRow>,
    /// FGIV-Eval prompts (held-out seeds), as the run wrote them.
    pub eval: Vec<Value>,
    pub unfinished: Unfinished,
}

/// The stage record files, relative to the run folder.
const RECORD_FILES: [&str; 6] = [
    "seeds.jsonl",
    "filter.jsonl",
    "decompositions.jsonl",
    "variants.jsonl",
    "responses.jsonl",
    "verdicts.jsonl",
];

/// Reads the run folder `dir`. Bad files are errors naming the file and line; an unfinished
/// run is not an error here (see [`RunData::unfinished`]).
pub fn read_run(dir: &Path) -> Result<RunData, ExportError> {
    let manifest = read_manifest(dir)?;
    let mut pairs = Vec::new();
    let mut sft = Vec::new();
    for fgiv in Fgiv::BOTH {
        let path = dir.join(format!("datasets/dpo_{}.jsonl", fgiv.tag()));
        for (line, row) in required_rows(&path)? {
            pairs.push(parse_pair(&row, fgiv).map_err(|m| JsonlError::at(&path, line, m))?);
        }
        let path = dir.join(format!("datasets/sft_{}.jsonl", fgiv.tag()));
        for (line, row) in required_rows(&path)? {
            sft.push(parse_sft(&row, fgiv).map_err(|m| JsonlError::at(&path, line, m))?);
        }
    }
    let eval = required_rows(&dir.join("datasets/fgiv_eval.jsonl"))?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let unfinished = unfinished(dir, &manifest)?;
    Ok(RunData {
        dir: dir.to_owned(),
        manifest,
        pairs,
        sft,
        eval,
        unfinished,
    })
}

fn read_manifest(dir: &Path) -> Result<Value, ExportError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ExportError::bad(
                &path,
                "not found: is this a run folder made by `demorecon run`?",
            )
        } else {
            ExportError::io(&path, e)
        }
    })?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| ExportError::bad(&path, format!("line {}: {e}", e.line())))?;
    if !manifest["counts"].is_object() {
        return Err(ExportError::bad(&path, "has no `counts` object"));
    }
    Ok(manifest)
}

/// The rows of a JSONL file; `None` when the file does not exist. An empty file has no rows.
fn rows(path: &Path) -> Result<Option<Vec<(usize, Value)>>, ExportError> {
    match read_jsonl_values(path) {
        Ok(rows) => Ok(Some(rows)),
        Err(JsonlError::Empty { .. }) => Ok(Some(Vec::new())),
        Err(JsonlError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn required_rows(path: &Path) -> Result<Vec<(usize, Value)>, ExportError> {
    rows(path)?.ok_or_else(|| {
        ExportError::bad(
            path,
            "not found: the run has not built its datasets (run `demorecon build` on it)",
        )
    })
}

fn messages(row: &Value, key: &str) -> Result<Vec<Message>, String> {
    let value = row.get(key).ok_or_else(|| format!("no `{key}` field"))?;
    Vec::<Message>::deserialize(value)
        .map_err(|e| format!("`{key}` is not a list of {{\"role\", \"content\"}} messages: {e}"))
}

fn string(row: &Value, key: &str) -> Result<String, String> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("`{key}` is missing or not a string"))
}

fn optional_string(row: &Value, key: &str) -> Option<String> {
    row.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// One assistant message: the whole of a `chosen` or `rejected` list.
fn one_answer(row: &Value, key: &str) -> Result<Message, String> {
    let mut list = messages(row, key)?;
    match (list.len(), list.first()) {
        (1, Some(m)) if m.role == "assistant" => Ok(list.remove(0)),
        _ => Err(format!("`{key}` must be exactly one assistant message")),
    }
}

fn parse_pair(row: &Value, fgiv: Fgiv) -> Result<Pair, String> {
    let prompt = messages(row, "prompt")?;
    if prompt.last().is_none_or(|m| m.role != "user") {
        return Err("`prompt` must end with a user message".into());
    }
    Ok(Pair {
        fgiv,
        seed_id: string(row, "seed_id")?,
        variant_id: string(row, "variant_id")?,
        prompt,
        chosen: one_answer(row, "chosen")?,
        rejected: one_answer(row, "rejected")?,
        edit_kind: optional_string(row, "edit_kind"),
        modified_sub_instruction: optional_string(row, "modified_sub_instruction"),
    })
}

fn parse_sft(row: &Value, fgiv: Fgiv) -> Result<SftRow, String> {
    let messages = messages(row, "messages")?;
    let shape_ok = messages.len() >= 2
        && messages.last().is_some_and(|m| m.role == "assistant")
        && messages.iter().any(|m| m.role == "user");
    if !shape_ok {
        return Err("`messages` must hold a user turn and end with an assistant turn".into());
    }
    Ok(SftRow {
        fgiv,
        seed_id: string(row, "seed_id")?,
        variant_id: optional_string(row, "variant_id"),
        messages,
    })
}

/// The per-stage records, reduced to what finishing needs. `status` is `done` or
/// `quarantined`; a quarantined unit is final.
#[derive(Default)]
struct Records {
    seeds: Vec<String>,
    /// seed → kept (`None`: quarantined)
    filter: HashMap<String, Option<bool>>,
    /// seed → number of sub-instructions (`None`: quarantined)
    decomposition: HashMap<String, Option<usize>>,
    /// variant → valid (`None`: quarantined)
    variants: HashMap<String, Option<bool>>,
    /// (unit, kind) → done
    responses: HashMap<(String, String), bool>,
    verdicts: HashSet<String>,
}

fn field<'v>(path: &Path, line: usize, row: &'v Value, key: &str) -> Result<&'v str, ExportError> {
    row.get(key).and_then(Value::as_str).ok_or_else(|| {
        JsonlError::at(path, line, format!("`{key}` is missing or not a string")).into()
    })
}

fn done(path: &Path, line: usize, row: &Value) -> Result<bool, ExportError> {
    match field(path, line, row, "status")? {
        "done" => Ok(true),
        "quarantined" => Ok(false),
        other => Err(JsonlError::at(path, line, format!("unknown status `{other}`")).into()),
    }
}

fn read_records(dir: &Path, missing: &mut Vec<String>) -> Result<Records, ExportError> {
    let mut rec = Records::default();
    for name in RECORD_FILES {
        let path = dir.join(name);
        let Some(rows) = rows(&path)? else {
            missing.push(name.to_owned());
            continue;
        };
        for (line, row) in rows {
            let p = path.as_path();
            match name {
                "seeds.jsonl" => rec.seeds.push(field(p, line, &row, "id")?.to_owned()),
                "filter.jsonl" => {
                    let kept = done(p, line, &row)?.then(|| row["keep"].as_bool() == Some(true));
                    rec.filter
                        .insert(field(p, line, &row, "seed_id")?.to_owned(), kept);
                }
                "decompositions.jsonl" => {
                    let n = done(p, line, &row)?
                        .then(|| row["sub_instructions"].as_array().map_or(0, Vec::len));
                    rec.decomposition
                        .insert(field(p, line, &row, "seed_id")?.to_owned(), n);
                }
                "variants.jsonl" => {
                    let valid = done(p, line, &row)?.then(|| row["valid"].as_bool() == Some(true));
                    rec.variants
                        .insert(field(p, line, &row, "variant_id")?.to_owned(), valid);
                }
                "responses.jsonl" => {
                    let key = (
                        field(p, line, &row, "unit")?.to_owned(),
                        field(p, line, &row, "kind")?.to_owned(),
                    );
                    rec.responses.insert(key, done(p, line, &row)?);
                }
                _ => {
                    rec.verdicts
                        .insert(field(p, line, &row, "variant_id")?.to_owned());
                }
            }
        }
    }
    Ok(rec)
}

/// What the pipeline would still make for a seed, following the runner's order: filter,
/// decompose, vary every sub-instruction and answer the seed, answer each valid variant
/// (FGIV-A), revise the seed's response for it (FGIV-R), verify the pair.
fn pending_for_seed(rec: &Records, seed: &str, out: &mut Vec<Pending>) {
    let mut push = |unit: &str, stage| {
        out.push(Pending {
            unit: unit.to_owned(),
            stage,
        })
    };
    match rec.filter.get(seed) {
        None => return push(seed, "filter"),
        Some(Some(true)) => {}
        Some(_) => return,
    }
    let n = match rec.decomposition.get(seed) {
        None => return push(seed, "decompose"),
        Some(Some(n)) => *n,
        Some(None) => return,
    };
    let seed_response = rec.responses.get(&(seed.to_owned(), "seed".to_owned()));
    if seed_response.is_none() {
        push(seed, "respond_seed");
    }
    for k in 0..n {
        let vid = format!("{seed}/v{k}");
        match rec.variants.get(&vid) {
            None => {
                push(&vid, "vary");
                continue;
            }
            Some(Some(true)) => {}
            Some(_) => continue,
        }
        let a = rec.responses.get(&(vid.clone(), "fgiv_a".to_owned()));
        if a.is_none() {
            push(&vid, "respond_a");
        }
        if seed_response != Some(&true) {
            continue;
        }
        let r = rec.responses.get(&(vid.clone(), "fgiv_r".to_owned()));
        if r.is_none() {
            push(&vid, "respond_r");
        }
        let answered = a == Some(&true) || r == Some(&true);
        if a.is_some() && r.is_some() && answered && !rec.verdicts.contains(&vid) {
            push(&vid, "verify");
        }
    }
}

fn unfinished(dir: &Path, manifest: &Value) -> Result<Unfinished, ExportError> {
    let mut u = Unfinished::default();
    let rec = read_records(dir, &mut u.missing_files)?;
    for seed in &rec.seeds {
        pending_for_seed(&rec, seed, &mut u.pending);
    }
    let count = |k: &str| manifest["counts"][k].as_u64().unwrap_or(0);
    u.manifest_pending = (count("seeds_pending"), count("variants_pending"));
    u.shard = manifest["shard"].as_str().map(str::to_owned);
    Ok(u)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A small finished run folder: two seeds, three variants, one FGIV-R pair unverified.
    pub fn fixture(dir: &Path) {
        let write = |name: &str, rows: &[Value]| {
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let manifest = json!({
            "tool": {"name": "demorecon", "version": "0.1.0"},
            "input": {"seeds": "seeds.jsonl", "seeds_blake3": "abc"},
            "shard": null,
            "prompts": {"decompose": "v1", "vary": "v2"},
            "models": {"generator": "gen@http://x", "responder": "resp@http://x", "judge": "judge@http://x"},
            "counts": {"seeds_in": 3, "seeds_pending": 0, "variants_pending": 0, "seeds_done": 2, "variants_valid": 3, "pairs_valid_fgiv_a": 3, "pairs_valid_fgiv_r": 2},
        });
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        write(
            "seeds.jsonl",
            &[
                json!({"id": "s1"}),
                json!({"id": "s2"}),
                json!({"id": "gone"}),
            ],
        );
        write(
            "filter.jsonl",
            &[
                json!({"seed_id": "s1", "status": "done", "keep": true}),
                json!({"seed_id": "s2", "status": "done", "keep": true}),
                json!({"seed_id": "gone", "status": "done", "keep": false}),
            ],
        );
        write(
            "decompositions.jsonl",
            &[
                json!({"seed_id": "s1", "status": "done", "sub_instructions": ["a", "b"]}),
                json!({"seed_id": "s2", "status": "done", "sub_instructions": ["c"]}),
            ],
        );
        let mut variants = Vec::new();
        let mut responses = vec![
            json!({"unit": "s1", "kind": "seed", "status": "done"}),
            json!({"unit": "s2", "kind": "seed", "status": "done"}),
        ];
        let mut verdicts = Vec::new();
        for vid in ["s1/v0", "s1/v1", "s2/v0"] {
            variants.push(json!({"variant_id": vid, "status": "done", "valid": true}));
            for kind in ["fgiv_a", "fgiv_r"] {
                responses.push(json!({"unit": vid, "kind": kind, "status": "done"}));
            }
            verdicts.push(json!({"variant_id": vid, "status": "done"}));
        }
        write("variants.jsonl", &variants);
        write("responses.jsonl", &responses);
        write("verdicts.jsonl", &verdicts);
        let pair = |seed: &str, vid: &str, prompt: &str, chosen: &str, rejected: &str| {
            json!({
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "seed_id": seed, "variant_id": vid, "edit_kind": "contradict",
                "modified_sub_instruction": "CHANGED",
            })
        };
        write(
            "datasets/dpo_fgiv_a.jsonl",
            &[
                pair(
                    "s1",
                    "s1/v0",
                    "Write a poem. Use 3 lines.",
                    "A direct",
                    "Seed one",
                ),
                pair(
                    "s1",
                    "s1/v1",
                    "Write a song. Use 4 lines.",
                    "A direct 2",
                    "Seed one",
                ),
                pair("s2", "s2/v0", "Say \"hi\"\nnow.", "A ünïcode ✓", "Seed two"),
            ],
        );
        write(
            "datasets/dpo_fgiv_r.jsonl",
            &[
                pair(
                    "s1",
                    "s1/v0",
                    "Write a poem. Use 3 lines.",
                    "R revised",
                    "Seed one",
                ),
                pair("s2", "s2/v0", "Say \"hi\"\nnow.", "R revised 2", "Seed two"),
            ],
        );
        let sft = |seed: &str, vid: Option<&str>, p: &str, r: &str| {
            json!({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                   "seed_id": seed, "variant_id": vid})
        };
        write(
            "datasets/sft_fgiv_a.jsonl",
            &[
                sft("s1", None, "Write a poem.", "Seed one"),
                sft(
                    "s1",
                    Some("s1/v0"),
                    "Write a poem. Use 3 lines.",
                    "A direct",
                ),
            ],
        );
        write(
            "datasets/sft_fgiv_r.jsonl",
            &[
                sft("s1", None, "Write a poem.", "Seed one"),
                sft(
                    "s1",
                    Some("s1/v0"),
                    "Write a poem. Use 3 lines.",
                    "R revised",
                ),
            ],
        );
        write(
            "datasets/fgiv_eval.jsonl",
            &[
                json!({"seed_id": "e1", "variant_id": "e1/v0", "prompt": "Eval prompt",
                     "sub_instructions": ["x", "y"], "modified_index": 1}),
            ],
        );
        write("datasets/fgiv_detection.jsonl", &[]);
    }

    #[test]
    fn a_finished_fixture_reads_whole_and_finished() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let run = read_run(tmp.path()).unwrap();
        assert_eq!(run.pairs.len(), 5);
        assert_eq!(run.sft.len(), 4);
        assert_eq!(run.eval.len(), 1);
        assert!(run.unfinished.is_empty(), "{:?}", run.unfinished);
        assert_eq!(run.pairs[3].fgiv, Fgiv::R);
        assert_eq!(run.pairs[2].chosen.content, "A ünïcode ✓");
    }

    #[test]
    fn missing_records_are_pending_units_in_stage_order() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        // s1/v1 lost its FGIV-R response and verdict; s2 was never decomposed.
        let keep = |name: &str, drop: &dyn Fn(&str) -> bool| {
            let path = tmp.path().join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            let kept: String = text
                .lines()
                .filter(|l| !drop(l))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(path, kept).unwrap();
        };
        keep("responses.jsonl", &|l| {
            l.contains("s1/v1") && l.contains("fgiv_r")
        });
        keep("verdicts.jsonl", &|l| l.contains("s1/v1"));
        keep("decompositions.jsonl", &|l| l.contains("\"s2\""));
        let run = read_run(tmp.path()).unwrap();
        let got: Vec<(String, &str)> = run
            .unfinished
            .pending
            .iter()
            .map(|p| (p.unit.clone(), p.stage))
            .collect();
        assert_eq!(
            got,
            vec![
                ("s1/v1".to_owned(), "respond_r"),
                ("s2".to_owned(), "decompose")
            ]
        );
        let text = run.unfinished.describe(20);
        assert!(text.contains("respond_r s1/v1"), "{text}");
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let path = tmp.path().join("datasets/dpo_fgiv_r.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"prompt\": \"not a list\", \"chosen\": [], \"rejected\": []}\n");
        std::fs::write(&path, text).unwrap();
        let err = read_run(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("dpo_fgiv_r.jsonl:3:"), "{err}");
        assert!(err.contains("`prompt`"), "{err}");

        std::fs::write(&path, "{not json\n").unwrap();
        let err = read_run(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("dpo_fgiv_r.jsonl:1:"), "{err}");
    }

    #[test]
    fn a_folder_without_a_manifest_is_not_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let err = read_run(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("demorecon run"),
            "{err}"
        );
    }
}
