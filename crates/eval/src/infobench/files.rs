//! The two files a person hands InFoBench besides its items, read and joined to the items by
//! id: responses to judge (`--responses`) and judge verdicts to aggregate (`--judgements`).
//!
//! Both are JSON Lines in the InFoBench repo's own shapes. A responses row has `id` and
//! `output` (the repo's generation format; `response` is accepted when there is no `output`);
//! other fields are ignored. A judgements row is the repo's evaluation output: `id` and `eval`
//! (true / false / null per question asked, possibly fewer than the questions when an
//! unparsed reply stopped the judge), usually with the item's own fields and `output`;
//! `subset` and `question_label`, when present, must agree with the item's.
//!
//! The join is strict: a row whose id is not an item, an item with no row, and an id used
//! twice are errors that name them; malformed rows are errors that name the file and line.
//!
//! Not here: what the verdicts add up to ([`super::score`]).

use std::collections::HashMap;
use std::path::Path;

use demorecon_io::JsonlError;
use serde_json::Value;

use super::Item;
use crate::bench::BenchError;

/// How many ids an error lists before saying how many there are in all.
const SHOWN: usize = 5;

/// The response texts of a responses file, one per item in item order.
pub fn read_responses(path: &Path, items: &[Item]) -> Result<Vec<String>, BenchError> {
    let rows = demorecon_io::read_jsonl_values(path)?;
    let mut keyed = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let id = id_of(path, line, &row)?;
        let text = text_of(path, line, &row)?
            .ok_or_else(|| JsonlError::at(path, line, "no \"output\" (or \"response\") string"))?;
        keyed.push((line, id, text));
    }
    join(path, keyed, items)
}

/// One item's given verdicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Given {
    /// The judged response, when the file carries it (else empty).
    pub output: String,
    /// One verdict per question judged, in question order; `None` = an unparsed reply.
    pub eval: Vec<Option<bool>>,
}

/// The verdicts of a judgements file, one per item in item order.
pub fn read_judgements(path: &Path, items: &[Item]) -> Result<Vec<Given>, BenchError> {
    let by_id: HashMap<&str, &Item> = items.iter().map(|it| (it.id.as_str(), it)).collect();
    let rows = demorecon_io::read_jsonl_values(path)?;
    let mut keyed = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let at = |message: String| -> BenchError { JsonlError::at(path, line, message).into() };
        let id = id_of(path, line, &row)?;
        let eval = match row.get("eval") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(Some(*b)),
                    Value::Null => Ok(None),
                    other => Err(at(format!(
                        "item {id}: \"eval\" holds {other}; only true, false and null are verdicts"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None | Some(Value::Null) => {
                return Err(at(format!("item {id} has no \"eval\" (not judged)")));
            }
            Some(other) => {
                return Err(at(format!(
                    "item {id}: \"eval\" must be a list of true/false/null, not {other}"
                )));
            }
        };
        // Rows for unknown ids are reported together by the join.
        if let Some(item) = by_id.get(id.as_str()) {
            if eval.len() > item.decomposed_questions.len() {
                return Err(at(format!(
                    "item {id}: {} verdicts for {} questions",
                    eval.len(),
                    item.decomposed_questions.len()
                )));
            }
            if let Some(subset) = row.get("subset")
                && subset.as_str() != Some(item.subset.as_str())
            {
                return Err(at(format!(
                    "item {id}: subset {subset} but the item is in {}",
                    item.subset.as_str()
                )));
            }
            if let Some(labels) = row.get("question_label")
                && *labels != serde_json::json!(item.question_label)
            {
                return Err(at(format!(
                    "item {id}: question_label differs from the item's"
                )));
            }
        }
        let output = text_of(path, line, &row)?.unwrap_or_default();
        keyed.push((line, id, Given { output, eval }));
    }
    join(path, keyed, items)
}

fn id_of(path: &Path, line: usize, row: &Value) -> Result<String, JsonlError> {
    match row.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(other) => Err(JsonlError::at(
            path,
            line,
            format!("\"id\" must be a non-empty string, not {other}"),
        )),
        None => Err(JsonlError::at(path, line, "no \"id\"")),
    }
}

/// `output`, else `response`; an error when the one present is not a string.
fn text_of(path: &Path, line: usize, row: &Value) -> Result<Option<String>, JsonlError> {
    for field in ["output", "response"] {
        match row.get(field) {
            None => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(Value::Null) => {
                return Err(JsonlError::at(
                    path,
                    line,
                    format!("\"{field}\" is null (no response was generated)"),
                ));
            }
            Some(other) => {
                return Err(JsonlError::at(
                    path,
                    line,
                    format!("\"{field}\" must be a string, not {other}"),
                ));
            }
        }
    }
    Ok(None)
}

/// Puts `rows` (line, id, value) in item order; every item needs exactly one row and every
/// row an item.
fn join<T>(
    path: &Path,
    rows: Vec<(usize, String, T)>,
    items: &[Item],
) -> Result<Vec<T>, BenchError> {
    let index: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let mut slots: Vec<Option<(usize, T)>> = Vec::with_capacity(items.len());
    slots.resize_with(items.len(), || None);
    let mut unknown = Vec::new();
    for (line, id, value) in rows {
        match index.get(id.as_str()) {
            None => unknown.push(format!("{id} (line {line})")),
            Some(&i) => {
                if let Some((first, _)) = &slots[i] {
                    return Err(JsonlError::at(
                        path,
                        line,
                        format!("id {id} already has a row on line {first}"),
                    )
                    .into());
                }
                slots[i] = Some((line, value));
            }
        }
    }
    let missing: Vec<&str> = items
        .iter()
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(it, _)| it.id.as_str())
        .collect();
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!(
            "{} not among the benchmark's items: {}",
            count(unknown.len(), "row's id is", "rows' ids are"),
            listed(&unknown)
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} no row: {}",
            count(missing.len(), "item has", "items have"),
            listed(&missing)
        ));
    }
    if !problems.is_empty() {
        return Err(BenchError::Input(format!(
            "{}: {}",
            path.display(),
            problems.join("; ")
        )));
    }
    Ok(slots
        .into_iter()
        .map(|s| s.map(|(_, v)| v))
        .collect::<Option<Vec<T>>>()
        .unwrap_or_default())
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn listed<S: AsRef<str>>(ids: &[S]) -> String {
    let shown: Vec<&str> = ids.iter().take(SHOWN).map(AsRef::as_ref).collect();
    if ids.len() > SHOWN {
        format!("{}, … ({} in all)", shown.join(", "), ids.len())
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infobench::tests::item;

    fn items() -> Vec<Item> {
        (1..=8)
            .map(|i| {
                item(
                    &format!("user_oriented_task_{i}"),
                    "",
                    &[("Q1?", &["Content"]), ("Q2?", &["Format"])],
                )
            })
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let p = dir.path().join("rows.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn responses_join_by_id_in_item_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in (1..=8).rev() {
            let field = if i % 2 == 0 { "output" } else { "response" };
            text += &format!("{{\"id\":\"user_oriented_task_{i}\",\"{field}\":\"r{i}\"}}\n");
        }
        let texts = read_responses(&write(&dir, &text), &items()).unwrap();
        assert_eq!(texts, (1..=8).map(|i| format!("r{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn responses_errors_name_ids_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let row = |i: usize| format!("{{\"id\":\"user_oriented_task_{i}\",\"output\":\"r\"}}\n");

        let text = row(1) + &row(2);
        let err = read_responses(&write(&dir, &text), &items())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows.jsonl: 6 items have no row"), "{err}");
        assert!(
            err.contains("user_oriented_task_3, user_oriented_task_4, user_oriented_task_5, user_oriented_task_6, user_oriented_task_7, … (6 in all)"),
            "{err}"
        );
        assert!(!err.contains("task_8"), "{err}");

        let text: String =
            (1..=8).map(row).collect::<String>() + "{\"id\":\"nope\",\"output\":\"r\"}\n";
        let err = read_responses(&write(&dir, &text), &items())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 row's id is not among the benchmark's items: nope (line 9)"),
            "{err}"
        );

        let text = row(1) + "{\"id\":\"user_oriented_task_2\",\"output\":\n";
        let err = read_responses(&write(&dir, &text), &items())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows.jsonl:2:"), "{err}");

        let text = row(1) + "{\"id\":\"user_oriented_task_2\",\"text\":\"r\"}\n";
        let err = read_responses(&write(&dir, &text), &items())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows.jsonl:2: no \"output\""), "{err}");

        let text = row(1) + &row(1);
        let err = read_responses(&write(&dir, &text), &items())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rows.jsonl:2: id user_oriented_task_1 already has a row on line 1"),
            "{err}"
        );

        let text = "{\"id\":7,\"output\":\"r\"}\n";
        let err = read_responses(&write(&dir, text), &items())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows.jsonl:1: \"id\" must be"), "{err}");

        let text = "{\"id\":\"user_oriented_task_1\",\"output\":null}\n";
        let err = read_responses(&write(&dir, text), &items())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rows.jsonl:1: \"output\" is null"), "{err}");
    }

    #[test]
    fn judgements_are_checked_against_the_items() {
        let dir = tempfile::tempdir().unwrap();
        let items = &items()[..1];
        let ok = r#"{"id":"user_oriented_task_1","subset":"Easy_set","question_label":[["Content"],["Format"]],"output":"o","eval":[true,null]}"#;
        let given = read_judgements(&write(&dir, ok), items).unwrap();
        assert_eq!(
            given,
            vec![Given {
                output: "o".into(),
                eval: vec![Some(true), None]
            }]
        );
        for (bad, want) in [
            (
                r#"{"id":"user_oriented_task_1","eval":[true,false,true]}"#,
                "3 verdicts for 2 questions",
            ),
            (
                r#"{"id":"user_oriented_task_1","eval":null}"#,
                "has no \"eval\"",
            ),
            (r#"{"id":"user_oriented_task_1"}"#, "has no \"eval\""),
            (
                r#"{"id":"user_oriented_task_1","eval":["Yes"]}"#,
                "only true, false and null",
            ),
            (
                r#"{"id":"user_oriented_task_1","eval":[true],"subset":"Hard_set"}"#,
                "the item is in Easy_set",
            ),
            (
                r#"{"id":"user_oriented_task_1","eval":[true],"question_label":[["Content"],["Style"]]}"#,
                "question_label differs",
            ),
        ] {
            let err = read_judgements(&write(&dir, bad), items)
                .unwrap_err()
                .to_string();
            assert!(err.contains("rows.jsonl:1:"), "{err}");
            assert!(err.contains(want), "{want:?} not in {err}");
        }
    }
}
