//! Integration tests of the checks crate.
//!
//! Robustness of every IFEval check: no panic on arbitrary UTF-8 (a seeded generator of
//! adversarial strings built from the characters the checks treat specially), and bounded time
//! on a 10 MB response. And, when `scripts/check-langdetect.py` has written Python's answers
//! for comparison (`DEMORECON_PYTHON_ORACLE=FILE`), parity of language id, Punkt sentences and
//! `word_tokenize` with Python on every text in that file (an ignored test: CI has no Python).

use std::time::{Duration, Instant};

use demorecon_checks::{Constraint, IFEVAL_IDS};
use serde_json::{Value, json};

fn kwargs_for(id: &str) -> Value {
    match id {
        "keywords:existence" => json!({"keywords": ["alpha", "beta"]}),
        "keywords:frequency" => json!({"keyword": "the", "frequency": 3, "relation": "at least"}),
        "keywords:forbidden_words" => json!({"forbidden_words": ["foo", "bar"]}),
        "keywords:letter_frequency" => {
            json!({"letter": "e", "let_frequency": 5, "let_relation": "less than"})
        }
        "language:response_language" => json!({"language": "en"}),
        "length_constraints:number_sentences" => {
            json!({"num_sentences": 5, "relation": "at least"})
        }
        "length_constraints:number_paragraphs" => json!({"num_paragraphs": 3}),
        "length_constraints:number_words" => json!({"num_words": 100, "relation": "less than"}),
        "length_constraints:nth_paragraph_first_word" => {
            json!({"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "the"})
        }
        "detectable_content:number_placeholders" => json!({"num_placeholders": 2}),
        "detectable_content:postscript" => json!({"postscript_marker": "P.S."}),
        "detectable_format:number_bullet_lists" => json!({"num_bullets": 3}),
        "detectable_format:number_highlighted_sections" => json!({"num_highlights": 2}),
        "detectable_format:multiple_sections" => {
            json!({"section_spliter": "Section", "num_sections": 2})
        }
        "combination:repeat_prompt" => json!({"prompt_to_repeat": "Repeat me."}),
        "startend:end_checker" => json!({"end_phrase": "Bye."}),
        "change_case:capital_word_frequency" => {
            json!({"capital_frequency": 2, "capital_relation": "at least"})
        }
        _ => json!({}),
    }
}

fn all_constraints() -> Vec<Constraint> {
    IFEVAL_IDS
        .iter()
        .map(|id| Constraint::from_id(id, &kwargs_for(id)).unwrap())
        .collect()
}

/// xorshift64*: a small seeded generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    ".",
    "?",
    "!",
    "...",
    ". . .",
    "--",
    "---",
    ",",
    ";",
    ":",
    "'",
    "\"",
    "``",
    "''",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<<",
    ">>",
    "*",
    "**",
    "***",
    "******",
    "-",
    "#",
    "@",
    "&",
    "\n",
    "\n\n",
    " ",
    "\t",
    "\r",
    "\u{1c}",
    "\u{a0}",
    "\u{2019}",
    "\u{201c}",
    "\u{201d}",
    "\u{ab}",
    "\u{bb}",
    "\u{301}",
    "\u{200b}",
    "\u{feff}",
    "Dr.",
    "e.g.",
    "U.S.",
    "n't",
    "'s",
    "DON'T",
    "cannot",
    "P.S.",
    "p. p. s",
    "Section 1",
    "```json",
    "```",
    "NaN",
    "-Infinity",
    "\\u12",
    "The",
    "alpha",
    "foo",
    "3.5",
    "1,000",
    "中文",
    "。",
    "ǅ",
    "İ",
    "Σ",
    "😀",
    "x",
    "A",
    "the end",
    "Bye.",
];

fn random_text(rng: &mut Rng) -> String {
    let n = rng.below(40);
    let mut s = String::new();
    for _ in 0..n {
        if rng.below(5) == 0 {
            // An arbitrary scalar value, including rare planes.
            let cp = (rng.next() % 0x11_0000) as u32;
            s.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    s
}

#[test]
fn no_check_panics_on_arbitrary_text() {
    let constraints = all_constraints();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let text = random_text(&mut rng);
        for c in &constraints {
            let _ = c.check(&text);
        }
    }
    for text in [
        "", " ", "\n", "\u{feff}", "\u{301}", "'", ".", "*", "<<>>", "******", "\"", "P.S.",
    ] {
        for c in &constraints {
            let _ = c.check(text);
        }
    }
}

#[test]
fn ten_megabyte_response_finishes_in_bounded_time() {
    let constraints = all_constraints();
    let unit = "The QUICK brown fox, e.g. Dr. Smith's DON'T... jumps *over* [the] lazy dog! \
                Section 1 -- P.S. see \"quotes\" (and) <<titles>>.\n\n* bullet\n***\n";
    let text = unit.repeat(10 * 1024 * 1024 / unit.len() + 1);
    assert!(text.len() >= 10 * 1024 * 1024);
    let budget = if cfg!(debug_assertions) {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(20)
    };
    let start = Instant::now();
    for c in &constraints {
        let t = Instant::now();
        let _ = c.check(&text);
        assert!(
            t.elapsed() < budget,
            "{} took {:?} on 10 MB",
            c.id(),
            t.elapsed()
        );
    }
    // Pathological shapes for the scanners: one giant token, long runs of marks.
    for text in [
        ".".repeat(2_000_000),
        ". ".repeat(1_000_000),
        "a.)".repeat(700_000),
        "'".repeat(2_000_000),
    ] {
        for c in &constraints {
            let t = Instant::now();
            let _ = c.check(&text);
            assert!(
                t.elapsed() < budget,
                "{} took {:?} on a pathological text",
                c.id(),
                t.elapsed()
            );
        }
    }
    assert!(start.elapsed() < budget * 4);
}

/// Compares language id, sentence splitting, word tokenization and IFEval's word count with
/// Python's answers in the JSONL file named by `DEMORECON_PYTHON_ORACLE`
/// (`{"text","lang","sentences","words","count_words"}` per line; a missing key is not
/// compared), written by `scripts/check-langdetect.py` or `scripts/check-nltk-parity.py`.
#[test]
#[ignore = "needs Python's answers: run scripts/check-langdetect.py or check-nltk-parity.py"]
fn python_oracle_parity() {
    let path = std::env::var("DEMORECON_PYTHON_ORACLE").expect("set DEMORECON_PYTHON_ORACLE");
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut n, mut bad) = (0, Vec::new());
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let t = row["text"].as_str().unwrap();
        n += 1;
        let lang = demorecon_checks::langid::detect(t).ok();
        if row.get("lang").is_some() && row["lang"].as_str() != lang.as_deref() {
            bad.push(format!(
                "lang {:?} vs python {} for {:?}",
                lang,
                row["lang"],
                t.chars().take(60).collect::<String>()
            ));
        }
        let sents: Vec<&str> = demorecon_checks::punkt::sentences(t);
        if row["sentences"] != json!(sents) {
            bad.push(format!(
                "sentences differ for {t:?}: {sents:?} vs python {}",
                row["sentences"]
            ));
        }
        let count = demorecon_checks::pyregex::count_words(t);
        if row.get("count_words").is_some_and(|n| *n != json!(count)) {
            bad.push(format!(
                "count_words {count} vs python {} for {t:?}",
                row["count_words"]
            ));
        }
        let words = demorecon_checks::treebank::word_tokenize(t);
        if row["words"] != json!(words) {
            bad.push(format!(
                "words differ for {t:?}: {words:?} vs python {}",
                row["words"]
            ));
        }
    }
    println!("{n} texts compared, {} differences", bad.len());
    assert!(n > 0);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
