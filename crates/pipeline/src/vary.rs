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

use crate::ask::{StepFailure, ask_json, request, unit_seed};
use crate::edit::token_edit_ratio;
use crate::records::{Decomposition, EditKind, Variant, stage};
use crate::runner::Cx;

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "edit_kind": {"type": "string", "enum": ["contradict", "parallel"]},
            "modified_sub_instruction": {"type": "string", "minLength": 1, "maxLength": 200},
            "find": {"type": "string", "minLength": 1, "maxLength": 200},
            "replace": {"type": "string", "maxLength": 200},
            "valid": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 120}
        },
        "required": ["edit_kind", "modified_sub_instruction", "find", "replace", "valid", "reason"],
        "additionalProperties": false
    })
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
        "vary",
        "modify",
        context! {
            instruction => seed.prompt(),
            sub_instructions => decomposition.sub_instructions.clone(),
            k => k,
            sub_instruction => original.clone(),
        },
    )?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 384,
        seed: unit_seed(&vid, stage::VARY),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version("vary"));
    let mut calls = Vec::new();
    let answer: Answer = ask_json(
        &cx.models.generator,
        req,
        "variant",
        schema(),
        |_| Ok(()),
        &mut calls,
    )
    .await?;

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
        calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
