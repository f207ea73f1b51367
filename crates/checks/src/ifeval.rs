//! IFEval's 25 verifiable instructions as typed constraints.
//!
//! [`Constraint::from_id`] builds one from an instruction id (`"keywords:existence"`, ...) and
//! its kwargs object, validating every kwarg up front: where Google's reference fills a missing
//! or out-of-range kwarg with a *random* value, we refuse with an error that names the id and
//! the key, so a score never depends on chance. `null` kwargs are ignored (Hugging Face copies
//! of the data pad every row with all kwarg names set to null). [`Constraint::check`] gives the
//! reference's verdict on one response; the strict/loose protocol around it (non-blank
//! response, the eight loose variants) lives in the evaluator.

use regex::Regex;
use serde_json::Value;

use crate::pattern::{Pattern, cached_regex};
use crate::{langid, punkt, pyjson, pyregex, pystr, treebank};

/// Every IFEval instruction id, in the reference registry's order.
pub const IFEVAL_IDS: [&str; 25] = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
];

/// Why a constraint could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("unknown instruction id {id:?}")]
    UnknownId { id: String },
    #[error("instruction {id}: missing kwarg {key:?}")]
    MissingKwarg { id: String, key: String },
    #[error("instruction {id}: unexpected kwarg {key:?}")]
    UnexpectedKwarg { id: String, key: String },
    #[error("instruction {id}: bad kwarg {key:?}: {reason}")]
    BadKwarg {
        id: String,
        key: String,
        reason: String,
    },
    #[error("instruction {id}: kwargs must be a JSON object, got {got}")]
    KwargsNotObject { id: String, got: String },
}

/// The comparison in "less than N" / "at least N" instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    LessThan,
    AtLeast,
}

impl Relation {
    fn holds(self, actual: u64, threshold: u64) -> bool {
        match self {
            Relation::LessThan => actual < threshold,
            Relation::AtLeast => actual >= threshold,
        }
    }
}

/// One verifiable instruction with its parameters.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// Every keyword is found (case-insensitive regex search).
    KeywordsExistence { keywords: Vec<Pattern> },
    /// Case-insensitive regex match count compared to `frequency`.
    KeywordsFrequency {
        keyword: Pattern,
        frequency: u64,
        relation: Relation,
    },
    /// No forbidden word appears between word boundaries (case-insensitive).
    ForbiddenWords { words: Vec<Pattern> },
    /// Count of `letter` (lowercased) in the lowercased response compared to `frequency`.
    LetterFrequency {
        letter: String,
        frequency: u64,
        relation: Relation,
    },
    /// langdetect's answer equals `language`; a failed detection passes.
    ResponseLanguage { language: String },
    /// Punkt sentence count compared to `num_sentences`.
    NumberSentences {
        num_sentences: u64,
        relation: Relation,
    },
    /// Exactly `num_paragraphs` sections separated by `***`.
    NumberParagraphs { num_paragraphs: u64 },
    /// `\w+` count compared to `num_words`.
    NumberWords { num_words: u64, relation: Relation },
    /// `num_paragraphs` blank-line separated paragraphs and paragraph `nth_paragraph` starts
    /// with `first_word`.
    NthParagraphFirstWord {
        num_paragraphs: u64,
        nth_paragraph: u64,
        first_word: String,
    },
    /// At least `num_placeholders` `[...]` placeholders.
    NumberPlaceholders { num_placeholders: u64 },
    /// A postscript starting with the marker.
    Postscript { marker: String, pattern: Regex },
    /// Exactly `num_bullets` markdown bullet lines (`*` or `-`).
    NumberBulletLists { num_bullets: u64 },
    /// Contains "My answer is yes." / "no." / "maybe.".
    ConstrainedResponse,
    /// At least `num_highlights` `*highlighted*` sections.
    NumberHighlightedSections { num_highlights: u64 },
    /// At least `num_sections` sections headed `{section_spliter} N`.
    MultipleSections {
        section_spliter: String,
        num_sections: u64,
        splitter: Regex,
    },
    /// The (fence-stripped) response is valid JSON for Python's `json.loads`.
    JsonFormat,
    /// A `<<title>>` with non-blank content.
    Title,
    /// Two different responses separated by `******`.
    TwoResponses,
    /// Starts by repeating the prompt (case-insensitive).
    RepeatPrompt { prompt_to_repeat: String },
    /// Ends with the phrase (case-insensitive, quotes ignored).
    EndChecker { end_phrase: String },
    /// Number of all-capital words compared to `capital_frequency`.
    CapitalWordFrequency {
        capital_frequency: u64,
        relation: Relation,
    },
    /// All capitals and English.
    EnglishCapital,
    /// All lowercase and English.
    EnglishLowercase,
    /// No comma.
    NoComma,
    /// Wrapped in double quotes.
    Quotation,
}

/// Reads and validates one instruction's kwargs, remembering which keys were used.
struct Kwargs<'a> {
    id: &'a str,
    map: Vec<(&'a str, &'a Value)>,
    used: Vec<&'a str>,
}

impl<'a> Kwargs<'a> {
    fn new(id: &'a str, kwargs: &'a Value) -> Result<Self, CheckError> {
        let map = match kwargs {
            Value::Null => Vec::new(),
            Value::Object(m) => m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            other => {
                return Err(CheckError::KwargsNotObject {
                    id: id.to_owned(),
                    got: json_kind(other).to_owned(),
                });
            }
        };
        Ok(Self {
            id,
            map,
            used: Vec::new(),
        })
    }

    fn get(&mut self, key: &'a str) -> Result<&'a Value, CheckError> {
        self.used.push(key);
        self.map
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| CheckError::MissingKwarg {
                id: self.id.to_owned(),
                key: key.to_owned(),
            })
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> CheckError {
        CheckError::BadKwarg {
            id: self.id.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn count(&mut self, key: &'a str) -> Result<u64, CheckError> {
        let v = self.get(key)?;
        if let Some(n) = v.as_u64() {
            return Ok(n);
        }
        if let Some(f) = v.as_f64()
            && f >= 0.0
            && f.fract() == 0.0
            && f < 9.0e15
        {
            return Ok(f as u64);
        }
        Err(self.bad(key, format!("expected a non-negative integer, got {v}")))
    }

    fn string(&mut self, key: &'a str) -> Result<&'a str, CheckError> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| self.bad(key, format!("expected a string, got {}", json_kind(v))))
    }

    fn non_empty_string(&mut self, key: &'a str) -> Result<&'a str, CheckError> {
        let s = self.string(key)?;
        if pystr::strip(s).is_empty() {
            return Err(self.bad(key, "must not be empty"));
        }
        Ok(s)
    }

    fn strings(&mut self, key: &'a str) -> Result<Vec<&'a str>, CheckError> {
        let v = self.get(key)?;
        let Some(items) = v.as_array() else {
            return Err(self.bad(
                key,
                format!("expected a list of strings, got {}", json_kind(v)),
            ));
        };
        if items.is_empty() {
            return Err(self.bad(key, "the list must not be empty"));
        }
        items
            .iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| self.bad(key, "every item must be a string"))
            })
            .collect()
    }

    fn relation(&mut self, key: &'a str) -> Result<Relation, CheckError> {
        match self.string(key)? {
            "less than" => Ok(Relation::LessThan),
            "at least" => Ok(Relation::AtLeast),
            other => Err(self.bad(
                key,
                format!("expected \"less than\" or \"at least\", got {other:?}"),
            )),
        }
    }

    fn regex(&self, key: &str, pattern: &str) -> Result<Regex, CheckError> {
        cached_regex(pattern)
            .map_err(|e| self.bad(key, format!("not a usable regular expression: {e}")))
    }

    /// `(?i)` + `keyword` as a [`Pattern`].
    fn ignore_case(&self, key: &str, keyword: &str) -> Result<Pattern, CheckError> {
        Pattern::ignore_case(keyword)
            .map_err(|e| self.bad(key, format!("not a usable regular expression: {e}")))
    }

    /// Fails on any kwarg that was not read.
    fn finish(self) -> Result<(), CheckError> {
        match self.map.iter().find(|(k, _)| !self.used.contains(k)) {
            Some((k, _)) => Err(CheckError::UnexpectedKwarg {
                id: self.id.to_owned(),
                key: (*k).to_owned(),
            }),
            None => Ok(()),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A Python-`\s` class for patterns built here.
fn ws() -> String {
    format!("[{}]", pystr::PY_SPACE_CLASS)
}

impl Constraint {
    /// Builds the constraint for an IFEval instruction id from its kwargs (a JSON object or
    /// null). Null-valued kwargs are ignored; unknown ids, missing, unexpected or malformed
    /// kwargs are errors naming the id and the key.
    pub fn from_id(id: &str, kwargs: &Value) -> Result<Constraint, CheckError> {
        let mut kw = Kwargs::new(id, kwargs)?;
        let c = match id {
            "keywords:existence" => {
                let keywords = kw.strings("keywords")?;
                let keywords = keywords
                    .into_iter()
                    .map(|k| kw.ignore_case("keywords", k))
                    .collect::<Result<_, _>>()?;
                Constraint::KeywordsExistence { keywords }
            }
            "keywords:frequency" => {
                let keyword = pystr::strip(kw.non_empty_string("keyword")?);
                let keyword = kw.ignore_case("keyword", keyword)?;
                let frequency = kw.count("frequency")?;
                let relation = kw.relation("relation")?;
                Constraint::KeywordsFrequency {
                    keyword,
                    frequency,
                    relation,
                }
            }
            "keywords:forbidden_words" => {
                let words = kw.strings("forbidden_words")?;
                let words = words
                    .into_iter()
                    .map(|w| kw.ignore_case("forbidden_words", w))
                    .collect::<Result<_, _>>()?;
                Constraint::ForbiddenWords { words }
            }
            "keywords:letter_frequency" => {
                let letter = kw.string("letter")?;
                if letter.chars().count() != 1 {
                    return Err(kw.bad(
                        "letter",
                        format!("expected a single character, got {letter:?}"),
                    ));
                }
                let letter = pystr::lower(pystr::strip(letter));
                let frequency = kw.count("let_frequency")?;
                let relation = kw.relation("let_relation")?;
                Constraint::LetterFrequency {
                    letter,
                    frequency,
                    relation,
                }
            }
            "language:response_language" => Constraint::ResponseLanguage {
                language: kw.non_empty_string("language")?.to_owned(),
            },
            "length_constraints:number_sentences" => Constraint::NumberSentences {
                num_sentences: kw.count("num_sentences")?,
                relation: kw.relation("relation")?,
            },
            "length_constraints:number_paragraphs" => Constraint::NumberParagraphs {
                num_paragraphs: kw.count("num_paragraphs")?,
            },
            "length_constraints:number_words" => Constraint::NumberWords {
                num_words: kw.count("num_words")?,
                relation: kw.relation("relation")?,
            },
            "length_constraints:nth_paragraph_first_word" => {
                let num_paragraphs = kw.count("num_paragraphs")?;
                let nth_paragraph = kw.count("nth_paragraph")?;
                if nth_paragraph == 0 || nth_paragraph > num_paragraphs {
                    return Err(kw.bad(
                        "nth_paragraph",
                        format!("must be between 1 and num_paragraphs ({num_paragraphs}), got {nth_paragraph}"),
                    ));
                }
                let first_word = pystr::lower(kw.string("first_word")?);
                Constraint::NthParagraphFirstWord {
                    num_paragraphs,
                    nth_paragraph,
                    first_word,
                }
            }
            "detectable_content:number_placeholders" => Constraint::NumberPlaceholders {
                num_placeholders: kw.count("num_placeholders")?,
            },
            "detectable_content:postscript" => {
                let marker = pystr::strip(kw.non_empty_string("postscript_marker")?).to_owned();
                let s = ws();
                let pattern = match marker.as_str() {
                    "P.P.S" => format!(r"(?m){s}*p\.{s}?p\.{s}?s.*$"),
                    "P.S." => format!(r"(?m){s}*p\.{s}?s\..*$"),
                    other => format!(r"(?m){s}*{}.*$", pystr::lower(other)),
                };
                let pattern = kw.regex("postscript_marker", &pattern)?;
                Constraint::Postscript { marker, pattern }
            }
            "detectable_format:number_bullet_lists" => Constraint::NumberBulletLists {
                num_bullets: kw.count("num_bullets")?,
            },
            "detectable_format:constrained_response" => Constraint::ConstrainedResponse,
            "detectable_format:number_highlighted_sections" => {
                Constraint::NumberHighlightedSections {
                    num_highlights: kw.count("num_highlights")?,
                }
            }
            "detectable_format:multiple_sections" => {
                let section_spliter =
                    pystr::strip(kw.non_empty_string("section_spliter")?).to_owned();
                let s = ws();
                let splitter = kw.regex(
                    "section_spliter",
                    &format!(r"{s}?{section_spliter}{s}?\d+{s}?"),
                )?;
                let num_sections = kw.count("num_sections")?;
                Constraint::MultipleSections {
                    section_spliter,
                    num_sections,
                    splitter,
                }
            }
            "detectable_format:json_format" => Constraint::JsonFormat,
            "detectable_format:title" => Constraint::Title,
            "combination:two_responses" => Constraint::TwoResponses,
            "combination:repeat_prompt" => Constraint::RepeatPrompt {
                prompt_to_repeat: kw.non_empty_string("prompt_to_repeat")?.to_owned(),
            },
            "startend:end_checker" => Constraint::EndChecker {
                end_phrase: pystr::strip(kw.non_empty_string("end_phrase")?).to_owned(),
            },
            "change_case:capital_word_frequency" => Constraint::CapitalWordFrequency {
                capital_frequency: kw.count("capital_frequency")?,
                relation: kw.relation("capital_relation")?,
            },
            "change_case:english_capital" => Constraint::EnglishCapital,
            "change_case:english_lowercase" => Constraint::EnglishLowercase,
            "punctuation:no_comma" => Constraint::NoComma,
            "startend:quotation" => Constraint::Quotation,
            _ => return Err(CheckError::UnknownId { id: id.to_owned() }),
        };
        kw.finish()?;
        Ok(c)
    }

    /// The instruction id this constraint checks.
    pub fn id(&self) -> &'static str {
        let i = match self {
            Constraint::KeywordsExistence { .. } => 0,
            Constraint::KeywordsFrequency { .. } => 1,
            Constraint::ForbiddenWords { .. } => 2,
            Constraint::LetterFrequency { .. } => 3,
            Constraint::ResponseLanguage { .. } => 4,
            Constraint::NumberSentences { .. } => 5,
            Constraint::NumberParagraphs { .. } => 6,
            Constraint::NumberWords { .. } => 7,
            Constraint::NthParagraphFirstWord { .. } => 8,
            Constraint::NumberPlaceholders { .. } => 9,
            Constraint::Postscript { .. } => 10,
            Constraint::NumberBulletLists { .. } => 11,
            Constraint::ConstrainedResponse => 12,
            Constraint::NumberHighlightedSections { .. } => 13,
            Constraint::MultipleSections { .. } => 14,
            Constraint::JsonFormat => 15,
            Constraint::Title => 16,
            Constraint::TwoResponses => 17,
            Constraint::RepeatPrompt { .. } => 18,
            Constraint::EndChecker { .. } => 19,
            Constraint::CapitalWordFrequency { .. } => 20,
            Constraint::EnglishCapital => 21,
            Constraint::EnglishLowercase => 22,
            Constraint::NoComma => 23,
            Constraint::Quotation => 24,
        };
        IFEVAL_IDS[i]
    }

    /// The reference's `check_following(response)`: whether the response follows this
    /// instruction. (The evaluator additionally fails blank responses.)
    pub fn check(&self, response: &str) -> bool {
        match self {
            Constraint::KeywordsExistence { keywords } => {
                keywords.iter().all(|k| k.is_match(response))
            }
            Constraint::KeywordsFrequency {
                keyword,
                frequency,
                relation,
            } => relation.holds(keyword.count(response) as u64, *frequency),
            Constraint::ForbiddenWords { words } => {
                !words.iter().any(|w| has_bounded_match(w, response))
            }
            Constraint::LetterFrequency {
                letter,
                frequency,
                relation,
            } => {
                let mut it = letter.chars();
                let n = match (it.next(), it.next()) {
                    (Some(l), None) => pystr::lower(response).chars().filter(|&c| c == l).count(),
                    _ => 0,
                };
                relation.holds(n as u64, *frequency)
            }
            Constraint::ResponseLanguage { language } => match langid::detect(response) {
                Ok(lang) => &lang == language,
                Err(_) => true,
            },
            Constraint::NumberSentences {
                num_sentences,
                relation,
            } => relation.holds(punkt::count_sentences(response) as u64, *num_sentences),
            Constraint::NumberParagraphs { num_paragraphs } => {
                check_paragraphs(response, *num_paragraphs)
            }
            Constraint::NumberWords {
                num_words,
                relation,
            } => relation.holds(pyregex::count_words(response) as u64, *num_words),
            Constraint::NthParagraphFirstWord {
                num_paragraphs,
                nth_paragraph,
                first_word,
            } => check_nth_paragraph(response, *num_paragraphs, *nth_paragraph, first_word),
            Constraint::NumberPlaceholders { num_placeholders } => {
                re::placeholder().find_iter(response).count() as u64 >= *num_placeholders
            }
            Constraint::Postscript { pattern, .. } => pattern.is_match(&pystr::lower(response)),
            Constraint::NumberBulletLists { num_bullets } => {
                let n = re::bullet_star().find_iter(response).count()
                    + re::bullet_dash().find_iter(response).count();
                n as u64 == *num_bullets
            }
            Constraint::ConstrainedResponse => {
                let v = pystr::strip(response);
                [
                    "My answer is yes.",
                    "My answer is no.",
                    "My answer is maybe.",
                ]
                .iter()
                .any(|o| v.contains(o))
            }
            Constraint::NumberHighlightedSections { num_highlights } => {
                let single = re::highlight()
                    .find_iter(response)
                    .filter(|m| !pystr::strip(m.as_str().trim_matches('*')).is_empty())
                    .count();
                let double = re::double_highlight()
                    .find_iter(response)
                    .filter(|m| {
                        let s = m.as_str();
                        let s = s.strip_prefix("**").unwrap_or(s);
                        let s = s.strip_suffix("**").unwrap_or(s);
                        !pystr::strip(s).is_empty()
                    })
                    .count();
                (single + double) as u64 >= *num_highlights
            }
            Constraint::MultipleSections {
                splitter,
                num_sections,
                ..
            } => splitter.find_iter(response).count() as u64 >= *num_sections,
            Constraint::JsonFormat => pyjson::loads_ok(strip_json_fence(response)),
            Constraint::Title => re::title().find_iter(response).any(|m| {
                let t = m.as_str().trim_start_matches('<').trim_end_matches('>');
                !pystr::strip(t).is_empty()
            }),
            Constraint::TwoResponses => check_two_responses(response),
            Constraint::RepeatPrompt { prompt_to_repeat } => pystr::lower(pystr::strip(response))
                .starts_with(&pystr::lower(pystr::strip(prompt_to_repeat))),
            Constraint::EndChecker { end_phrase } => {
                pystr::lower(pystr::strip(response).trim_matches('"'))
                    .ends_with(&pystr::lower(end_phrase))
            }
            Constraint::CapitalWordFrequency {
                capital_frequency,
                relation,
            } => {
                let n = treebank::word_tokenize(response)
                    .iter()
                    .filter(|w| pystr::is_upper(w))
                    .count();
                relation.holds(n as u64, *capital_frequency)
            }
            Constraint::EnglishCapital => {
                pystr::is_upper(response) && langid::detect(response).is_none_or_en()
            }
            Constraint::EnglishLowercase => {
                pystr::is_lower(response) && langid::detect(response).is_none_or_en()
            }
            Constraint::NoComma => !response.contains(','),
            Constraint::Quotation => {
                let v = pystr::strip(response);
                v.chars().nth(1).is_some() && v.starts_with('"') && v.ends_with('"')
            }
        }
    }
}

/// "Detected English, or detection failed" (the reference counts a failure as followed).
trait EnglishOrFailed {
    fn is_none_or_en(&self) -> bool;
}

impl EnglishOrFailed for Result<String, langid::DetectError> {
    fn is_none_or_en(&self) -> bool {
        match self {
            Ok(lang) => lang == "en",
            Err(_) => true,
        }
    }
}

/// `re.search(r"\b" + word + r"\b", text, re.IGNORECASE)` with Python's `\b`: some match of
/// `word` starts and ends on a word boundary.
fn has_bounded_match(word: &Pattern, text: &str) -> bool {
    let mut pos = 0;
    while pos <= text.len() {
        let Some((start, end)) = word.find_at(text, pos) else {
            return false;
        };
        if pystr::is_boundary(text, start) && pystr::is_boundary(text, end) {
            return true;
        }
        // Retry from the next character after this match's start.
        let step = text[start..].chars().next().map_or(1, char::len_utf8);
        pos = start + step;
    }
    false
}

fn check_paragraphs(response: &str, want: u64) -> bool {
    let parts: Vec<&str> = re::paragraph_divider().split(response).collect();
    let last = parts.len() - 1;
    let mut n = parts.len() as u64;
    for (i, p) in parts.iter().enumerate() {
        if pystr::strip(p).is_empty() {
            if i == 0 || i == last {
                n -= 1;
            } else {
                return false;
            }
        }
    }
    n == want
}

fn check_nth_paragraph(response: &str, want: u64, nth: u64, first_word: &str) -> bool {
    let parts: Vec<&str> = response.split("\n\n").collect();
    let count = parts.iter().filter(|p| !pystr::strip(p).is_empty()).count() as u64;
    if nth > count {
        return false;
    }
    let Some(paragraph) = parts.get((nth - 1) as usize).map(|p| pystr::strip(p)) else {
        return false;
    };
    if paragraph.is_empty() {
        return false;
    }
    let word = pystr::split_whitespace(paragraph).next().unwrap_or("");
    let word = pystr::strip(word)
        .trim_start_matches('\'')
        .trim_start_matches('"');
    let mut found = String::new();
    for c in word.chars() {
        if matches!(c, '.' | ',' | '?' | '!' | '\'' | '"') {
            break;
        }
        found.extend(c.to_lowercase());
    }
    count == want && found == first_word
}

fn check_two_responses(response: &str) -> bool {
    let parts: Vec<&str> = response.split("******").collect();
    let last = parts.len() - 1;
    let mut valid = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if pystr::strip(p).is_empty() {
            if i != 0 && i != last {
                return false;
            }
        } else {
            valid.push(*p);
        }
    }
    valid.len() == 2 && pystr::strip(valid[0]) != pystr::strip(valid[1])
}

/// The JSON check's preprocessing: strip, drop one leading fence marker (```` ```json ````,
/// ```` ```Json ````, ```` ```JSON ```` then ```` ``` ````, each at most once, in that order)
/// and a trailing ```` ``` ````, strip again.
fn strip_json_fence(response: &str) -> &str {
    let mut v = pystr::strip(response);
    for p in ["```json", "```Json", "```JSON", "```"] {
        v = v.strip_prefix(p).unwrap_or(v);
    }
    v = v.strip_suffix("```").unwrap_or(v);
    pystr::strip(v)
}

/// Fixed patterns, compiled once.
mod re {
    use std::sync::LazyLock;

    use regex::Regex;

    use crate::pystr::PY_SPACE_CLASS;

    fn compile(p: &str) -> Regex {
        Regex::new(p).expect("static IFEval regex compiles")
    }

    pub fn placeholder() -> &'static Regex {
        static R: LazyLock<Regex> = LazyLock::new(|| compile(r"\[.*?\]"));
        &R
    }
    pub fn bullet_star() -> &'static Regex {
        static R: LazyLock<Regex> =
            LazyLock::new(|| compile(&format!(r"(?m)^[{PY_SPACE_CLASS}]*\*[^*].*$")));
        &R
    }
    pub fn bullet_dash() -> &'static Regex {
        static R: LazyLock<Regex> =
            LazyLock::new(|| compile(&format!(r"(?m)^[{PY_SPACE_CLASS}]*-.*$")));
        &R
    }
    pub fn highlight() -> &'static Regex {
        static R: LazyLock<Regex> = LazyLock::new(|| compile(r"\*[^\n*]*\*"));
        &R
    }
    pub fn double_highlight() -> &'static Regex {
        static R: LazyLock<Regex> = LazyLock::new(|| compile(r"\*\*[^\n*]*\*\*"));
        &R
    }
    pub fn title() -> &'static Regex {
        static R: LazyLock<Regex> = LazyLock::new(|| compile(r"<<[^\n]+>>"));
        &R
    }
    pub fn paragraph_divider() -> &'static Regex {
        static R: LazyLock<Regex> =
            LazyLock::new(|| compile(&format!(r"[{PY_SPACE_CLASS}]?\*\*\*[{PY_SPACE_CLASS}]?")));
        &R
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(id: &str, kw: Value) -> Constraint {
        Constraint::from_id(id, &kw).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn errors_name_id_and_key() {
        let e = Constraint::from_id("keywords:nope", &json!({})).unwrap_err();
        assert_eq!(e.to_string(), "unknown instruction id \"keywords:nope\"");
        let e = Constraint::from_id(
            "keywords:frequency",
            &json!({"keyword": "x", "frequency": 2}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CheckError::MissingKwarg {
                id: "keywords:frequency".into(),
                key: "relation".into()
            }
        );
        let e = Constraint::from_id(
            "length_constraints:number_words",
            &json!({"num_words": 5, "relation": "at most"}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, CheckError::BadKwarg { key, .. } if key == "relation"),
            "{e}"
        );
        let e = Constraint::from_id("punctuation:no_comma", &json!({"bogus": 1})).unwrap_err();
        assert!(matches!(&e, CheckError::UnexpectedKwarg { key, .. } if key == "bogus"));
        let e = Constraint::from_id(
            "keywords:letter_frequency",
            &json!({"letter": "ab", "let_frequency": 1, "let_relation": "at least"}),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("letter") && e.to_string().contains("keywords:letter_frequency")
        );
        let e = Constraint::from_id(
            "length_constraints:nth_paragraph_first_word",
            &json!({"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "x"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nth_paragraph"));
        let e = Constraint::from_id(
            "detectable_content:number_placeholders",
            &json!({"num_placeholders": -1}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("num_placeholders"));
        assert!(Constraint::from_id("punctuation:no_comma", &json!([1])).is_err());
    }

    #[test]
    fn null_kwargs_are_ignored() {
        let k = c(
            "punctuation:no_comma",
            json!({"num_words": null, "keywords": null}),
        );
        assert_eq!(k.id(), "punctuation:no_comma");
        for id in IFEVAL_IDS {
            let e = Constraint::from_id(id, &Value::Null);
            if let Ok(k) = e {
                assert_eq!(k.id(), id);
            }
        }
    }

    #[test]
    fn keywords() {
        let k = c("keywords:existence", json!({"keywords": ["Dog", "ca"]}));
        assert!(k.check("my DOG and CAT"));
        assert!(!k.check("my dog"));
        let k = c(
            "keywords:frequency",
            json!({"keyword": " cat ", "frequency": 2, "relation": "at least"}),
        );
        assert!(k.check("Cat, cat") && !k.check("cat"));
        let k = c(
            "keywords:frequency",
            json!({"keyword": "cat", "frequency": 2, "relation": "less than"}),
        );
        assert!(k.check("concatenate") && !k.check("catcat"));
        let k = c(
            "keywords:forbidden_words",
            json!({"forbidden_words": ["cafe", "don"]}),
        );
        assert!(!k.check("Le CAFE est"));
        assert!(k.check("cafeteria and Donald"));
        assert!(
            !k.check("cafe\u{301}"),
            "a combining mark is not a word character in Python"
        );
        assert!(!k.check("don't"), "the apostrophe is a boundary");
        assert!(k.check("café"));
    }

    #[test]
    fn letter_frequency_counts_any_character() {
        let k = c(
            "keywords:letter_frequency",
            json!({"letter": "#", "let_frequency": 3, "let_relation": "at least"}),
        );
        assert!(k.check("# a # b #") && !k.check("##"));
        let k = c(
            "keywords:letter_frequency",
            json!({"letter": "Q", "let_frequency": 2, "let_relation": "less than"}),
        );
        assert!(k.check("q") && !k.check("Qq"));
        let k = c(
            "keywords:letter_frequency",
            json!({"letter": "é", "let_frequency": 1, "let_relation": "at least"}),
        );
        assert!(k.check("CAFÉ") && !k.check("cafe\u{301}"));
    }

    #[test]
    fn language_checks() {
        let en = "This is a fairly ordinary English sentence about cooking dinner tonight.";
        assert!(c("language:response_language", json!({"language": "en"})).check(en));
        assert!(!c("language:response_language", json!({"language": "de"})).check(en));
        assert!(
            c("language:response_language", json!({"language": "de"})).check("1234 ..."),
            "no features: followed"
        );
        let upper = c("change_case:english_capital", json!({}));
        assert!(upper.check("THIS IS A FAIRLY ORDINARY ENGLISH SENTENCE ABOUT COOKING DINNER."));
        assert!(!upper.check("THIS IS MOSTLY UPPER but not all"));
        assert!(!upper.check("DAS IST EIN DEUTSCHER SATZ ÜBER DAS WETTER UND DIE STADT."));
        assert!(
            !upper.check("12345"),
            "no cased character: isupper() is false"
        );
        let lower = c("change_case:english_lowercase", json!({}));
        assert!(lower.check(&en.to_lowercase()));
        assert!(!lower.check(en));
        assert!(
            !lower.check("这是中文"),
            "no cased character: islower() is false"
        );
    }

    #[test]
    fn sentences_words_paragraphs() {
        let k = c(
            "length_constraints:number_sentences",
            json!({"num_sentences": 3, "relation": "less than"}),
        );
        assert!(k.check("Dr. Smith came. He left."));
        assert!(!k.check("One. Two. Three."));
        let k = c(
            "length_constraints:number_words",
            json!({"num_words": 4, "relation": "at least"}),
        );
        assert!(k.check("don't stop-me"), "don, t, stop, me");
        assert!(!k.check("cafe\u{301} x"));
        // nltk 3.10.4 counts with the `regex` module, where combining marks are word
        // characters: "re\u{301}sume\u{301}" is one word there (two with nltk 3.9's stdlib `re`).
        let k = c(
            "length_constraints:number_words",
            json!({"num_words": 3, "relation": "less than"}),
        );
        assert!(k.check("my re\u{301}sume\u{301}"));
        assert!(k.check("\u{2764}\u{fe0f} a"), "U+FE0F is a word of its own");
        assert!(!k.check("\u{2764}\u{fe0f} a b"));
        let k = c(
            "length_constraints:number_paragraphs",
            json!({"num_paragraphs": 2}),
        );
        assert!(k.check("a\n***\nb"));
        assert!(k.check("***\na\n***\nb\n***"));
        assert!(
            !k.check("a\n***\n\n***\nb"),
            "an empty middle paragraph fails"
        );
        assert!(!k.check("a ** b"));
        let k = c(
            "length_constraints:nth_paragraph_first_word",
            json!({"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Summer"}),
        );
        assert!(k.check("Intro.\n\n\"Summer's here,\" she said."));
        assert!(k.check("Intro.\n\n'summer. Yes"));
        assert!(!k.check("Intro.\n\nWinter"));
        assert!(!k.check("Intro.\n\nSummer\n\nThird"));
        assert!(
            !k.check("Intro.\n\n\n\nSummer"),
            "the nth raw piece is blank"
        );
    }

    #[test]
    fn placeholders_postscript_bullets() {
        let k = c(
            "detectable_content:number_placeholders",
            json!({"num_placeholders": 2}),
        );
        assert!(k.check("[name] at [address]") && !k.check("[a\nb] [c]"));
        let k = c(
            "detectable_content:postscript",
            json!({"postscript_marker": "P.S."}),
        );
        assert!(k.check("Hi\n\np.s. bye") && !k.check("PS bye"));
        let k = c(
            "detectable_content:postscript",
            json!({"postscript_marker": "P.P.S"}),
        );
        assert!(k.check("x\nP. P. S more") && !k.check("P.S. only"));
        let k = c(
            "detectable_content:postscript",
            json!({"postscript_marker": "Note:"}),
        );
        assert!(k.check("text\nNOTE: x"));
        let k = c(
            "detectable_format:number_bullet_lists",
            json!({"num_bullets": 3}),
        );
        assert!(k.check("* a\n* b\n- c"));
        assert!(
            !k.check("* a\n** bold\n- c"),
            "'**' does not start a bullet"
        );
        assert!(
            !k.check("*italic* a\n* b"),
            "'*italic*' counts as a bullet in the reference"
        );
    }

    #[test]
    fn highlights_sections_title_json() {
        let k = c(
            "detectable_format:number_highlighted_sections",
            json!({"num_highlights": 2}),
        );
        assert!(k.check("*one* and **two**"));
        assert!(!k.check("** ** and * * and *one*"));
        assert!(!k.check("*multi\nline*"));
        let k = c(
            "detectable_format:multiple_sections",
            json!({"section_spliter": "Section", "num_sections": 2}),
        );
        assert!(k.check("Section 1\nx\nSection 2\ny"));
        assert!(!k.check("Section one\nSECTION 2"));
        let t = c("detectable_format:title", json!({}));
        assert!(t.check("<<My Title>>\nbody") && !t.check("<< >>") && !t.check("<<a\nb>>"));
        let j = c("detectable_format:json_format", json!({}));
        assert!(j.check("```json\n{\"a\": [1, 2]}\n```"));
        assert!(j.check("```JSON\n[NaN]\n```"));
        assert!(j.check("  \"just a string\" "));
        assert!(!j.check("Here is JSON: {\"a\": 1}"));
        assert!(!j.check("```json\n{'a': 1}\n```"));
        assert!(!j.check(""));
    }

    #[test]
    fn combination_and_startend() {
        let k = c("combination:two_responses", json!({}));
        assert!(k.check("A\n******\nB"));
        assert!(k.check("******\nA\n******\nB\n******"));
        assert!(!k.check("A\n******\n A "));
        assert!(!k.check("A\n******\n\n******\nB"));
        let k = c(
            "combination:repeat_prompt",
            json!({"prompt_to_repeat": "Write a POEM."}),
        );
        assert!(k.check("  write a poem. Here it is") && !k.check("Poem:"));
        let k = c(
            "startend:end_checker",
            json!({"end_phrase": "Any other questions?"}),
        );
        assert!(
            k.check("Text. ANY OTHER QUESTIONS?\"  \n") && !k.check("Any other questions? Yes.")
        );
        let k = c("startend:quotation", json!({}));
        assert!(k.check(" \"quoted\" ") && !k.check("\"") && !k.check("\u{201c}curly\u{201d}"));
        assert!(c("punctuation:no_comma", json!({})).check("中文，全角逗号"));
        assert!(!c("punctuation:no_comma", json!({})).check("a, b"));
        let k = c("detectable_format:constrained_response", json!({}));
        assert!(k.check("  My answer is maybe.") && !k.check("my answer is yes."));
    }

    #[test]
    fn capital_words_use_treebank_tokens() {
        let k = c(
            "change_case:capital_word_frequency",
            json!({"capital_frequency": 3, "capital_relation": "at least"}),
        );
        assert!(k.check("DON'T STOP"), "DO, N'T, STOP");
        assert!(!k.check("Don't STOP NOW"));
        assert!(k.check("I'M FINE, THANKS."));
        let k = c(
            "change_case:capital_word_frequency",
            json!({"capital_frequency": 2, "capital_relation": "less than"}),
        );
        assert!(k.check("**A** b") && k.check("") && !k.check("U.S.A. NATO"));
    }
}
