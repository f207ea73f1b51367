//! Stage 3, vary: for sub-instruction `k`, the model proposes a modified requirement (one that
//! contradicts it, or a parallel alternative), names the exact words of the seed that state
//! it and their replacement, and says whether the result is still a reasonable task.
//!
//! The pipeline applies the replacement itself, so everything outside the replaced words stays
//! as it was: the variant is a minimal edit by construction, and its size is measured
//! ([`crate::edit`]) and flagged past `--max-edit-ratio`. A variant whose words cannot be found
//! or that changes nothing is kept in the run as invalid, with the reason.

use demorecon_data::{Seed, records::variant_id};
use demorecon_llm::Sampling;
use minijinja::context;
use regex::RegexBuilder;
use serde::Deserialize;
use serde_json::{Value, json};

use demorecon_judge::ask::ask_json_with;

use crate::ask::{StepFailure, failed, request, unit_seed};
use crate::edit::token_edit_ratio;
use crate::graph::VARY;
use crate::records::{Decomposition, EditKind, Variant};
use crate::runner::Cx;

/// The answer's schema. `find` may only be one of `spans` (words that occur in the seed), so
/// the edit always applies; an empty list leaves it free.
pub fn schema(spans: &[String]) -> Value {
    let find = if spans.is_empty() {
        json!({"type": "string", "minLength": 1, "maxLength": 200})
    } else {
        json!({"type": "string", "enum": spans})
    };
    json!({
        "type": "object",
        "properties": {
            "find": find,
            "replace": {"type": "string", "maxLength": 200},
            "edit_kind": {"type": "string", "enum": ["contradict", "parallel"]},
            "modified_sub_instruction": {"type": "string", "minLength": 1, "maxLength": 200},
            "valid": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 120}
        },
        "required": ["find", "replace", "edit_kind", "modified_sub_instruction", "valid", "reason"],
        "additionalProperties": false
    })
}

/// Most spans offered for `find`.
pub const MAX_SPANS: usize = 200;
const MAX_SPAN_WORDS: usize = 6;

fn normalise(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// Candidate `find` spans: runs of 1–6 words of `instruction` (exact substrings, trimmed of
/// edge punctuation) that share a content word with `sub_instruction`, in reading order.
/// Without any shared word, every run of up to 3 words. At most [`MAX_SPANS`].
pub fn candidate_spans(instruction: &str, sub_instruction: &str) -> Vec<String> {
    const STOP: [&str; 24] = [
        "the", "and", "for", "with", "that", "this", "your", "you", "are", "was", "from", "into",
        "its", "his", "her", "their", "our", "about", "should", "must", "will", "use", "make",
        "not",
    ];
    let content: std::collections::HashSet<String> = sub_instruction
        .split_whitespace()
        .map(normalise)
        .filter(|w| w.chars().count() >= 3 && !STOP.contains(&w.as_str()))
        .collect();
    let words: Vec<(usize, usize, String)> = instruction
        .split_whitespace()
        .map(|w| {
            let start = w.as_ptr() as usize - instruction.as_ptr() as usize;
            (start, start + w.len(), normalise(w))
        })
        .collect();
    let edge = |c: char| !c.is_alphanumeric() && !matches!(c, '"' | '\'' | ')' | '>' | '%');
    let spans = |max_len: usize, need_overlap: bool| {
        let mut out: Vec<String> = Vec::new();
        for i in 0..words.len() {
            for len in 1..=max_len.min(words.len() - i) {
                let run = &words[i..i + len];
                if need_overlap && !run.iter().any(|(_, _, w)| content.contains(w)) {
                    continue;
                }
                let text = instruction[run[0].0..run[len - 1].1]
                    .trim_end_matches(edge)
                    .trim_start_matches(|c: char| !c.is_alphanumeric() && c != '"');
                if !text.is_empty() && !out.iter().any(|t| t == text) {
                    out.push(text.to_owned());
                }
            }
        }
        out
    };
    let mut out = spans(MAX_SPAN_WORDS, true);
    if out.is_empty() {
        out = spans(3, false);
    }
    out.truncate(MAX_SPANS);
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    edit_kind: EditKind,
    modified_sub_instruction: String,
    find: String,
    replace: String,
    valid: bool,
    reason: String,
}

/// Replaces the first occurrence of `find` in `text` (exactly, else ignoring case and runs
/// of whitespace) with `replace`.
pub fn apply_edit(text: &str, find: &str, replace: &str) -> Result<String, String> {
    let words: Vec<&str> = find.split_whitespace().collect();
    if words.is_empty() {
        return Err("no words to replace were given".into());
    }
    if find.trim() == replace.trim() {
        return Err("the replacement is the same as the original words".into());
    }
    if let Some(at) = text.find(find) {
        return Ok(format!(
            "{}{}{}",
            &text[..at],
            replace,
            &text[at + find.len()..]
        ));
    }
    let pattern = words
        .iter()
        .map(|w| regex::escape(w))
        .collect::<Vec<_>>()
        .join(r"\s+");
    let re = RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("cannot search for the words: {e}"))?;
    match re.find(text) {
        Some(m) => Ok(format!(
            "{}{}{}",
            &text[..m.start()],
            replace,
            &text[m.end()..]
        )),
        None => Err(format!(
            "the words to replace ({find:?}) are not in the seed"
        )),
    }
}

pub async fn run(
    cx: &Cx<'_>,
    seed: &Seed,
    decomposition: &Decomposition,
    k: usize,
) -> Result<Variant, StepFailure> {
    let vid = variant_id(&seed.id, k);
    let original = decomposition.sub_instructions[k].clone();
    let messages = cx.prompts.render(
        VARY.prompt,
        "modify",
        context! {
            instruction => seed.prompt(),
            sub_instructions => decomposition.sub_instructions.clone(),
            k => k,
            sub_instruction => original.clone(),
        },
    )?;
    // A little temperature (seeded, so still reproducible) keeps models from echoing the
    // examples' replacements.
    let sampling = Sampling {
        temperature: 0.5,
        top_p: 0.9,
        max_tokens: 384,
        seed: unit_seed(&vid, VARY.name),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version(VARY.prompt));
    let mut calls = Vec::new();
    let answer: Answer = ask_json_with(
        cx.model(VARY.role),
        req,
        "variant",
        schema(&candidate_spans(&seed.instruction, &original)),
        |_| Ok(()),
        &mut calls,
    )
    .await
    .map_err(|e| failed(e, &calls))?;

    let edited = apply_edit(&seed.instruction, &answer.find, &answer.replace);
    let (prompt, valid, reason) = match edited {
        Ok(instruction) => {
            let variant_seed = Seed {
                instruction,
                ..seed.clone()
            };
            let prompt = variant_seed.prompt();
            if !answer.valid {
                (prompt, false, answer.reason)
            } else if answer
                .modified_sub_instruction
                .trim()
                .eq_ignore_ascii_case(original.trim())
            {
                (
                    prompt,
                    false,
                    "the modified requirement equals the original".into(),
                )
            } else {
                (prompt, true, answer.reason)
            }
        }
        Err(problem) => (String::new(), false, problem),
    };
    let edit_ratio = if prompt.is_empty() {
        0.0
    } else {
        token_edit_ratio(&seed.prompt(), &prompt)
    };
    Ok(Variant {
        variant_id: vid,
        seed_id: seed.id.clone(),
        k,
        original_sub_instruction: original,
        modified_sub_instruction: answer.modified_sub_instruction.trim().to_owned(),
        edit_kind: answer.edit_kind,
        find: answer.find,
        replace: answer.replace,
        prompt,
        valid,
        reason,
        edit_ratio,
        rewrite_flagged: edit_ratio > cx.opts.max_edit_ratio,
        constraint: None,
        calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_substrings_near_the_requirement() {
        let seed = "Write a polite SMS to my boss, Ms. Lee. Use at most 30 words.";
        let spans = candidate_spans(seed, "be polite");
        assert!(spans.iter().all(|s| seed.contains(s.as_str())), "{spans:?}");
        assert!(spans.contains(&"polite".to_owned()));
        assert!(spans.contains(&"polite SMS to my boss".to_owned()));
        assert!(!spans.iter().any(|s| s.contains("words")), "{spans:?}");
        let counted = candidate_spans(seed, "at most 30 words");
        assert!(
            counted.contains(&"at most 30 words".to_owned()),
            "{counted:?}"
        );
        let unrelated = candidate_spans("One two three four.", "zebra");
        assert_eq!(unrelated.len(), 4 + 3 + 2);
        assert!(unrelated.contains(&"four".to_owned()));
        let long = "word ".repeat(400);
        assert!(candidate_spans(&long, "word").len() <= MAX_SPANS);
    }

    #[test]
    fn edits_apply_exactly_or_loosely() {
        let text = "Write a polite  SMS to my boss.";
        assert_eq!(
            apply_edit(text, "polite", "casual").unwrap(),
            "Write a casual  SMS to my boss."
        );
        assert_eq!(
            apply_edit(text, "Polite SMS", "formal email").unwrap(),
            "Write a formal email to my boss."
        );
        assert!(
            apply_edit(text, "letter", "note")
                .unwrap_err()
                .contains("not in the seed")
        );
        assert!(apply_edit(text, "polite", "polite").is_err());
        assert!(apply_edit(text, "  ", "x").is_err());
        assert_eq!(apply_edit("a (b) c", "(b)", "[b]").unwrap(), "a [b] c");
    }
}
