//! FollowBench's rule-checked items, decided exactly as the reference evaluation decides them.
//!
//! FollowBench (Jiang et al. 2024) sends most items to an LLM judge, but some sources have
//! answers a rule can check: exact targets (`E2E`, `text_editing`), answer extraction
//! (`BBH_logical`, `BBH_time`, `gsm_8k`), membership (`WIKIEVENTS`, `CONLL2003`,
//! `self_made_space`), the five level-by-level summarisation groups of the mixed category
//! (`cnn_dailymail`, `xsum`, `samsum`, `gigaword`, `arxiv`), two hand-checked format groups
//! (example ids 22 and 30) and every item of the example category (a template with one
//! wildcard). [`Rule::for_item`] says which rule, if any, decides an item, and [`Rule::check`]
//! gives its verdict on a generation. The semantics are the reference's Python, including its
//! quirks (sentences are the non-empty pieces between `.`, `!` and `?`, so a trailing space
//! counts as a sentence; words of a length limit are pieces of `split(' ')`; `\b`, `\w`, `\s`
//! and `\d` are Python's Unicode classes; punctuation is `string.punctuation`).
//!
//! Not here: reading benchmark files, joining responses, the judge, or the metrics (all in
//! `demorecon_eval::followbench`). Nothing here panics on any text.

use crate::pattern::cached_regex;
use crate::pystr::{
    PY_SPACE_CLASS, PY_WORD_CLASS, is_boundary, is_digit, is_lower, is_space, is_word,
    split_whitespace,
};

/// One of the reference's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// content `E2E`: the generation equals the target.
    E2e,
    /// content `WIKIEVENTS`: every line of the generation is one of the target's lines.
    WikiEvents,
    /// content `CONLL2003`: the generation is one of the target's items (a Python list).
    Conll2003,
    /// situation `BBH_logical`: the last `(X)` option mark equals the target.
    BbhLogical,
    /// situation `BBH_time`: the last `dd/dd/dddd` date equals the target.
    BbhTime,
    /// situation `self_made_space`: the target occurs in the generation.
    SelfMadeSpace,
    /// situation `gsm_8k`: the last `$N` amount equals the target.
    Gsm8k,
    /// mixed `text_editing`: the generation equals the target.
    TextEditing,
    /// mixed `cnn_dailymail`: three short sentences with given words (cumulative by level).
    CnnDailymail,
    /// mixed `xsum`: one short sentence, word bans and requirements, present continuous.
    Xsum,
    /// mixed `samsum`: one short sentence with `stuff`, no `procrast…`, one punctuation mark.
    Samsum,
    /// mixed `gigaword`: eight words, no punctuation, lowercase, no `bus`, has `in`.
    Gigaword,
    /// mixed `arxiv`: one sentence of at most 20 words starting `We`, word requirements.
    Arxiv,
    /// format example 22: three numbered paragraphs of long sentences, a closing line.
    Format22,
    /// format example 30: five `**` points, sentence lengths, no `-ly` words.
    Format30,
    /// example category: the target's template with `{answer}` as a one-line wildcard.
    Example,
}

/// A rule's verdict on one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleVerdict {
    /// Whether the generation satisfies the item (used for both its hard and soft score).
    pub pass: bool,
    /// The rule's name, `rule:SOURCE` (e.g. `rule:BBH_time`, `rule:format_22`).
    pub rule: &'static str,
}

/// Why a rule could not be applied: the item's own target is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{rule}: target is not usable: {message}")]
    Target { rule: &'static str, message: String },
}

/// Every rule, for listings and tests.
pub const RULES: [Rule; 16] = [
    Rule::E2e,
    Rule::WikiEvents,
    Rule::Conll2003,
    Rule::BbhLogical,
    Rule::BbhTime,
    Rule::SelfMadeSpace,
    Rule::Gsm8k,
    Rule::TextEditing,
    Rule::CnnDailymail,
    Rule::Xsum,
    Rule::Samsum,
    Rule::Gigaword,
    Rule::Arxiv,
    Rule::Format22,
    Rule::Format30,
    Rule::Example,
];

impl Rule {
    /// The rule that decides an item of `constraint_type` (the data file's category:
    /// `content`, `situation`, `style`, `format`, `example`, `mixed`) with this `source` and
    /// `example_id`, or `None` when the item goes to the judge. As in the reference, the
    /// rule-checked sources are recognised in every category but `example`, whose items all
    /// use the template rule.
    pub fn for_item(constraint_type: &str, source: &str, example_id: u64) -> Option<Rule> {
        if constraint_type == "example" {
            return Some(Rule::Example);
        }
        let by_source = match source {
            "E2E" => Some(Rule::E2e),
            "WIKIEVENTS" => Some(Rule::WikiEvents),
            "CONLL2003" => Some(Rule::Conll2003),
            "BBH_logical" => Some(Rule::BbhLogical),
            "BBH_time" => Some(Rule::BbhTime),
            "self_made_space" => Some(Rule::SelfMadeSpace),
            "gsm_8k" => Some(Rule::Gsm8k),
            "text_editing" => Some(Rule::TextEditing),
            "cnn_dailymail" => Some(Rule::CnnDailymail),
            "xsum" => Some(Rule::Xsum),
            "samsum" => Some(Rule::Samsum),
            "gigaword" => Some(Rule::Gigaword),
            "arxiv" => Some(Rule::Arxiv),
            _ => None,
        };
        by_source.or(match (constraint_type, example_id) {
            ("format", 22) => Some(Rule::Format22),
            ("format", 30) => Some(Rule::Format30),
            _ => None,
        })
    }

    /// `rule:SOURCE`, what an item record's `decided_by` says.
    pub fn name(self) -> &'static str {
        match self {
            Rule::E2e => "rule:E2E",
            Rule::WikiEvents => "rule:WIKIEVENTS",
            Rule::Conll2003 => "rule:CONLL2003",
            Rule::BbhLogical => "rule:BBH_logical",
            Rule::BbhTime => "rule:BBH_time",
            Rule::SelfMadeSpace => "rule:self_made_space",
            Rule::Gsm8k => "rule:gsm_8k",
            Rule::TextEditing => "rule:text_editing",
            Rule::CnnDailymail => "rule:cnn_dailymail",
            Rule::Xsum => "rule:xsum",
            Rule::Samsum => "rule:samsum",
            Rule::Gigaword => "rule:gigaword",
            Rule::Arxiv => "rule:arxiv",
            Rule::Format22 => "rule:format_22",
            Rule::Format30 => "rule:format_30",
            Rule::Example => "rule:example",
        }
    }

    /// The verdict on `generation` for an item at `level` (1–5; like the reference, any other
    /// level gets the level-5 checks) with the item's `target`.
    pub fn check(
        self,
        generation: &str,
        target: &str,
        level: u32,
    ) -> Result<RuleVerdict, RuleError> {
        let g = generation;
        let pass = match self {
            Rule::E2e | Rule::TextEditing => g == target,
            Rule::WikiEvents => {
                let lines: Vec<&str> = target.split('\n').collect();
                g.split('\n').all(|line| lines.contains(&line))
            }
            Rule::Conll2003 => match parse_py_strings(target) {
                Some(PyStrings::List(items)) => items.iter().any(|s| s == g),
                Some(PyStrings::One(s)) => s.contains(g),
                None => {
                    return Err(RuleError::Target {
                        rule: self.name(),
                        message: "expected a Python list of string literals".into(),
                    });
                }
            },
            Rule::BbhLogical => last_match(r"\([A-Z]\)", g) == Some(target),
            Rule::BbhTime => last_match(r"\d{2}/\d{2}/\d{4}", g) == Some(target),
            Rule::Gsm8k => last_match(r"\$\d+", g) == Some(target),
            Rule::SelfMadeSpace => g.contains(target),
            Rule::CnnDailymail => cumulative(
                level,
                &[
                    &|| sentences(g).len() == 3,
                    &|| {
                        sentences(g)
                            .iter()
                            .all(|s| split_whitespace(s).count() < 15)
                    },
                    &|| {
                        nth_sentence_has_word(g, 1, "Potter")
                            && nth_sentence_has_word(g, 2, "actor")
                            && nth_sentence_has_word(g, 3, "films")
                    },
                    &|| !nth_sentence_has_word(g, 2, "lavish"),
                    &|| sentences(g).get(2).is_some_and(|s| present_perfect(s)),
                ],
            ),
            Rule::Xsum => cumulative(
                level,
                &[
                    &|| sentences(g).len() == 1,
                    &|| space_pieces(g) < 20,
                    &|| !has_word(g, "Newton Stewart"),
                    &|| present_continuous(g),
                    &|| has_word(g, "operation"),
                ],
            ),
            Rule::Samsum => cumulative(
                level,
                &[
                    &|| sentences(g).len() == 1,
                    &|| space_pieces(g) < 15,
                    &|| has_word(g, "stuff"),
                    &|| !contains_ignore_case_procrast(g),
                    &|| g.chars().filter(|c| is_punctuation(*c)).count() == 1,
                ],
            ),
            Rule::Gigaword => cumulative(
                level,
                &[
                    &|| space_pieces(g) == 8,
                    &|| !g.chars().any(is_punctuation),
                    &|| is_lower(g),
                    &|| !has_word(g, "bus"),
                    &|| has_word(g, "in"),
                ],
            ),
            Rule::Arxiv => cumulative(
                level,
                &[
                    &|| sentences(g).len() == 1,
                    &|| space_pieces(g) <= 20,
                    &|| g.starts_with("We"),
                    &|| has_word(g, "activations"),
                    &|| !has_word(g, "transformer"),
                ],
            ),
            Rule::Format22 => format_22(g, level),
            Rule::Format30 => format_30(g, level),
            Rule::Example => {
                example_template_matches(target, g).map_err(|message| RuleError::Target {
                    rule: self.name(),
                    message,
                })?
            }
        };
        Ok(RuleVerdict {
            pass,
            rule: self.name(),
        })
    }
}

/// Levels 1–4 need the first `level` checks, any other level all five: the mixed sources'
/// rules add one check per level, in this order.
fn cumulative(level: u32, checks: &[&dyn Fn() -> bool]) -> bool {
    let n = match level {
        1..=4 => level as usize,
        _ => checks.len(),
    };
    checks.iter().take(n).all(|c| c())
}

/// Python's `string.punctuation`: the 32 ASCII punctuation characters.
pub fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// `[s for s in re.split(r'[.!?]', text) if s]`: the reference's sentences. Whitespace-only
/// pieces count.
pub fn sentences(text: &str) -> Vec<&str> {
    text.split(['.', '!', '?'])
        .filter(|s| !s.is_empty())
        .collect()
}

/// `len(text.split(' '))`: pieces between single spaces, empty ones included.
fn space_pieces(text: &str) -> usize {
    text.split(' ').count()
}

/// `re.search(r'\b' + re.escape(word) + r'\b', text)` with Python's Unicode `\b`.
pub fn has_word(text: &str, word: &str) -> bool {
    let mut from = 0;
    while let Some(rel) = text.get(from..).and_then(|t| t.find(word)) {
        let at = from + rel;
        if is_boundary(text, at) && is_boundary(text, at + word.len()) {
            return true;
        }
        // Occurrences may overlap: go on from the next character.
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

fn nth_sentence_has_word(text: &str, n: usize, word: &str) -> bool {
    sentences(text)
        .get(n - 1)
        .is_some_and(|s| has_word(s, word))
}

/// `re.search(pattern, text)` for one of this module's fixed patterns.
fn search(pattern: &str, text: &str) -> bool {
    cached_regex(pattern).is_ok_and(|r| r.is_match(text))
}

/// The last of `re.findall(pattern, text)` (patterns without groups), for a fixed pattern.
fn last_match<'t>(pattern: &str, text: &'t str) -> Option<&'t str> {
    cached_regex(pattern)
        .ok()?
        .find_iter(text)
        .last()
        .map(|m| m.as_str())
}

/// `re.search(r'\b(has|have)\s+\w+', s)`.
fn present_perfect(s: &str) -> bool {
    let (w, sp) = (PY_WORD_CLASS, PY_SPACE_CLASS);
    search(&format!(r"(?:\A|[^{w}])(?:has|have)[{sp}]+[{w}]"), s)
}

/// `re.search(r'\b(am|is|are)\s+\w+ing\b', s)`: some word that follows one of the verbs
/// ends in `ing` with at least one character before it.
fn present_continuous(s: &str) -> bool {
    let (w, sp) = (PY_WORD_CLASS, PY_SPACE_CLASS);
    search(
        &format!(r"(?:\A|[^{w}])(?:am|is|are)[{sp}]+[{w}]+ing(?:\z|[^{w}])"),
        s,
    )
}

/// `re.search(r'procrast', s, re.IGNORECASE)`.
fn contains_ignore_case_procrast(s: &str) -> bool {
    search("(?i)procrast", s)
}

/// Format example 22, cumulative by level; level 5 wants four `\n\n` pieces (three
/// paragraphs and the closing line) and the text to end with "Those are suggestions".
fn format_22(g: &str, level: u32) -> bool {
    let paragraphs: Vec<&str> = g.split("\n\n").collect();
    let level = if (1..=4).contains(&level) { level } else { 5 };
    let want = if level == 5 { 4 } else { 3 };
    if paragraphs.len() != want {
        return false;
    }
    if level >= 2 && !paragraphs[..3].iter().all(|p| sentences(p).len() < 3) {
        return false;
    }
    if level >= 3
        && !sentences(g)
            .iter()
            .all(|s| split_whitespace(s).count() > 20)
    {
        return false;
    }
    if level >= 4 && !paragraphs_start_with_number(g) {
        return false;
    }
    level < 5 || g.ends_with("Those are suggestions")
}

/// Every non-blank `\n\n` paragraph starts (after leading whitespace) with `\d+\.`.
fn paragraphs_start_with_number(g: &str) -> bool {
    g.split("\n\n").all(|p| {
        let p = p.trim_start_matches(is_space);
        if p.is_empty() {
            return true;
        }
        let digits = p.chars().take_while(|c| is_digit(*c)).count();
        digits > 0 && p.chars().nth(digits) == Some('.')
    })
}

/// Format example 30. The reference checks its five conditions in a fixed order and level L
/// requires the first L of them, which is not the order the instruction adds them in.
fn format_30(g: &str, level: u32) -> bool {
    let sentences = split_format_30_sentences(g);
    let numbered = |s: &str| (1..=5).any(|k| s.contains(&format!("{k}.")));
    let checks: [&dyn Fn() -> bool; 5] = [
        &|| g.contains("**"),
        &|| cached_regex(r"\*\*\d.+?:").is_ok_and(|r| r.find_iter(g).count() == 5),
        &|| {
            sentences
                .iter()
                .filter(|s| numbered(s))
                .all(|s| s.matches('.').count() < 2)
        },
        &|| {
            sentences
                .iter()
                .all(|s| (10..=15).contains(&split_whitespace(s).count()))
        },
        &|| {
            sentences
                .iter()
                .all(|s| split_whitespace(s).all(|w| !w.ends_with("-ly")))
        },
    ];
    checks.iter().take(level as usize).all(|c| c())
}

/// `re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", g)`: split at each whitespace
/// character that follows `.` or `?`, unless the four characters before it look like `e.g.`
/// (word, dot, word, any but newline) or the three before it like `Mr.` (ASCII capital,
/// ASCII small letter, dot). The whitespace character itself is dropped.
fn split_format_30_sentences(g: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = g.char_indices().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, &(at, c)) in chars.iter().enumerate() {
        if !is_space(c) || i == 0 {
            continue;
        }
        let back = |k: usize| chars[i - k].1;
        if !matches!(back(1), '.' | '?') {
            continue;
        }
        let abbreviation =
            i >= 4 && is_word(back(4)) && back(3) == '.' && is_word(back(2)) && back(1) != '\n';
        let title = i >= 3
            && back(3).is_ascii_uppercase()
            && back(2).is_ascii_lowercase()
            && back(1) == '.';
        if abbreviation || title {
            continue;
        }
        pieces.push(&g[start..at]);
        start = at + c.len_utf8();
    }
    pieces.push(&g[start..]);
    pieces
}

/// The example category's check: the template is `target` without `{instruction}\n`, with
/// `{{`/`}}` unescaped and `{answer}` (and any literal `.*`, as in the reference) a wildcard
/// that matches within a line; the whole generation must match.
pub fn example_template_matches(target: &str, generation: &str) -> Result<bool, String> {
    let template = target
        .replace("{instruction}\n", "")
        .replace("{{", "{")
        .replace("}}", "}")
        .replace("{answer}", ".*");
    let mut pattern = String::from(r"\A");
    for (i, literal) in template.split(".*").enumerate() {
        if i > 0 {
            pattern.push_str(".*");
        }
        pattern.push_str(&regex::escape(literal));
    }
    pattern.push_str(r"\z");
    let re = cached_regex(&pattern).map_err(|e| format!("template does not compile: {e}"))?;
    Ok(re.is_match(generation))
}

/// A Python literal that `ast.literal_eval` could turn into strings for `in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyStrings {
    /// A list or tuple of string literals: `in` is membership.
    List(Vec<String>),
    /// A single string literal: `in` is a substring test.
    One(String),
}

/// Parses a Python list/tuple of string literals (or one string literal), the shape of
/// `CONLL2003` targets. Adjacent literals concatenate; `r`/`u` prefixes and the common escapes
/// are understood. Anything else is `None`.
pub fn parse_py_strings(text: &str) -> Option<PyStrings> {
    let mut p = LiteralParser {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.skip_space();
    let result = match p.peek()? {
        open @ ('[' | '(') => {
            let close = if open == '[' { ']' } else { ')' };
            p.pos += 1;
            let mut items = Vec::new();
            let mut tuple_comma = false;
            loop {
                p.skip_space();
                if p.peek()? == close {
                    p.pos += 1;
                    break;
                }
                items.push(p.strings()?);
                p.skip_space();
                match p.peek()? {
                    ',' => {
                        p.pos += 1;
                        tuple_comma = true;
                    }
                    c if c == close => {
                        p.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            if open == '(' && items.len() == 1 && !tuple_comma {
                PyStrings::One(items.pop()?)
            } else {
                PyStrings::List(items)
            }
        }
        _ => PyStrings::One(p.strings()?),
    };
    p.skip_space();
    (p.pos == p.chars.len()).then_some(result)
}

struct LiteralParser {
    chars: Vec<char>,
    pos: usize,
}

impl LiteralParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self
            .peek()
            .is_some_and(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r')
        {
            self.pos += 1;
        }
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> Option<String> {
        let mut out = self.string()?;
        loop {
            let save = self.pos;
            self.skip_space();
            match self.string() {
                Some(more) => out.push_str(&more),
                None => {
                    self.pos = save;
                    return Some(out);
                }
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let start = self.pos;
        let mut raw = false;
        while let Some(c) = self.peek() {
            match c.to_ascii_lowercase() {
                'r' => raw = true,
                'u' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => {
                self.pos = start;
                return None;
            }
        };
        self.pos += 1;
        let triple = self.chars.get(self.pos..self.pos + 2) == Some(&[quote, quote][..]);
        if triple {
            self.pos += 2;
        }
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            if c == quote {
                if !triple {
                    return Some(out);
                }
                if self.chars.get(self.pos..self.pos + 2) == Some(&[quote, quote][..]) {
                    self.pos += 2;
                    return Some(out);
                }
                out.push(c);
            } else if c == '\n' && !triple {
                return None;
            } else if c == '\\' {
                let e = self.peek()?;
                self.pos += 1;
                if raw {
                    out.push('\\');
                    out.push(e);
                    continue;
                }
                match e {
                    '\n' => {}
                    '\\' | '\'' | '"' => out.push(e),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            match self.peek().and_then(|d| d.to_digit(8)) {
                                Some(d) => {
                                    v = v * 8 + d;
                                    self.pos += 1;
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(v)?);
                    }
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = self.chars.get(self.pos..self.pos + n)?.iter().collect();
                        self.pos += n;
                        let v = u32::from_str_radix(&hex, 16).ok()?;
                        out.push(char::from_u32(v)?);
                    }
                    // Python keeps unknown escapes as written.
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            } else {
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(rule: Rule, g: &str, target: &str, level: u32) -> bool {
        rule.check(g, target, level).unwrap().pass
    }

    #[test]
    fn dispatch_follows_source_then_format_ids() {
        assert_eq!(Rule::for_item("content", "E2E", 3), Some(Rule::E2e));
        assert_eq!(Rule::for_item("mixed", "xsum", 12), Some(Rule::Xsum));
        assert_eq!(Rule::for_item("example", "xsum", 12), Some(Rule::Example));
        assert_eq!(Rule::for_item("format", "oasst", 22), Some(Rule::Format22));
        assert_eq!(Rule::for_item("format", "koala", 30), Some(Rule::Format30));
        assert_eq!(Rule::for_item("style", "oasst", 22), None);
        assert_eq!(Rule::for_item("situation", "self-made", 7), None);
        assert_eq!(Rule::BbhTime.name(), "rule:BBH_time");
        let names: std::collections::BTreeSet<_> = RULES.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), RULES.len());
    }

    #[test]
    fn exact_and_membership_rules() {
        assert!(pass(Rule::E2e, "name[X], food[Y]", "name[X], food[Y]", 1));
        assert!(!pass(
            Rule::E2e,
            "name[X], food[Y]\n",
            "name[X], food[Y]",
            1
        ));
        assert!(pass(
            Rule::TextEditing,
            "pples love eting i.",
            "pples love eting i.",
            4
        ));
        assert!(pass(Rule::WikiEvents, "b\na", "a\nb\nc", 2));
        assert!(
            !pass(Rule::WikiEvents, "a\n", "a\nb", 2),
            "an empty last line is not a target line"
        );
        assert!(pass(Rule::WikiEvents, "a\n", "a\n\nb", 2));
        assert!(pass(Rule::Conll2003, "Bonn", "['Bonn', 'BRUSSELS']", 4));
        assert!(!pass(Rule::Conll2003, "Bon", "['Bonn', 'BRUSSELS']", 4));
        assert!(!pass(Rule::Conll2003, "Bonn\n", "['Bonn']", 5));
        assert!(pass(Rule::Conll2003, "it's", "[\"it's\", 'x']", 1));
        assert!(
            pass(Rule::Conll2003, "on", "'Bonn'", 1),
            "a bare string is a substring test"
        );
        let err = Rule::Conll2003.check("x", "[Bonn]", 1).unwrap_err();
        assert!(err.to_string().contains("rule:CONLL2003"), "{err}");
        assert!(pass(
            Rule::SelfMadeSpace,
            "You are on the 20th floor.",
            "20th floor",
            1
        ));
        assert!(!pass(
            Rule::SelfMadeSpace,
            "You are on the 20th Floor.",
            "20th floor",
            1
        ));
    }

    #[test]
    fn last_match_rules() {
        assert!(pass(Rule::BbhLogical, "(A) is wrong, so (C)", "(C)", 1));
        assert!(!pass(Rule::BbhLogical, "(C) not (A)", "(C)", 1));
        assert!(!pass(Rule::BbhLogical, "C", "(C)", 1));
        assert!(!pass(Rule::BbhLogical, "(c)", "(c)", 1), "only capitals");
        assert!(pass(
            Rule::BbhTime,
            "from 01/02/1999 to 12/29/1937.",
            "12/29/1937",
            1
        ));
        assert!(!pass(
            Rule::BbhTime,
            "12/29/1937 or 1/2/1937",
            "1/2/1937",
            1
        ));
        // Python's \d is Unicode: Arabic-Indic digits count, and then differ from the target.
        assert!(!pass(
            Rule::BbhTime,
            "12/29/1937 ١٢/٢٩/١٩٣٧",
            "12/29/1937",
            1
        ));
        assert!(pass(Rule::Gsm8k, "$3 each, so $14 in total", "$14", 1));
        assert!(!pass(Rule::Gsm8k, "$14.50", "$14.50", 1));
        assert!(!pass(Rule::Gsm8k, "14 dollars", "$14", 1));
    }

    #[test]
    fn sentences_and_words_like_the_reference() {
        assert_eq!(sentences("A. B! C? "), vec!["A", " B", " C", " "]);
        assert_eq!(sentences("..."), Vec::<&str>::new());
        assert!(has_word("Harry Potter star", "Potter"));
        assert!(!has_word("Potters", "Potter"));
        assert!(!has_word("_Potter", "Potter"));
        assert!(has_word("-Potter-", "Potter"));
        assert!(!has_word("Newton Stewarts", "Newton Stewart"));
        assert!(has_word("in Newton Stewart.", "Newton Stewart"));
        assert!(!has_word("éin", "in"), "é is a word character");
        assert!(
            has_word("ininin in", "in"),
            "overlapping occurrences are all tried"
        );
        assert!(present_perfect("He has starred"));
        assert!(!present_perfect("He has."));
        assert!(!present_perfect("She shas starred"));
        assert!(present_continuous("Repairs are ongoing."));
        assert!(!present_continuous("Repairs are ing."));
        assert!(!present_continuous("Repairs are ongoings"));
        assert!(!present_continuous("Repairs were ongoing"));
        assert!(!present_continuous("This ongoing"));
    }

    #[test]
    fn mixed_rules_add_one_check_per_level() {
        let cnn = "Harry Potter turns 18. The actor stays modest. His films earned millions";
        for level in 1..=4 {
            assert!(pass(Rule::CnnDailymail, cnn, "", level), "level {level}");
        }
        assert!(
            !pass(Rule::CnnDailymail, cnn, "", 5),
            "no present perfect in sentence 3"
        );
        let cnn5 = "Harry Potter turns 18. The actor stays modest. His films has made millions";
        assert!(pass(Rule::CnnDailymail, cnn5, "", 5));
        assert!(
            !pass(Rule::CnnDailymail, "One. Two. Three. ", "", 1),
            "trailing space is a 4th sentence"
        );

        let xsum = "Flood repair operation is continuing across the Borders";
        for level in 1..=5 {
            assert!(pass(Rule::Xsum, xsum, "", level), "level {level}");
        }
        assert!(!pass(Rule::Xsum, "Newton Stewart is recovering", "", 3));
        assert!(pass(Rule::Xsum, "Newton Stewart is recovering", "", 2));

        let sam = "Kim has lots of stuff to do, says Tim";
        for level in 1..=5 {
            assert!(pass(Rule::Samsum, sam, "", level), "level {level}");
        }
        assert!(
            !pass(Rule::Samsum, "Kim's stuff waits, she says", "", 5),
            "two marks"
        );
        assert!(!pass(Rule::Samsum, "Kim PROCRASTINATES on stuff", "", 4));

        let giga = "two killed in suspected bomb attack in philippines";
        for level in 1..=5 {
            assert!(pass(Rule::Gigaword, giga, "", level), "level {level}");
        }
        assert!(!pass(
            Rule::Gigaword,
            "two killed in  bomb attack in the philippines",
            "",
            1
        ));
        assert!(!pass(
            Rule::Gigaword,
            "two killed in bomb attack on southern bus",
            "",
            4
        ));
        assert!(!pass(
            Rule::Gigaword,
            "Two killed in bomb attack on southern island",
            "",
            3
        ));
        assert!(!pass(
            Rule::Gigaword,
            "two killed in bomb attack on southern island.",
            "",
            2
        ));

        let arxiv =
            "We locate factual associations in mid-layer activations and edit them directly";
        for level in 1..=5 {
            assert!(pass(Rule::Arxiv, arxiv, "", level), "level {level}");
        }
        assert!(!pass(
            Rule::Arxiv,
            "The transformer activations store facts",
            "",
            3
        ));
        assert!(!pass(
            Rule::Arxiv,
            "We find transformer activations store facts",
            "",
            5
        ));
    }

    #[test]
    fn format_22_levels() {
        let long = "word ".repeat(21);
        let three = format!("{long}\n\n{long}\n\n{long}");
        for level in 1..=3 {
            assert!(pass(Rule::Format22, &three, "", level), "level {level}");
        }
        assert!(!pass(Rule::Format22, &three, "", 4), "no number markers");
        assert!(!pass(
            Rule::Format22,
            &format!("{three}\n\nThose are suggestions"),
            "",
            1
        ));
        // A marker `1.` ends a one-word "sentence", so a numbered text never has every
        // sentence above 20 words: levels 4 and 5 cannot pass (the reference's rule).
        let numbered = format!("1. {long}\n\n2. {long}\n\n3. {long}");
        assert!(pass(Rule::Format22, &numbered, "", 2));
        assert!(!pass(Rule::Format22, &numbered, "", 3));
        assert!(!pass(Rule::Format22, &numbered, "", 4));
        assert!(paragraphs_start_with_number(&numbered));
        assert!(paragraphs_start_with_number(" 12.x\n\n\n\n  3."));
        assert!(!paragraphs_start_with_number("1) x"));
        let four = format!("{three}\n\n{long}Those are suggestions");
        assert!(!pass(Rule::Format22, &four, "", 5));
        assert!(format_22_parts_without_numbers(&four));
        let short = three.replacen(&long, "too short. ", 1);
        assert!(pass(Rule::Format22, &short, "", 2));
        assert!(!pass(Rule::Format22, &short, "", 3));
    }

    /// Level 5 of example 22 minus the number-marker check: what a text needs otherwise.
    fn format_22_parts_without_numbers(g: &str) -> bool {
        let p: Vec<&str> = g.split("\n\n").collect();
        p.len() == 4
            && p[..3].iter().all(|p| sentences(p).len() < 3)
            && sentences(g)
                .iter()
                .all(|s| split_whitespace(s).count() > 20)
            && g.ends_with("Those are suggestions")
    }

    #[test]
    fn format_30_checks_in_the_reference_order() {
        let point = |k: u32| {
            format!(
                "**{k}) Growth:** Innovation lifts wages and output across every region we serve."
            )
        };
        let text = (1..=5).map(point).collect::<Vec<_>>().join("\n");
        for level in 1..=5 {
            assert!(pass(Rule::Format30, &text, "", level), "level {level}");
        }
        assert!(!pass(Rule::Format30, "no markers at all", "", 1));
        let four = (1..=4).map(point).collect::<Vec<_>>().join("\n");
        assert!(pass(Rule::Format30, &four, "", 1));
        assert!(!pass(Rule::Format30, &four, "", 2));
        let ly = text.replace("lifts", "quickly lifts");
        assert!(
            pass(Rule::Format30, &ly, "", 5),
            "'-ly' means a literal hyphen suffix"
        );
        let dashed = text.replace("lifts", "early-ly lifts");
        assert!(pass(Rule::Format30, &dashed, "", 4));
        assert!(!pass(Rule::Format30, &dashed, "", 5));
        // `**1. Growth:` splits after `1.`: a one-word sentence fails the 10-15 word check.
        let dotted = text.replace(") Growth", ". Growth");
        assert!(pass(Rule::Format30, &dotted, "", 3));
        assert!(!pass(Rule::Format30, &dotted, "", 4));
        assert_eq!(
            split_format_30_sentences("Dr. Who met e.g. him. Then? Yes.\nMr. X"),
            vec!["Dr. Who met e.g. him.", "Then?", "Yes.", "Mr. X"]
        );
        assert_eq!(split_format_30_sentences(". a"), vec![".", "a"]);
        assert_eq!(split_format_30_sentences(" .  "), vec![" .", " "]);
    }

    #[test]
    fn example_template_is_a_full_one_line_match() {
        let t = "{instruction}\n{{'AI assistant': '{answer}'}}";
        assert!(pass(
            Rule::Example,
            "{'AI assistant': 'Legal Anywhere.com'}",
            t,
            1
        ));
        assert!(pass(Rule::Example, "{'AI assistant': ''}", t, 1));
        assert!(!pass(Rule::Example, "{'AI assistant': 'a\nb'}", t, 1));
        assert!(!pass(Rule::Example, "Sure! {'AI assistant': 'x'}", t, 1));
        assert!(!pass(Rule::Example, "{'AI assistant': 'x'}\n", t, 1));
        assert!(pass(
            Rule::Example,
            "BOT: anything (really)",
            "{instruction}\nBOT: {answer}",
            3
        ));
        assert!(
            pass(Rule::Example, "a+b=c", "{instruction}\na+b={answer}", 3),
            "literal regex metacharacters"
        );
        assert!(
            pass(Rule::Example, "x-anything", "{instruction}\nx.*", 1),
            "a literal .* is a wildcard too"
        );
    }

    #[test]
    fn python_literals() {
        assert_eq!(
            parse_py_strings("['a', \"b'c\", 'd\\'e', 'f' 'g',]"),
            Some(PyStrings::List(vec![
                "a".into(),
                "b'c".into(),
                "d'e".into(),
                "fg".into()
            ]))
        );
        assert_eq!(parse_py_strings("('x')"), Some(PyStrings::One("x".into())));
        assert_eq!(
            parse_py_strings("('x',)"),
            Some(PyStrings::List(vec!["x".into()]))
        );
        assert_eq!(parse_py_strings("[]"), Some(PyStrings::List(vec![])));
        assert_eq!(
            parse_py_strings("['\\u00e9\\x41\\n']"),
            Some(PyStrings::List(vec!["éA\n".into()]))
        );
        assert_eq!(parse_py_strings("[1]"), None);
        assert_eq!(parse_py_strings("['a'"), None);
        assert_eq!(parse_py_strings("['a'] x"), None);
        assert_eq!(parse_py_strings(""), None);
    }

    #[test]
    fn no_panic_on_odd_text() {
        for g in [
            "",
            "\u{0}",
            "é.\u{3000}?",
            "**1.",
            "\n\n\n\n",
            ".",
            "$",
            "(",
            "ééé",
        ] {
            for rule in RULES {
                for level in 0..=6 {
                    let _ = rule.check(g, "['x']", level);
                }
            }
        }
    }
}
