//! NLTK's word tokenizer as `nltk.word_tokenize(text)` applies it: Punkt sentences, then the
//! improved Treebank tokenizer (`NLTKWordTokenizer`) on each sentence.
//!
//! IFEval's `change_case:capital_word_frequency` counts the tokens that are all capitals, so
//! how contractions (`DON'T` → `DO`, `N'T`), quotes, brackets and final periods are split
//! decides its verdicts. The substitutions below are NLTK's, in NLTK's order; the few that use
//! look-around or possessive quantifiers (which the linear-time `regex` crate lacks) are
//! written as scans. Python's `\s` is widened to include U+001C..U+001F, as in Python.

use std::sync::{LazyLock, OnceLock};

use regex::Regex;

use crate::{punkt, pystr};

struct Rule {
    pattern: &'static str,
    /// Compiled on first use: with the `need` scans, many rules (the contractions above all)
    /// never run on a given input, so their compile cost is never paid.
    re: OnceLock<Regex>,
    rep: &'static str,
    /// A necessary condition for the pattern to match: a cheap scan that lets most sentences
    /// skip the regex search (whose fixed cost, paid ~30 times per sentence, dominated
    /// tokenizing). When it holds, the rule runs exactly as before.
    need: fn(&str) -> bool,
}

fn rule(pattern: &'static str, rep: &'static str, need: fn(&str) -> bool) -> Rule {
    Rule {
        pattern,
        re: OnceLock::new(),
        rep,
        need,
    }
}

impl Rule {
    fn re(&self) -> &Regex {
        self.re.get_or_init(|| {
            let pattern = self
                .pattern
                .replace(r"\s", &format!("[{}]", pystr::PY_SPACE_CLASS));
            Regex::new(&pattern).expect("static Treebank regex compiles")
        })
    }
}

fn apply(rules: &[Rule], mut text: String) -> String {
    for r in rules {
        if !(r.need)(&text) {
            continue;
        }
        if let std::borrow::Cow::Owned(s) = r.re().replace_all(&text, r.rep) {
            text = s;
        }
    }
    text
}

/// Whether `hay` contains `needle` (ASCII, lowercase) ignoring ASCII case. Under the `regex`
/// crate's `(?i)` the letters of the contraction rules below match only their two ASCII cases
/// (only `k` and `s` have non-ASCII partners, and no needle here has them), so this is a
/// necessary condition for those rules.
fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn always(_: &str) -> bool {
    true
}

static STARTING_QUOTES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule("([«“‘„]|[`]+)", " ${1} ", |t| {
            t.contains(['«', '“', '‘', '„', '`'])
        }),
        rule(r#"^""#, "``", |t| t.starts_with('"')),
        rule("(``)", " ${1} ", |t| t.contains("``")),
        rule(r#"([ (\[{<])("|'{2})"#, "${1} `` ", |t| {
            t.contains('"') || t.contains("''")
        }),
    ]
});

static PUNCT_MID: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(r"([:,])([^\d])", " ${1} ${2}", |t| t.contains([':', ','])),
        rule(r"([:,])(\n?)\z", " ${1} ${2}", |t| t.contains([':', ','])),
        rule(r"\.{2,}", " ${0} ", |t| t.contains("..")),
        rule(r"[;@#$%&]", " ${0} ", |t| {
            t.contains([';', '@', '#', '$', '%', '&'])
        }),
        rule("[\u{2012}-\u{2015}]", " ${0} ", |t| {
            t.contains(['\u{2012}', '\u{2013}', '\u{2014}', '\u{2015}'])
        }),
    ]
});

static PUNCT_END: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(r"[?!]", " ${0} ", |t| t.contains(['?', '!'])),
        rule(r"([^'])' ", "${1} ' ", |t| t.contains("' ")),
        rule(r"[*]", " ${0} ", |t| t.contains('*')),
        rule(r"[\]\[(){}<>]", " ${0} ", |t| {
            t.contains([']', '[', '(', ')', '{', '}', '<', '>'])
        }),
        rule(r"--", " -- ", |t| t.contains("--")),
    ]
});

static ENDING_QUOTES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule("([»”’])", " ${1} ", |t| t.contains(['»', '”', '’'])),
        rule("''", " '' ", |t| t.contains("''")),
        rule("\"", " '' ", |t| t.contains('"')),
        rule(r"\s+", " ", always),
        rule(r"([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} ", |t| {
            t.contains('\'')
        }),
        rule(
            r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ",
            "${1} ${2} ",
            |t| t.contains('\''),
        ),
    ]
});

static CONTRACTIONS: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(r"(?i)\b(can)(not)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "cannot")
        }),
        rule(r"(?i)\b(d)('ye)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "d'ye")
        }),
        rule(r"(?i)\b(gim)(me)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "gimme")
        }),
        rule(r"(?i)\b(gon)(na)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "gonna")
        }),
        rule(r"(?i)\b(got)(ta)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "gotta")
        }),
        rule(r"(?i)\b(lem)(me)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "lemme")
        }),
        rule(r"(?i)\b(more)('n)\b", " ${1} ${2} ", |t| {
            contains_ci(t, "more'n")
        }),
        rule(r"(?i)\b(wan)(na)(\s)", " ${1} ${2} ${3}", |t| {
            contains_ci(t, "wanna")
        }),
        // `is`/`was` may match with LONG S, so only the `'t` part is required here.
        rule(r"(?i) ('t)(is)\b", " ${1} ${2} ", |t| contains_ci(t, "'t")),
        rule(r"(?i) ('t)(was)\b", " ${1} ${2} ", |t| contains_ci(t, "'t")),
    ]
});

/// `(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)` → `' `: an opening single quote before a
/// word (but not a contraction suffix) is split off.
fn split_opening_apostrophes(text: &str) -> String {
    if !text.contains('\'') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        out.push(c);
        if c == '\'' && !prev.is_some_and(pystr::is_word) {
            let rest = &text[i + 1..];
            let next_is_word = rest.chars().next().is_some_and(pystr::is_word);
            if next_is_word && !starts_with_suffix(rest) {
                out.push(' ');
            }
        }
        prev = Some(c);
    }
    out
}

fn starts_with_suffix(rest: &str) -> bool {
    ["re", "ve", "ll", "m", "t", "s", "d", "n"]
        .iter()
        .any(|suf| {
            rest.len() >= suf.len()
                && rest.is_char_boundary(suf.len())
                && rest[..suf.len()].eq_ignore_ascii_case(suf)
                && !rest[suf.len()..].chars().next().is_some_and(pystr::is_word)
        })
}

/// The final-period rules: `([^\.])(\.)([<closers>]*)\s*$`. Only the last period of the text
/// can match (what follows it may hold closers and whitespace only). `spaced` selects the
/// replacement `\1 \2 \3 ` (else `\1 \2\3 `).
fn final_period(text: String, closers: &[char], spaced: bool) -> String {
    let Some(d) = text.rfind('.') else {
        return text;
    };
    if d == 0 || text[..d].ends_with('.') {
        return text;
    }
    let tail = &text[d + 1..];
    let run = tail.len() - tail.trim_start_matches(|c| closers.contains(&c)).len();
    if !tail[run..].chars().all(pystr::is_space) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str(&text[..d]);
    out.push_str(if spaced { " . " } else { " ." });
    out.push_str(&tail[..run]);
    out.push(' ');
    out
}

const CLOSERS_1: &[char] = &[']', ')', '}', '>', '"', '\'', '»', '”', '’', ' '];
const CLOSERS_2: &[char] = &[']', ')', '}', '>', '"', '\''];

/// `NLTKWordTokenizer().tokenize(sentence)`.
pub fn tokenize_sentence(sentence: &str) -> Vec<String> {
    let text = apply(&STARTING_QUOTES, sentence.to_owned());
    let text = split_opening_apostrophes(&text);
    let text = final_period(text, CLOSERS_1, true);
    let text = apply(&PUNCT_MID, text);
    let text = final_period(text, CLOSERS_2, false);
    let text = apply(&PUNCT_END, text);
    let text = format!(" {text} ");
    let text = apply(&ENDING_QUOTES, text);
    let text = apply(&CONTRACTIONS, text);
    pystr::split_whitespace(&text).map(str::to_owned).collect()
}

/// `nltk.word_tokenize(text)`: Punkt sentences, each split by the Treebank rules.
pub fn word_tokenize(text: &str) -> Vec<String> {
    punkt::sentences(text)
        .into_iter()
        .flat_map(tokenize_sentence)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        word_tokenize(s)
    }

    #[test]
    fn nltk_docstring_example() {
        let s = "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\nThanks.";
        assert_eq!(
            toks(s),
            vec![
                "Good", "muffins", "cost", "$", "3.88", "in", "New", "York", ".", "Please", "buy",
                "me", "two", "of", "them", ".", "Thanks", "."
            ]
        );
    }

    #[test]
    fn contractions_split() {
        assert_eq!(toks("DON'T STOP"), vec!["DO", "N'T", "STOP"]);
        assert_eq!(
            toks("I can't, they'll see."),
            vec!["I", "ca", "n't", ",", "they", "'ll", "see", "."]
        );
        assert_eq!(toks("Cannot gonna"), vec!["Can", "not", "gon", "na"]);
        assert_eq!(toks("'Tis 'hello'"), vec!["'", "Tis", "'", "hello", "'"]);
        assert_eq!(
            toks("WHAT'S UP? I'M FINE, THANKS. YOU'RE WELCOME!!"),
            vec![
                "WHAT", "'S", "UP", "?", "I", "'M", "FINE", ",", "THANKS", ".", "YOU", "'RE",
                "WELCOME", "!", "!"
            ]
        );
    }

    #[test]
    fn quotes_and_brackets() {
        assert_eq!(
            toks("\"HELLO\" (WORLD) [x] {y} <z>"),
            vec![
                "``", "HELLO", "''", "(", "WORLD", ")", "[", "x", "]", "{", "y", "}", "<", "z", ">"
            ]
        );
        assert_eq!(toks("“Smart” quotes…"), vec!["“", "Smart", "”", "quotes…"]);
    }

    #[test]
    fn abbreviations_and_periods() {
        assert_eq!(
            toks("Dr. SMITH, e.g. U.S.A. ok..."),
            vec!["Dr.", "SMITH", ",", "e.g", ".", "U.S.A.", "ok", "..."]
        );
        assert_eq!(
            toks("I.B.M. is big. So is A.T.&T. today."),
            vec![
                "I.B.M", ".", "is", "big", ".", "So", "is", "A.T.", "&", "T", ".", "today", "."
            ]
        );
        assert_eq!(
            toks("Look -- there. Here --- too."),
            vec!["Look", "--", "there", ".", "Here", "--", "-", "too", "."]
        );
    }

    #[test]
    fn empty_and_unicode() {
        assert!(toks("").is_empty());
        assert!(toks(" \n ").is_empty());
        assert_eq!(toks("中文，没有空格。"), vec!["中文，没有空格。"]);
        assert_eq!(toks("ÉCOLE ÇA"), vec!["ÉCOLE", "ÇA"]);
    }
}
