//! Seed readers: JSONL (`instruction`, optional `id`, `input`, `response`), Alpaca JSON
//! (`instruction`/`input`/`output`), ShareGPT and WizardLM Evol-Instruct (`conversations` of
//! `{from, value}`, `idx` as id), and other layouts through a [`FieldMap`].
//!
//! Every problem names the file and the 1-based line of the record: invalid UTF-8, a line that
//! is not JSON, a missing or empty instruction, one too large to be an instruction, a duplicate
//! id. By default the first problem is an error; with `skip_bad` the bad records are returned
//! apart (for the caller's quarantine) and the good ones go on.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::records::{Seed, seed_id_for};

/// An instruction this long is a document pasted by mistake, not an instruction.
pub const MAX_INSTRUCTION_BYTES: usize = 512 * 1024;

/// Which layout the file has. `Auto` looks at the first character (`[` = a JSON array) and at
/// each record's keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SeedFormat {
    #[default]
    Auto,
    /// One JSON object a line with `instruction` (`output` or `response` as the response).
    Jsonl,
    /// A JSON array (or JSONL) of `{instruction, input, output}`.
    Alpaca,
    /// A JSON array (or JSONL) of `{idx|id, conversations: [{from, value}]}`.
    ShareGpt,
}

impl std::str::FromStr for SeedFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "jsonl" => Ok(Self::Jsonl),
            "alpaca" => Ok(Self::Alpaca),
            "sharegpt" | "wizardlm" => Ok(Self::ShareGpt),
            other => Err(format!(
                "unknown seed format {other:?}: expected auto, jsonl, alpaca or sharegpt"
            )),
        }
    }
}

/// Field names for layouts the readers don't know (`--field instruction=prompt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    pub instruction: Option<String>,
    pub input: Option<String>,
    pub response: Option<String>,
    pub id: Option<String>,
}

impl FieldMap {
    /// Applies one `NAME=KEY` assignment, NAME one of instruction, input, response, id.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (name, key) = assignment
            .split_once('=')
            .filter(|(n, k)| !n.is_empty() && !k.is_empty())
            .ok_or_else(|| format!("--field wants NAME=KEY, got {assignment:?}"))?;
        let slot = match name {
            "instruction" => &mut self.instruction,
            "input" => &mut self.input,
            "response" => &mut self.response,
            "id" => &mut self.id,
            other => {
                return Err(format!(
                    "--field {other}: NAME must be instruction, input, response or id"
                ));
            }
        };
        *slot = Some(key.to_owned());
        Ok(())
    }
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSeed {
    pub line: usize,
    pub reason: String,
    /// The record's text, cut to a few KB.
    pub raw: String,
}

/// What a seed file held.
#[derive(Debug, Default)]
pub struct SeedSet {
    pub seeds: Vec<Seed>,
    pub bad: Vec<BadSeed>,
}

/// A seed file that cannot be used, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SeedError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
        }
    }
}

/// Reads every seed of `path`. With `skip_bad`, bad records are collected in
/// [`SeedSet::bad`] instead of failing the read; a file that is unreadable as a whole is
/// always an error.
pub fn read_seeds(
    path: &Path,
    format: SeedFormat,
    fields: &FieldMap,
    skip_bad: bool,
) -> Result<SeedSet, SeedError> {
    let bytes = std::fs::read(path).map_err(|e| SeedError {
        path: path.to_owned(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    let file_err = |line: usize, reason: String| SeedError {
        path: path.to_owned(),
        line,
        reason,
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let records: Vec<(usize, Result<Value, String>, String)> =
        if first == Some(b'[') && format != SeedFormat::Jsonl {
            json_array_records(&bytes).map_err(|(line, reason)| file_err(line, reason))?
        } else {
            jsonl_records(&bytes)
        };

    let mut set = SeedSet::default();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (line, parsed, raw) in records {
        let seed = parsed.and_then(|value| seed_from_value(&value, line, format, fields));
        let seed = seed.and_then(|seed| match first_line_of.get(&seed.id) {
            Some(first) => Err(format!(
                "duplicate id {:?} (first at line {first})",
                seed.id
            )),
            None => Ok(seed),
        });
        match seed {
            Ok(seed) => {
                first_line_of.insert(seed.id.clone(), line);
                set.seeds.push(seed);
            }
            Err(reason) if skip_bad => set.bad.push(BadSeed {
                line,
                reason,
                raw: cut(&raw, 4096),
            }),
            Err(reason) => return Err(file_err(line, reason)),
        }
    }
    if set.seeds.is_empty() && set.bad.is_empty() {
        return Err(file_err(0, "no seeds in the file".into()));
    }
    Ok(set)
}

type Records = Vec<(usize, Result<Value, String>, String)>;

/// One record a non-blank line; a line's problem stays with that line.
fn jsonl_records(bytes: &[u8]) -> Records {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(line) {
            Err(e) => out.push((
                line_no,
                Err(format!(
                    "invalid UTF-8 at byte {} of the line",
                    e.valid_up_to() + 1
                )),
                String::from_utf8_lossy(line).into_owned(),
            )),
            Ok(text) => {
                let parsed =
                    serde_json::from_str::<Value>(text).map_err(|e| format!("not valid JSON: {e}"));
                out.push((line_no, parsed, text.to_owned()));
            }
        }
    }
    out
}

/// The elements of a JSON array, each with the line it starts on.
fn json_array_records(bytes: &[u8]) -> Result<Records, (usize, String)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        (line, "invalid UTF-8".to_owned())
    })?;
    let elements: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| (e.line(), format!("not a valid JSON array: {e}")))?;
    let base = text.as_ptr() as usize;
    Ok(elements
        .into_iter()
        .map(|raw| {
            // The raw slices borrow from `text`, so their address gives their offset.
            let offset = raw.get().as_ptr() as usize - base;
            let line = 1 + text.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            let parsed = serde_json::from_str::<Value>(raw.get())
                .map_err(|e| format!("not valid JSON: {e}"));
            (line, parsed, raw.get().to_owned())
        })
        .collect())
}

fn seed_from_value(
    value: &Value,
    line: usize,
    format: SeedFormat,
    fields: &FieldMap,
) -> Result<Seed, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(value)))?;
    let sharegpt = match format {
        SeedFormat::ShareGpt => true,
        SeedFormat::Auto => fields.instruction.is_none() && obj.contains_key("conversations"),
        SeedFormat::Jsonl | SeedFormat::Alpaca => false,
    };
    let id_keys: Vec<&str> = match &fields.id {
        Some(k) => vec![k.as_str()],
        None => vec!["id", "idx"],
    };
    let given_id = id_keys
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
        .map(|(k, v)| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!(
                "`{k}` must be a non-empty string or a number, found {}",
                kind(other)
            )),
        })
        .transpose()?;

    let (instruction, input, response) = if sharegpt {
        let (instruction, response) = sharegpt_turns(obj)?;
        (instruction, None, response)
    } else {
        let key = fields.instruction.as_deref().unwrap_or("instruction");
        let instruction = match obj.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("`{key}` must be a string, found {}", kind(other))),
            None => {
                return Err(format!(
                    "no `{key}` field (keys: {}); name the field with --field instruction=KEY",
                    keys(obj)
                ));
            }
        };
        let input = optional_string(obj, fields.input.as_deref().unwrap_or("input"))?;
        let response = match &fields.response {
            Some(k) => optional_string(obj, k)?,
            None => match optional_string(obj, "response")? {
                Some(r) => Some(r),
                None => optional_string(obj, "output")?,
            },
        };
        (instruction, input, response)
    };

    if instruction.trim().is_empty() {
        return Err("empty instruction".into());
    }
    if instruction.len() > MAX_INSTRUCTION_BYTES {
        return Err(format!(
            "instruction is {} bytes; the limit is {} KiB",
            instruction.len(),
            MAX_INSTRUCTION_BYTES / 1024
        ));
    }
    let response = response.filter(|r| !r.trim().is_empty());
    let id = given_id.unwrap_or_else(|| seed_id_for(&instruction));
    Ok(Seed {
        id,
        instruction,
        input: input.filter(|i| !i.trim().is_empty()),
        response,
        line,
    })
}

/// The first human turn and the assistant turn that answers it.
fn sharegpt_turns(obj: &Map<String, Value>) -> Result<(String, Option<String>), String> {
    let turns = obj
        .get("conversations")
        .and_then(Value::as_array)
        .ok_or("no `conversations` array")?;
    let speaker = |t: &Value| {
        t.get("from")
            .or_else(|| t.get("role"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let text = |t: &Value| {
        t.get("value")
            .or_else(|| t.get("content"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let human = turns
        .iter()
        .position(|t| matches!(speaker(t).as_deref(), Some("human" | "user")))
        .ok_or("`conversations` has no human turn")?;
    let instruction = text(&turns[human]).ok_or("the human turn has no string `value`")?;
    let response = turns[human + 1..]
        .iter()
        .take_while(|t| !matches!(speaker(t).as_deref(), Some("human" | "user")))
        .find(|t| {
            matches!(
                speaker(t).as_deref(),
                Some("gpt" | "assistant" | "chatgpt" | "model" | "bard")
            )
        })
        .and_then(text);
    Ok((instruction, response))
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` must be a string, found {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn keys(obj: &Map<String, Value>) -> String {
    let names: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn read(bytes: &[u8]) -> Result<SeedSet, SeedError> {
        let f = file(bytes);
        read_seeds(f.path(), SeedFormat::Auto, &FieldMap::default(), false)
    }

    fn error_at(bytes: &[u8]) -> (usize, String) {
        let err = read(bytes).unwrap_err();
        (err.line, err.reason)
    }

    #[test]
    fn jsonl_with_and_without_ids() {
        let set = read(
            b"{\"id\": \"a\", \"instruction\": \"Do X.\", \"response\": \"X.\"}\n\n{\"instruction\": \"Do Y.\", \"id\": 7}\n{\"instruction\": \"Do Z.\", \"output\": \"Z\"}\n",
        )
        .unwrap();
        let ids: Vec<_> = set.seeds.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "7", seed_id_for("Do Z.").as_str()]);
        assert_eq!(set.seeds[0].response.as_deref(), Some("X."));
        assert_eq!(set.seeds[2].response.as_deref(), Some("Z"));
        assert_eq!(
            set.seeds.iter().map(|s| s.line).collect::<Vec<_>>(),
            [1, 3, 4]
        );
    }

    #[test]
    fn alpaca_array_keeps_input_and_lines() {
        let set = read(
            b"[\n  {\"instruction\": \"Translate.\", \"input\": \"Bonjour\", \"output\": \"Hello\"},\n  {\"instruction\": \"Count.\", \"input\": \"\", \"output\": \"\"}\n]",
        )
        .unwrap();
        assert_eq!(set.seeds[0].prompt(), "Translate.\n\nBonjour");
        assert_eq!(set.seeds[0].response.as_deref(), Some("Hello"));
        assert_eq!(set.seeds[1].input, None);
        assert_eq!(
            set.seeds[1].response, None,
            "an empty output is no response"
        );
        assert_eq!(set.seeds[1].line, 3);
    }

    #[test]
    fn sharegpt_takes_first_human_turn_and_its_answer() {
        let set = read(br#"[{"idx": "alpaca_12", "conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}]},
{"idx": "alpaca_13", "conversations": [{"from": "human", "value": "Q only"}]}]"#)
        .unwrap();
        assert_eq!(set.seeds[0].id, "alpaca_12");
        assert_eq!(set.seeds[0].instruction, "Q1");
        assert_eq!(set.seeds[0].response.as_deref(), Some("A1"));
        assert_eq!(set.seeds[1].response, None);
        assert_eq!(set.seeds[1].line, 2);
    }

    #[test]
    fn field_map_reads_other_layouts() {
        let f = file(b"{\"uid\": \"q1\", \"prompt\": \"Write.\", \"answer\": \"Done.\"}\n");
        let mut fields = FieldMap::default();
        for a in ["instruction=prompt", "response=answer", "id=uid"] {
            fields.set(a).unwrap();
        }
        let set = read_seeds(f.path(), SeedFormat::Auto, &fields, false).unwrap();
        assert_eq!(set.seeds[0].id, "q1");
        assert_eq!(set.seeds[0].response.as_deref(), Some("Done."));
        assert!(fields.set("colour=x").is_err());
        assert!(fields.set("instruction=").is_err());
    }

    #[test]
    fn bad_records_name_their_line() {
        assert_eq!(
            error_at(b"{\"instruction\": \"ok\"}\n{\"instruction\": \"ok\"\n").0,
            2
        );
        let (line, reason) = error_at(b"{\"instruction\": \"a\"}\n{\"instruction\": \"b \xff\"}\n");
        assert_eq!(line, 2);
        assert!(reason.contains("invalid UTF-8"), "{reason}");
        let (line, reason) = error_at(b"{\"instruction\": \"a\"}\n\n{\"instruction\": \"   \"}\n");
        assert_eq!((line, reason.as_str()), (3, "empty instruction"));
        let (line, reason) = error_at(
            b"{\"id\": \"x\", \"instruction\": \"a\"}\n{\"id\": \"x\", \"instruction\": \"b\"}\n",
        );
        assert_eq!(line, 2);
        assert!(reason.contains("first at line 1"), "{reason}");
        let (line, reason) = error_at(b"{\"prompt\": \"a\"}\n");
        assert_eq!(line, 1);
        assert!(reason.contains("--field instruction=KEY"), "{reason}");
        let (line, reason) = error_at(b"[1, 2]");
        assert_eq!(line, 1);
        assert!(reason.contains("expected a JSON object"), "{reason}");
        let (line, _) = error_at(b"[\n{\"instruction\": \"a\"},\n{\"instruction\": }\n]");
        assert_eq!(line, 3);
        let big = format!(
            "{{\"instruction\": \"{}\"}}\n",
            "w".repeat(MAX_INSTRUCTION_BYTES + 1)
        );
        let (line, reason) = error_at(big.as_bytes());
        assert_eq!(line, 1);
        assert!(reason.contains("limit"), "{reason}");
        assert!(read(b"\n\n").unwrap_err().reason.contains("no seeds"));
    }

    #[test]
    fn skip_bad_sets_bad_records_apart() {
        let f = file(b"{\"instruction\": \"a\"}\nnot json\n{\"instruction\": \"\"}\n{\"instruction\": \"b\"}\n");
        let set = read_seeds(f.path(), SeedFormat::Auto, &FieldMap::default(), true).unwrap();
        assert_eq!(set.seeds.len(), 2);
        assert_eq!(set.bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(set.bad[0].raw, "not json");
    }

    #[test]
    fn errors_display_file_and_line() {
        let err = SeedError {
            path: "seeds.jsonl".into(),
            line: 4,
            reason: "empty instruction".into(),
        };
        assert_eq!(err.to_string(), "seeds.jsonl:4: empty instruction");
    }
}
