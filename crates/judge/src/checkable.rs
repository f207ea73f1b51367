//! Which modified requirements code can decide. A requirement phrased like "at most 40
//! words", "exactly 3 bullet points", "all in lowercase", "no commas", "include the keywords
//! 'x' and 'y'", "end with the phrase 'z'", "in JSON format", "respond in French" becomes one or
//! more IFEval constraints from the checks crate (with IFEval's exact semantics), or a
//! blank-line paragraph count. Anything else returns no checks and goes to the judge.
//!
//! The patterns are deliberately conservative: a false "checkable" would decide a pair by the
//! wrong rule, while a missed one only costs a judge call.

use std::sync::LazyLock;

use demorecon_checks::Constraint;
use regex::{Regex, RegexBuilder};
use serde_json::json;

/// One code check of a response.
#[derive(Debug)]
pub struct Check {
    /// What is checked, e.g. `length_constraints:number_words < 41`.
    pub name: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Ifeval(Constraint),
    /// Blank-line separated paragraphs, compared with the relation.
    Paragraphs {
        n: usize,
        relation: Rel,
    },
}

#[derive(Debug, Clone, Copy)]
enum Rel {
    AtMost,
    AtLeast,
    Exactly,
}

impl Check {
    /// The IFEval constraint `id` with `kwargs`, checked with IFEval's exact semantics; named
    /// by its id and kwargs. Errors name what is wrong with the kwargs.
    pub fn ifeval(id: &str, kwargs: &serde_json::Value) -> Result<Check, String> {
        let c = Constraint::from_id(id, kwargs).map_err(|e| e.to_string())?;
        let name = match kwargs.as_object() {
            Some(o) if !o.is_empty() => format!("{id} {kwargs}"),
            _ => id.to_owned(),
        };
        Ok(Check {
            name,
            kind: Kind::Ifeval(c),
        })
    }

    pub fn check(&self, response: &str) -> bool {
        match &self.kind {
            Kind::Ifeval(c) => c.check(response),
            Kind::Paragraphs { n, relation } => {
                let count = response
                    .split("\n\n")
                    .filter(|p| !p.trim().is_empty())
                    .count();
                match relation {
                    Rel::AtMost => count <= *n,
                    Rel::AtLeast => count >= *n,
                    Rel::Exactly => count == *n,
                }
            }
        }
    }
}

fn re(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .expect("valid pattern")
}

const NUMBER: &str = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred)";

fn number(word: &str) -> Option<usize> {
    if let Ok(n) = word.parse() {
        return Some(n);
    }
    let n = match word.to_ascii_lowercase().as_str() {
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "fifteen" => 15,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "hundred" => 100,
        _ => return None,
    };
    Some(n)
}

/// `(relation words) N (unit)`: how the relation reads in English.
static COUNTED: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b(at most|no more than|not more than|maximum of|a maximum of|up to|fewer than|less than|under|at least|no fewer than|no less than|a minimum of|minimum of|more than|over|exactly|precisely)\s+{NUMBER}\s+(words?|sentences?|paragraphs?|bullet points?|bullets?)\b"
    ))
});
static BULLETS_PLAIN: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"\b{NUMBER}\s+bullet(?:ed)?\s*(?:points?|list items?)\b"
    ))
});
static LOWERCASE: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b(all\s+)?(in\s+)?(lower\s*case|lowercase\s+letters)\b"));
static UPPERCASE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(all\s+capital\s+letters|all\s+caps|upper\s*case|in\s+capital\s+letters)\b")
});
static NO_COMMAS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(no|without(\s+using)?(\s+any)?|avoid(\s+using)?(\s+any)?|do not use(\s+any)?)\s+commas?\b",
    )
});
static KEYWORDS: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(include|use|mention|contain)s?\s+(the\s+)?(key\s*words?|words?|terms?|phrases?)\b")
});
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"["“'‘]([^"“”'‘’]{1,60})["”'’]"#).expect("valid pattern"));
static END_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"\bend\s+(it\s+|the\s+\w+\s+|your\s+\w+\s+)?with\s+(the\s+)?(exact\s+)?(phrase|sentence|words?|line)?\s*["“']([^"”']{1,120})["”']"#,
    )
});
static JSON: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(in|as|using|valid)\s+(a\s+)?json(\s+(format|object|output))?\b|\bjson\s+format\b")
});
static TITLE: LazyLock<Regex> = LazyLock::new(|| re(r"\btitle\b.*\bdouble\s+angular\s+brackets\b"));
static QUOTATION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\bwrap\w*\s+(the\s+|your\s+)?(entire\s+|whole\s+)?(response|answer|reply)\s+in\s+double\s+quotation\s+marks\b",
    )
});
static LANGUAGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(respond|reply|answer|write|written|translate\w*)\b.*\b(?:in|into)\s+(French|Spanish|German|Italian|Portuguese|Dutch|Russian|Japanese|Korean|Arabic|Hindi|Turkish|Polish|Swedish|Vietnamese|Indonesian|Finnish|Danish|Greek|Czech)\b",
    )
});

fn language_code(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "french" => "fr",
        "spanish" => "es",
        "german" => "de",
        "italian" => "it",
        "portuguese" => "pt",
        "dutch" => "nl",
        "russian" => "ru",
        "japanese" => "ja",
        "korean" => "ko",
        "arabic" => "ar",
        "hindi" => "hi",
        "turkish" => "tr",
        "polish" => "pl",
        "swedish" => "sv",
        "vietnamese" => "vi",
        "indonesian" => "id",
        "finnish" => "fi",
        "danish" => "da",
        "greek" => "el",
        _ => "cs",
    }
}

fn ifeval(id: &str, kwargs: serde_json::Value, name: String) -> Option<Check> {
    Constraint::from_id(id, &kwargs).ok().map(|c| Check {
        name,
        kind: Kind::Ifeval(c),
    })
}

/// The code checks that decide `requirement`, or none.
pub fn checks_for(requirement: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    for cap in COUNTED.captures_iter(requirement) {
        let (Some(n), unit) = (number(&cap[2]), cap[3].to_ascii_lowercase()) else {
            continue;
        };
        let relation = match cap[1].to_ascii_lowercase().as_str() {
            "at least" | "no fewer than" | "no less than" | "a minimum of" | "minimum of" => {
                (Rel::AtLeast, n)
            }
            "more than" | "over" => (Rel::AtLeast, n + 1),
            "fewer than" | "less than" | "under" => (Rel::AtMost, n.saturating_sub(1)),
            "exactly" | "precisely" => (Rel::Exactly, n),
            _ => (Rel::AtMost, n),
        };
        if unit.starts_with("paragraph") {
            checks.push(Check {
                name: format!("paragraphs {:?} {}", relation.0, relation.1),
                kind: Kind::Paragraphs {
                    n: relation.1,
                    relation: relation.0,
                },
            });
            continue;
        }
        if unit.starts_with("bullet") {
            if matches!(relation.0, Rel::Exactly) {
                checks.extend(bullets(n));
            }
            continue;
        }
        let (id, key) = if unit.starts_with("word") {
            ("length_constraints:number_words", "num_words")
        } else {
            ("length_constraints:number_sentences", "num_sentences")
        };
        let (rel, m) = relation;
        let mut bounds = Vec::new();
        if matches!(rel, Rel::AtLeast | Rel::Exactly) {
            bounds.push(("at least", m));
        }
        if matches!(rel, Rel::AtMost | Rel::Exactly) {
            bounds.push(("less than", m + 1));
        }
        for (relation, value) in bounds {
            checks.extend(ifeval(
                id,
                json!({ key: value, "relation": relation }),
                format!("{id} {relation} {value}"),
            ));
        }
    }
    if checks.iter().all(|c| !c.name.contains("bullet"))
        && let Some(cap) = BULLETS_PLAIN.captures(requirement)
        && let Some(n) = number(&cap[1])
    {
        checks.extend(bullets(n));
    }
    if LOWERCASE.is_match(requirement) {
        checks.extend(ifeval(
            "change_case:english_lowercase",
            json!({}),
            "change_case:english_lowercase".into(),
        ));
    } else if UPPERCASE.is_match(requirement) {
        checks.extend(ifeval(
            "change_case:english_capital",
            json!({}),
            "change_case:english_capital".into(),
        ));
    }
    if NO_COMMAS.is_match(requirement) {
        checks.extend(ifeval(
            "punctuation:no_comma",
            json!({}),
            "punctuation:no_comma".into(),
        ));
    }
    if let Some(cap) = END_PHRASE.captures(requirement) {
        let phrase = cap[5].trim().to_owned();
        checks.extend(ifeval(
            "startend:end_checker",
            json!({ "end_phrase": phrase }),
            format!("startend:end_checker {phrase:?}"),
        ));
    } else if let Some(m) = KEYWORDS.find(requirement) {
        let keywords: Vec<String> = QUOTED
            .captures_iter(&requirement[m.end()..])
            .map(|c| c[1].trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if !keywords.is_empty() {
            checks.extend(ifeval(
                "keywords:existence",
                json!({ "keywords": keywords }),
                format!("keywords:existence {keywords:?}"),
            ));
        }
    }
    if JSON.is_match(requirement) {
        checks.extend(ifeval(
            "detectable_format:json_format",
            json!({}),
            "detectable_format:json_format".into(),
        ));
    }
    if TITLE.is_match(requirement) {
        checks.extend(ifeval(
            "detectable_format:title",
            json!({}),
            "detectable_format:title".into(),
        ));
    }
    if QUOTATION.is_match(requirement) {
        checks.extend(ifeval(
            "startend:quotation",
            json!({}),
            "startend:quotation".into(),
        ));
    }
    if let Some(cap) = LANGUAGE.captures(requirement) {
        let code = language_code(&cap[2]);
        checks.extend(ifeval(
            "language:response_language",
            json!({ "language": code }),
            format!("language:response_language {code}"),
        ));
    }
    checks
}

fn bullets(n: usize) -> Option<Check> {
    ifeval(
        "detectable_format:number_bullet_lists",
        json!({ "num_bullets": n }),
        format!("detectable_format:number_bullet_lists {n}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(req: &str) -> Vec<String> {
        checks_for(req).into_iter().map(|c| c.name).collect()
    }

    fn passes(req: &str, response: &str) -> bool {
        let checks = checks_for(req);
        assert!(!checks.is_empty(), "{req:?} should be checkable");
        checks.iter().all(|c| c.check(response))
    }

    #[test]
    fn word_and_sentence_counts() {
        assert_eq!(
            names("use at most 30 words"),
            ["length_constraints:number_words less than 31"]
        );
        assert_eq!(
            names("Write exactly three sentences"),
            [
                "length_constraints:number_sentences at least 3",
                "length_constraints:number_sentences less than 4"
            ]
        );
        assert!(passes(
            "no more than five words",
            "One two three four five."
        ));
        assert!(!passes(
            "no more than five words",
            "One two three four five six."
        ));
        assert!(passes("at least 3 words", "a b c"));
        assert!(!passes("more than 3 words", "a b c"));
        assert!(passes("fewer than 3 words", "a b"));
        assert!(!passes("fewer than 3 words", "a b c"));
    }

    #[test]
    fn paragraphs_bullets_case_commas() {
        assert!(passes("exactly 2 paragraphs", "One.\n\nTwo."));
        assert!(!passes("exactly 2 paragraphs", "One.\n\nTwo.\n\nThree."));
        assert!(passes("use exactly 3 bullet points", "* a\n* b\n* c"));
        assert!(!passes("list 3 bullet points", "* a\n* b"));
        // IFEval's case checks also require the text to be detected as English.
        let calm = "the weather today is calm and the people in the town are happy";
        assert!(passes("write it all in lowercase", calm));
        assert!(!passes("write it all in lowercase", "Not quiet"));
        assert!(passes("in all capital letters", &calm.to_uppercase()));
        assert!(passes("do not use any commas", "no commas here"));
        assert!(!passes("without commas", "a, b"));
    }

    #[test]
    fn keywords_endings_formats_language() {
        assert!(passes(
            "include the keywords 'river' and \"stone\"",
            "A river and a stone."
        ));
        assert!(!passes(
            "include the keywords 'river' and \"stone\"",
            "A river."
        ));
        assert!(passes(
            "end with the phrase \"See you soon!\"",
            "Bye. See you soon!"
        ));
        assert!(!passes(
            "end with the phrase \"See you soon!\"",
            "See you soon! Bye."
        ));
        assert!(passes("answer in JSON format", "{\"a\": 1}"));
        assert!(passes(
            "give it a title wrapped in double angular brackets",
            "<<Hi>>\ntext"
        ));
        assert!(passes(
            "respond in French",
            "Bonjour, je suis très heureux de vous écrire aujourd'hui pour parler du temps."
        ));
    }

    #[test]
    fn vague_requirements_go_to_the_judge() {
        for req in [
            "be polite",
            "write an email",
            "keep it short",
            "mention the weather",
            "use simple words",
            "explain it to a child",
        ] {
            assert!(names(req).is_empty(), "{req}: {:?}", names(req));
        }
    }
}
