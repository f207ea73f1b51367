//! Verifiable variants (beyond the paper): a variant whose modified requirement is a
//! constraint that code decides — one of IFEval's instruction types, with its parameters —
//! so its responses can be rejection-sampled and its pairs verified without a judge.
//!
//! For sub-instruction `k` of a seed the pipeline either *adapts* a length requirement the
//! seed already states ("under 120 words" becomes "fewer than 40 words"; "at least 3
//! sentences" becomes "fewer than 2 sentences"), replacing those words of the seed, or *adds*
//! a constraint drawn from [`FAMILIES`] as one sentence after the instruction. The draw is a
//! function of the seed id and `k` (no model call, no randomness across runs), consecutive
//! `k` take different families, and a family the seed already constrains is skipped so the
//! variant does not contradict itself. This module makes the constraint and its wording;
//! sampling against it is `respond`'s job and the verdict `verify`'s.

use std::collections::HashSet;
use std::sync::LazyLock;

use demorecon_data::Seed;
use demorecon_judge::checkable::{self, Check};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ask::StepFailure;
use crate::edit::token_edit_ratio;
use crate::records::{EditKind, Quarantine, Variant};

/// Which variants a run makes per sub-instruction (`--variant-kinds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantKinds {
    /// The paper's variants: the generator modifies the sub-instruction, the judge verifies.
    #[default]
    Free,
    /// Code-checkable constraints only.
    Verifiable,
    Both,
}

impl VariantKinds {
    pub fn free(self) -> bool {
        matches!(self, VariantKinds::Free | VariantKinds::Both)
    }
    pub fn verifiable(self) -> bool {
        matches!(self, VariantKinds::Verifiable | VariantKinds::Both)
    }
}

/// The id of verifiable variant `k` of a seed: `{seed_id}/c{k}` (free ones are `/v{k}`).
pub fn variant_id(seed_id: &str, k: usize) -> String {
    format!("{seed_id}/c{k}")
}

/// A variant's constraint: an IFEval instruction id (its family) and kwargs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstraintSpec {
    pub id: String,
    pub kwargs: Value,
}

impl ConstraintSpec {
    /// The code check of this constraint.
    pub fn check(&self) -> Result<Check, String> {
        Check::ifeval(&self.id, &self.kwargs)
    }

    /// The check, for a stage working on the variant: a constraint that cannot be built
    /// quarantines the unit.
    pub(crate) fn check_for_step(&self) -> Result<Check, StepFailure> {
        self.check().map_err(|reason| {
            StepFailure::Quarantine(Quarantine {
                kind: "bad_constraint".into(),
                reason,
                raw: None,
                calls: Vec::new(),
            })
        })
    }
}

/// A family of constraints: its IFEval id and how a constraint of it is drawn and worded.
pub struct Family {
    pub id: &'static str,
    /// Kwargs and the sentence that asks for them, from a hash of the unit; `None` where the
    /// family does not fit the seed.
    draw: fn(&Draw) -> Option<(Value, String)>,
}

/// What a draw may look at: the seed's instruction and a stream of pseudo-random numbers.
struct Draw<'a> {
    instruction: &'a str,
    hash: [u8; 32],
}

impl Draw<'_> {
    /// The `i`-th pseudo-random choice among `n`.
    fn pick(&self, i: usize, n: usize) -> usize {
        let b = &self.hash[(i * 4) % 28..(i * 4) % 28 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize % n.max(1)
    }
    fn one_of<T: Copy>(&self, i: usize, xs: &[T]) -> T {
        xs[self.pick(i, xs.len())]
    }
}

/// Words a response to an unrelated task is unlikely to contain, so the seed's response
/// fails a keyword requirement built from them.
const KEYWORDS: [&str; 24] = [
    "compass", "lantern", "velvet", "harbor", "meadow", "granite", "orchid", "thunder", "saddle",
    "quartz", "willow", "beacon", "canyon", "falcon", "marble", "pepper", "ribbon", "summit",
    "tunnel", "violin", "walnut", "anchor", "blossom", "glacier",
];

const END_PHRASES: [&str; 4] = [
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "That is all for now.",
    "Thank you for reading.",
];

const LANGUAGES: [(&str, &str); 3] = [("fr", "French"), ("es", "Spanish"), ("de", "German")];

/// A content word of the instruction (five letters or more, not a common function word), for
/// a forbidden-word requirement: the seed's response probably uses it.
fn content_word(d: &Draw) -> Option<String> {
    const COMMON: [&str; 20] = [
        "about", "above", "after", "again", "being", "below", "could", "every", "first", "other",
        "their", "there", "these", "those", "under", "using", "where", "which", "while", "would",
    ];
    let mut words: Vec<String> = d
        .instruction
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_lowercase()))
        .filter(|w| !COMMON.contains(w))
        .map(str::to_owned)
        .collect();
    words.sort();
    words.dedup();
    (!words.is_empty()).then(|| words[d.pick(5, words.len())].clone())
}

/// The families an added constraint is drawn from, each one of IFEval's instruction types.
pub static FAMILIES: [Family; 18] = [
    Family {
        id: "length_constraints:number_words",
        draw: |d| {
            let n = d.one_of(0, &[40, 50, 60, 80]);
            Some((
                json!({"relation": "less than", "num_words": n}),
                format!("Answer in fewer than {n} words."),
            ))
        },
    },
    Family {
        id: "length_constraints:number_sentences",
        draw: |d| {
            let n = d.one_of(0, &[3, 4, 5]);
            Some((
                json!({"relation": "less than", "num_sentences": n}),
                format!("Use fewer than {n} sentences."),
            ))
        },
    },
    Family {
        id: "length_constraints:number_paragraphs",
        draw: |d| {
            let n = d.one_of(0, &[2, 3]);
            Some((
                json!({"num_paragraphs": n}),
                format!(
                    "Your response should have {n} paragraphs, separated from each other by the \
                     markdown divider: ***"
                ),
            ))
        },
    },
    Family {
        id: "detectable_format:number_bullet_lists",
        draw: |d| {
            let n = d.one_of(0, &[2, 3, 4]);
            Some((
                json!({"num_bullets": n}),
                format!(
                    "Your answer must contain exactly {n} bullet points, in markdown, such as:\n\
                     * This is a point."
                ),
            ))
        },
    },
    Family {
        id: "keywords:existence",
        draw: |d| {
            let a = d.pick(0, KEYWORDS.len());
            let b = (a + 1 + d.pick(1, KEYWORDS.len() - 1)) % KEYWORDS.len();
            let (a, b) = (KEYWORDS[a], KEYWORDS[b]);
            Some((
                json!({"keywords": [a, b]}),
                format!("Include the keywords \"{a}\" and \"{b}\" in your response."),
            ))
        },
    },
    Family {
        id: "keywords:forbidden_words",
        draw: |d| {
            let w = content_word(d)?;
            Some((
                json!({"forbidden_words": [w]}),
                format!("The word \"{w}\" must not appear anywhere in your response."),
            ))
        },
    },
    Family {
        id: "change_case:english_lowercase",
        draw: |_| {
            Some((
                json!({}),
                "Write your entire response in lowercase letters; no capital letters are allowed."
                    .into(),
            ))
        },
    },
    Family {
        id: "change_case:english_capital",
        draw: |_| {
            Some((
                json!({}),
                "Write your entire response in English, using all capital letters.".into(),
            ))
        },
    },
    Family {
        id: "punctuation:no_comma",
        draw: |_| Some((json!({}), "Do not use any commas in your response.".into())),
    },
    Family {
        id: "detectable_format:json_format",
        draw: |_| Some((json!({}), "Wrap your entire output in JSON format.".into())),
    },
    Family {
        id: "detectable_format:title",
        draw: |_| {
            Some((
                json!({}),
                "Give your answer a title wrapped in double angular brackets, such as <<my title>>."
                    .into(),
            ))
        },
    },
    Family {
        id: "startend:end_checker",
        draw: |d| {
            let p = d.one_of(0, &END_PHRASES);
            Some((
                json!({"end_phrase": p}),
                format!("End your response with the exact phrase \"{p}\"."),
            ))
        },
    },
    Family {
        id: "startend:quotation",
        draw: |_| {
            Some((
                json!({}),
                "Wrap your entire response in double quotation marks.".into(),
            ))
        },
    },
    Family {
        id: "detectable_format:number_highlighted_sections",
        draw: |d| {
            let n = d.one_of(0, &[2, 3]);
            Some((
                json!({"num_highlights": n}),
                format!(
                    "Highlight at least {n} sections of your answer with markdown, for example \
                     *highlighted section*."
                ),
            ))
        },
    },
    Family {
        id: "detectable_format:multiple_sections",
        draw: |d| {
            let n = d.one_of(0, &[2, 3]);
            Some((
                json!({"section_spliter": "SECTION", "num_sections": n}),
                format!(
                    "Divide your response into {n} sections, and begin each with SECTION X \
                     (SECTION 1, SECTION 2, and so on)."
                ),
            ))
        },
    },
    Family {
        id: "detectable_content:postscript",
        draw: |_| {
            Some((
                json!({"postscript_marker": "P.S."}),
                "At the end of your response, add a postscript starting with P.S.".into(),
            ))
        },
    },
    Family {
        id: "detectable_content:number_placeholders",
        draw: |d| {
            let n = d.one_of(0, &[1, 2]);
            Some((
                json!({"num_placeholders": n}),
                format!("Include at least {n} placeholders in square brackets, such as [address]."),
            ))
        },
    },
    Family {
        id: "language:response_language",
        draw: |d| {
            let (code, name) = d.one_of(0, &LANGUAGES);
            Some((
                json!({"language": code}),
                format!("Respond only in {name}; no other language is allowed."),
            ))
        },
    },
];

/// Families that conflict with each other: a seed constraining one skips the others.
const EXCLUSIVE: [&[&str]; 2] = [
    &[
        "change_case:english_lowercase",
        "change_case:english_capital",
    ],
    &[
        "detectable_format:json_format",
        "startend:quotation",
        "detectable_format:number_bullet_lists",
        "length_constraints:number_paragraphs",
        "detectable_format:multiple_sections",
    ],
];

/// The IFEval families the seed's own wording already constrains (as far as the judge crate's
/// patterns recognise them), widened by [`EXCLUSIVE`].
fn constrained(instruction: &str) -> HashSet<&'static str> {
    let names: Vec<String> = checkable::checks_for(instruction)
        .into_iter()
        .map(|c| c.name)
        .collect();
    let mut out: HashSet<&'static str> = FAMILIES
        .iter()
        .map(|f| f.id)
        .filter(|id| names.iter().any(|n| n.starts_with(id)))
        .collect();
    if names.iter().any(|n| n.starts_with("paragraphs")) {
        out.insert("length_constraints:number_paragraphs");
    }
    for group in EXCLUSIVE {
        if group.iter().any(|id| out.contains(id)) {
            out.extend(group.iter().copied());
        }
    }
    out
}

/// A length requirement the seed states in so many words: `(relation, n, unit)`.
static STATED_LENGTH: LazyLock<Regex> = LazyLock::new(|| {
    RegexBuilder::new(
        r"\b(at most|no more than|not more than|up to|fewer than|less than|under|at least|no fewer than|no less than|more than|over|exactly)\s+(\d+)\s+(words|sentences)\b",
    )
    .case_insensitive(true)
    .build()
    .expect("valid pattern")
});

/// The constraint for sub-instruction `k`: the adapted length requirement when the
/// sub-instruction is the seed's stated length, else a family drawn for `(seed, k)`.
struct Made {
    spec: ConstraintSpec,
    edit_kind: EditKind,
    find: String,
    /// What replaces `find`, or the sentence added when `find` is empty: the requirement as
    /// the variant states it.
    replace: String,
}

fn adapt(instruction: &str, sub_instruction: &str) -> Option<Made> {
    let cap = STATED_LENGTH.captures(instruction)?;
    let (relation, unit) = (cap[1].to_ascii_lowercase(), cap[3].to_ascii_lowercase());
    // Only the sub-instruction that is this length requirement is adapted.
    let sub = STATED_LENGTH.captures(sub_instruction)?;
    if sub[3].to_ascii_lowercase() != unit || sub[2] != cap[2] {
        return None;
    }
    let n: u64 = cap[2].parse().ok()?;
    let upper = matches!(
        relation.as_str(),
        "at most"
            | "no more than"
            | "not more than"
            | "up to"
            | "fewer than"
            | "less than"
            | "under"
    );
    let words = unit == "words";
    // (at least?, value, edit kind): a bound the seed's own answer most likely breaks, and
    // that a short answer can still meet.
    let (at_least, m, kind) = match (upper, words) {
        (true, true) if n >= 60 => (false, (n / 3).max(10), EditKind::Parallel),
        (true, true) => (true, n * 2, EditKind::Contradict),
        (true, false) if n >= 4 => (false, 2, EditKind::Parallel),
        (true, false) => (true, n + 3, EditKind::Contradict),
        (false, true) => (false, (n / 2).max(10), EditKind::Contradict),
        (false, false) => (false, (n / 2).max(2), EditKind::Contradict),
    };
    let (rel, phrase) = if at_least {
        ("at least", format!("at least {m} {unit}"))
    } else {
        ("less than", format!("fewer than {m} {unit}"))
    };
    let (id, key) = if words {
        ("length_constraints:number_words", "num_words")
    } else {
        ("length_constraints:number_sentences", "num_sentences")
    };
    Some(Made {
        spec: ConstraintSpec {
            id: id.into(),
            kwargs: json!({"relation": rel, key: m}),
        },
        edit_kind: kind,
        find: cap[0].to_owned(),
        replace: phrase,
    })
}

fn draw(seed: &Seed, k: usize) -> Option<Made> {
    let skip = constrained(&seed.instruction);
    let start = blake3::hash(seed.id.as_bytes()).as_bytes()[0] as usize;
    (0..FAMILIES.len())
        .map(|i| &FAMILIES[(start + k + i) % FAMILIES.len()])
        .filter(|f| !skip.contains(f.id))
        .find_map(|f| {
            let mut h = blake3::Hasher::new();
            h.update(b"verifiable\0");
            h.update(seed.id.as_bytes());
            h.update(&(k as u64).to_le_bytes());
            h.update(f.id.as_bytes());
            let d = Draw {
                instruction: &seed.instruction,
                hash: *h.finalize().as_bytes(),
            };
            let (kwargs, sentence) = (f.draw)(&d)?;
            Some(Made {
                spec: ConstraintSpec {
                    id: f.id.into(),
                    kwargs,
                },
                edit_kind: EditKind::Add,
                find: String::new(),
                replace: sentence,
            })
        })
}

/// Verifiable variant `k` of `seed` (whose sub-instructions are `subs`): made by code, valid
/// unless its constraint cannot be built.
pub fn make(seed: &Seed, subs: &[String], k: usize, max_edit_ratio: f64) -> Variant {
    let original = subs.get(k).cloned().unwrap_or_default();
    let made = adapt(&seed.instruction, &original).or_else(|| draw(seed, k));
    let vid = variant_id(&seed.id, k);
    let Some(made) = made else {
        return Variant {
            variant_id: vid,
            seed_id: seed.id.clone(),
            k,
            original_sub_instruction: original,
            modified_sub_instruction: String::new(),
            edit_kind: EditKind::Add,
            find: String::new(),
            replace: String::new(),
            prompt: String::new(),
            valid: false,
            reason: "every constraint family is already constrained by the seed".into(),
            edit_ratio: 0.0,
            rewrite_flagged: false,
            constraint: None,
            calls: Vec::new(),
        };
    };
    let (instruction, original, reason) = if made.find.is_empty() {
        (
            format!("{} {}", seed.instruction.trim_end(), made.replace),
            String::new(),
            format!("adds a {} constraint", made.spec.id),
        )
    } else {
        (
            seed.instruction.replacen(&made.find, &made.replace, 1),
            made.find.clone(),
            format!("adapts the seed's {:?} to {:?}", made.find, made.replace),
        )
    };
    let valid_check = made.spec.check();
    let prompt = Seed {
        instruction,
        ..seed.clone()
    }
    .prompt();
    let edit_ratio = token_edit_ratio(&seed.prompt(), &prompt);
    Variant {
        variant_id: vid,
        seed_id: seed.id.clone(),
        k,
        original_sub_instruction: original,
        modified_sub_instruction: made.replace.clone(),
        edit_kind: made.edit_kind,
        find: made.find,
        replace: made.replace,
        prompt,
        valid: valid_check.is_ok(),
        reason: valid_check.err().unwrap_or(reason),
        edit_ratio,
        rewrite_flagged: edit_ratio > max_edit_ratio,
        constraint: Some(made.spec),
        calls: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(id: &str, instruction: &str) -> Seed {
        Seed {
            id: id.into(),
            instruction: instruction.into(),
            input: None,
            response: None,
            line: 1,
        }
    }

    fn draw_for(f: &Family, instruction: &str, salt: u8) -> (Value, String) {
        let d = Draw {
            instruction,
            hash: [salt; 32],
        };
        (f.draw)(&d).expect("draws for a plain seed")
    }

    #[test]
    fn every_family_builds_its_ifeval_check() {
        for f in &FAMILIES {
            for salt in [0, 7, 200] {
                let (kwargs, sentence) = draw_for(f, "Describe the harbour of Lisbon.", salt);
                let spec = ConstraintSpec {
                    id: f.id.into(),
                    kwargs,
                };
                spec.check()
                    .unwrap_or_else(|e| panic!("{}: {e} ({sentence})", f.id));
            }
        }
    }

    #[test]
    fn wording_reads_back_as_the_same_check_where_the_judge_crate_parses_it() {
        // FGIV-Eval and free-form verification parse requirements from their wording; the
        // sentences used here mean the same constraint to those patterns.
        let mut read_back = 0;
        for f in &FAMILIES {
            let (kwargs, sentence) = draw_for(f, "Describe the harbour of Lisbon.", 3);
            let spec = ConstraintSpec {
                id: f.id.into(),
                kwargs,
            };
            let parsed: Vec<String> = checkable::checks_for(&sentence)
                .into_iter()
                .map(|c| c.name)
                .collect();
            let ours = spec.check().unwrap();
            let samples = [
                "a short answer",
                "A Short Answer, With Commas.",
                "\"<<Title>>\n\n* one\n* two\n* three\"",
            ];
            for p in &parsed {
                // Any parsed check must be this family, never another one.
                assert!(
                    p.starts_with(f.id) || (f.id.ends_with("bullet_lists") && p.contains("bullet")),
                    "{}: {sentence:?} parsed as {p}",
                    f.id
                );
            }
            if parsed.len() == 1 && parsed[0].starts_with(f.id) {
                read_back += 1;
                let theirs = &checkable::checks_for(&sentence)[0];
                for s in samples {
                    assert_eq!(theirs.check(s), ours.check(s), "{}: {s:?}", f.id);
                }
            }
        }
        // words, sentences, keywords, lowercase, capitals, commas, JSON, title, end phrase,
        // quotation, language.
        assert!(read_back >= 11, "only {read_back} families read back");
    }

    #[test]
    fn variants_are_a_function_of_seed_and_index_and_differ_across_k() {
        let s = seed("ex-1", "Write a short poem about the sea.");
        let subs: Vec<String> = vec!["poem".into(), "about the sea".into(), "short".into()];
        let a: Vec<Variant> = (0..3).map(|k| make(&s, &subs, k, 0.5)).collect();
        let b: Vec<Variant> = (0..3).map(|k| make(&s, &subs, k, 0.5)).collect();
        assert_eq!(a, b);
        let ids: HashSet<&str> = a
            .iter()
            .map(|v| v.constraint.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(ids.len(), 3, "consecutive k take different families");
        for v in &a {
            assert!(v.valid, "{}", v.reason);
            assert_eq!(v.variant_id, format!("ex-1/c{}", v.k));
            assert!(v.prompt.starts_with("Write a short poem about the sea. "));
            assert!(v.prompt.ends_with(&v.modified_sub_instruction));
            assert_eq!(v.edit_kind, EditKind::Add);
        }
    }

    #[test]
    fn a_stated_length_is_adapted_in_place() {
        let s = seed(
            "ex-2",
            "Write an email to my landlord. Keep the whole email under 120 words.",
        );
        let subs = vec![
            "write an email to the landlord".to_owned(),
            "keep it under 120 words".to_owned(),
        ];
        let v = make(&s, &subs, 1, 0.5);
        assert_eq!(
            v.prompt,
            "Write an email to my landlord. Keep the whole email fewer than 40 words."
        );
        assert_eq!(v.find, "under 120 words");
        let spec = v.constraint.unwrap();
        assert_eq!(spec.id, "length_constraints:number_words");
        assert_eq!(
            spec.kwargs,
            json!({"relation": "less than", "num_words": 40})
        );
        // The other sub-instruction gets an added family, never a second length on words.
        let w = make(&s, &subs, 0, 0.5);
        assert_eq!(w.edit_kind, EditKind::Add);
        assert_ne!(w.constraint.unwrap().id, "length_constraints:number_words");
        let t = seed("ex-3", "Explain tides in at least 5 sentences.");
        let v = make(&t, &["use at least 5 sentences".into()], 0, 0.5);
        assert_eq!(v.edit_kind, EditKind::Contradict);
        assert_eq!(
            v.constraint.unwrap().kwargs,
            json!({"relation": "less than", "num_sentences": 2})
        );
    }

    #[test]
    fn a_seed_that_constrains_case_gets_no_other_case() {
        let s = seed("ex-4", "Answer in all lowercase letters: what is rain?");
        for k in 0..FAMILIES.len() {
            let v = make(&s, &[], k, 0.5);
            let id = v.constraint.unwrap().id;
            assert!(!id.starts_with("change_case"), "{k}: {id}");
        }
    }
}
