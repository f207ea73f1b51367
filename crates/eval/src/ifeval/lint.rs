//! A lint for IFEval prompt data: where an instruction's kwargs disagree with the prompt text
//! the model actually reads, or a row repeats an instruction id.
//!
//! The lint reports; it never changes a score (the reference scores the kwargs as they are,
//! and so do we). Known cases in the official data: key 337 asks for 400 words but its kwargs
//! say 336, key 2078 asks for exactly one bullet and also for "a few", keys 30 and 1040 list an
//! instruction twice.

use std::collections::HashSet;

use demorecon_checks::Constraint;
use serde::Serialize;
use serde_json::Value;

use super::InputRow;

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LintIssue {
    pub key: i64,
    pub instruction_id: String,
    /// `duplicate_id`, `number_not_in_prompt`, `vague_vs_exact`, `text_not_in_prompt` or
    /// `invalid_kwargs`.
    pub kind: &'static str,
    pub message: String,
}

const NUMBER_KWARGS: [&str; 10] = [
    "num_words",
    "num_sentences",
    "num_paragraphs",
    "num_bullets",
    "num_highlights",
    "num_placeholders",
    "num_sections",
    "frequency",
    "capital_frequency",
    "let_frequency",
];

const TEXT_KWARGS: [&str; 7] = [
    "keyword",
    "end_phrase",
    "first_word",
    "postscript_marker",
    "section_spliter",
    "prompt_to_repeat",
    "letter",
];

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// Numbers written in `text`, as digits or as English words up to twenty (plus tens).
fn numbers_in(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let lower = text.to_lowercase();
    let mut digits = String::new();
    for c in lower.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if c == ',' && !digits.is_empty() {
            // 1,000 style separators
        } else if !digits.is_empty() {
            if let Ok(n) = digits.parse() {
                out.push(n);
            }
            digits.clear();
        }
    }
    for word in lower.split(|c: char| !c.is_alphabetic()) {
        if let Some(n) = NUMBER_WORDS.iter().position(|w| *w == word) {
            out.push(n as u64);
        }
        let tens = [
            ("thirty", 30),
            ("forty", 40),
            ("fifty", 50),
            ("hundred", 100),
        ];
        if let Some((_, n)) = tens.iter().find(|(w, _)| *w == word) {
            out.push(*n);
        }
    }
    out
}

/// Lints every row. Issues come in row order.
pub fn lint(inputs: &[InputRow]) -> Vec<LintIssue> {
    let mut issues = Vec::new();
    for row in inputs {
        let mut seen = HashSet::new();
        let prompt_lower = row.prompt.to_lowercase();
        let numbers = numbers_in(&row.prompt);
        for (id, kwargs) in row.instruction_id_list.iter().zip(&row.kwargs) {
            let mut push = |kind, message: String| {
                issues.push(LintIssue {
                    key: row.key,
                    instruction_id: id.clone(),
                    kind,
                    message,
                })
            };
            if !seen.insert(id.as_str()) {
                push("duplicate_id", format!("{id} is listed more than once"));
            }
            if let Err(e) = Constraint::from_id(id, kwargs) {
                push("invalid_kwargs", e.to_string());
            }
            let Some(map) = kwargs.as_object() else {
                continue;
            };
            for key in NUMBER_KWARGS {
                let Some(n) = map.get(key).and_then(Value::as_u64) else {
                    continue;
                };
                // "at most N" is encoded as "less than N+1", "more than N" as "at least N+1".
                if !numbers.contains(&n) && !numbers.contains(&n.saturating_sub(1)) {
                    let seen: Vec<String> = numbers.iter().map(u64::to_string).collect();
                    let said = if seen.is_empty() {
                        "no number".to_owned()
                    } else {
                        seen.join(", ")
                    };
                    push(
                        "number_not_in_prompt",
                        format!("kwargs {key}={n}, but the prompt text says {said}"),
                    );
                }
            }
            let exact = [
                "detectable_format:number_bullet_lists",
                "length_constraints:number_paragraphs",
            ];
            if exact.contains(&id.as_str()) {
                for vague in ["a few ", "several ", "some bullet", "multiple "] {
                    if prompt_lower.contains(vague) {
                        push(
                            "vague_vs_exact",
                            format!(
                                "kwargs require an exact count, but the prompt also says {:?}",
                                vague.trim()
                            ),
                        );
                    }
                }
            }
            let mut texts: Vec<(&str, &str)> = Vec::new();
            for key in TEXT_KWARGS {
                if let Some(s) = map.get(key).and_then(Value::as_str) {
                    texts.push((key, s));
                }
            }
            for key in ["keywords", "forbidden_words"] {
                if let Some(list) = map.get(key).and_then(Value::as_array) {
                    texts.extend(list.iter().filter_map(Value::as_str).map(|s| (key, s)));
                }
            }
            for (key, s) in texts {
                let needle = s.trim().to_lowercase();
                if !needle.is_empty() && !prompt_lower.contains(&needle) {
                    push(
                        "text_not_in_prompt",
                        format!("kwargs {key}={s:?} does not appear in the prompt text"),
                    );
                }
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::ifeval::tests::input as row;

    #[test]
    fn finds_number_contradictions_and_duplicates() {
        let rows = vec![
            row(
                337,
                "Write at least 400 words.",
                &["length_constraints:number_words"],
                vec![json!({"num_words": 336, "relation": "at least"})],
            ),
            row(
                30,
                "Wrap it in quotes.",
                &["startend:quotation", "startend:quotation"],
                vec![json!({}), json!({})],
            ),
            row(
                2078,
                "Give a few reasons in exactly one bullet point.",
                &["detectable_format:number_bullet_lists"],
                vec![json!({"num_bullets": 1})],
            ),
            row(
                5,
                "Write 3 paragraphs and include the word banana.",
                &["length_constraints:number_paragraphs", "keywords:existence"],
                vec![
                    json!({"num_paragraphs": 3}),
                    json!({"keywords": ["banana"]}),
                ],
            ),
        ];
        let issues = lint(&rows);
        let kinds: Vec<(i64, &str)> = issues.iter().map(|i| (i.key, i.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (337, "number_not_in_prompt"),
                (30, "duplicate_id"),
                (2078, "vague_vs_exact")
            ]
        );
        assert!(issues[0].message.contains("400"));
    }

    #[test]
    fn reports_invalid_kwargs_and_missing_text() {
        let rows = vec![row(
            9,
            "End with 'bye'.",
            &["startend:end_checker", "nope:nope"],
            vec![json!({"end_phrase": "see you"}), json!({})],
        )];
        let kinds: Vec<&str> = lint(&rows).iter().map(|i| i.kind).collect();
        assert_eq!(kinds, vec!["text_not_in_prompt", "invalid_kwargs"]);
    }
}
