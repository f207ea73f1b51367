//! Python string semantics that IFEval's verdicts depend on, reproduced for Rust `&str`.
//!
//! The reference checks are Python: `str.strip()` strips Unicode whitespace (which in Python
//! also includes the separators U+001C..U+001F), `str.isupper()`/`islower()` need at least one
//! cased character and none of the other case, and the stdlib `re` module's `\w`, `\b` and
//! `\s` are Unicode-aware with definitions that differ from the Rust `regex` crate's in small
//! ways (stdlib `\w` is letters, numbers and `_` — combining marks are *not* word characters).
//! These are the semantics of the IFEval checks' own patterns, which use the stdlib `re`.
//! They are *not* those of nltk 3.10's tokenizers, which compile their patterns with the
//! third-party `regex` module: see [`crate::pyregex`]. Every helper here names the Python
//! behaviour it copies; regex fragments for the `regex` crate that match Python's classes are
//! exported as constants.

use std::sync::LazyLock;

use regex::Regex;

/// Python's `\s` for `str` patterns, as a `regex` class body fragment (use inside `[...]`).
pub const PY_SPACE_CLASS: &str = r"\s\x1c-\x1f";

/// Python's `\w` for `str` patterns: letters (L*), numbers (N*) and `_`.
pub const PY_WORD_CLASS: &str = r"\p{L}\p{N}_";

/// Python `str.isspace()` for one character (also what `\s`, `strip()` and `split()` use).
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python `re`'s `\w` for one character: `str.isalnum()` or `_`.
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    static WORD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(&format!("^[{PY_WORD_CLASS}]$")).expect("static word-class regex compiles")
    });
    let mut buf = [0u8; 4];
    WORD.is_match(c.encode_utf8(&mut buf))
}

/// Python `re`'s `\d` for one character (Unicode decimal digits, category Nd).
pub fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    static DIGIT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\d$").expect("static digit regex compiles"));
    let mut buf = [0u8; 4];
    DIGIT.is_match(c.encode_utf8(&mut buf))
}

/// Python `str.strip()` with no argument.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python `str.split()` with no argument: runs of whitespace separate, no empty pieces.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|p| !p.is_empty())
}

/// Python `str.lower()` (full case mapping, final sigma included).
pub fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Titlecase letters (category Lt), which make both `isupper()` and `islower()` false.
fn is_title(c: char) -> bool {
    matches!(
        c,
        '\u{1c5}'
            | '\u{1c8}'
            | '\u{1cb}'
            | '\u{1f2}'
            | '\u{1f88}'..='\u{1f8f}'
            | '\u{1f98}'..='\u{1f9f}'
            | '\u{1fa8}'..='\u{1faf}'
            | '\u{1fbc}'
            | '\u{1fcc}'
            | '\u{1ffc}'
    )
}

/// Python `str.isupper()`: at least one uppercase character and no lowercase or titlecase one.
pub fn is_upper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_title(c) {
            return false;
        }
        if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

/// Python `str.islower()`: at least one lowercase character and no uppercase or titlecase one.
pub fn is_lower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() || is_title(c) {
            return false;
        }
        if c.is_lowercase() {
            cased = true;
        }
    }
    cased
}

/// Python `re`'s `\b` at byte offset `at` of `s`: the characters on either side differ in
/// being word characters (`\w`). Out-of-range sides count as non-word.
pub fn is_boundary(s: &str, at: usize) -> bool {
    boundary_with(s, at, is_word)
}

/// `\b` at byte offset `at` of `s` for a given notion of word character (stdlib `re`'s here,
/// the `regex` module's in [`crate::pyregex`]).
pub(crate) fn boundary_with(s: &str, at: usize, word: impl Fn(char) -> bool) -> bool {
    let before = s
        .get(..at)
        .and_then(|h| h.chars().next_back())
        .is_some_and(&word);
    let after = s
        .get(at..)
        .and_then(|t| t.chars().next())
        .is_some_and(&word);
    before != after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_matches_python() {
        for c in [
            '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1c}', '\u{1f}', ' ', '\u{85}', '\u{a0}',
        ] {
            assert!(is_space(c), "{c:?}");
        }
        for c in ['\u{200b}', '\u{feff}', 'a', '\u{180e}'] {
            assert!(!is_space(c), "{c:?}");
        }
        assert_eq!(strip("\u{3000} x \u{1c}\n"), "x");
        assert_eq!(strip(" \t "), "");
        assert_eq!(strip(""), "");
    }

    #[test]
    fn word_chars_are_letters_numbers_underscore() {
        // Python: re.findall(r'\w+', 'cafe\u0301 x\u00b2 \u2155 _a') == ['cafe', 'x²', '⅕', '_a']
        assert!(is_word('é') && is_word('²') && is_word('⅕') && is_word('_') && is_word('中'));
        assert!(!is_word('\u{301}') && !is_word('\u{93f}') && !is_word('-') && !is_word('\''));
    }

    #[test]
    fn case_predicates_match_python() {
        assert!(is_upper("HELLO, WORLD 123"));
        assert!(!is_upper("HELLO World"));
        assert!(!is_upper("123 !!"));
        assert!(!is_upper(""));
        assert!(is_lower("hello, world 123"));
        assert!(!is_lower("hello World"));
        assert!(!is_lower("中文"));
        assert!(!is_upper("ǅ") && !is_lower("ǅ"));
        assert!(is_upper("ÀÉÎ") && is_lower("àéî"));
        assert!(is_lower("ª")); // Other_Lowercase counts as lowercase in Python
    }

    #[test]
    fn boundaries_follow_python_word_chars() {
        // Python: re.search(r'\bcafe\b', 'cafe\u0301') matches: the combining mark is not \w.
        assert!(is_boundary("cafe\u{301}", 4));
        assert!(is_boundary("a b", 1));
        assert!(!is_boundary("ab", 1));
        assert!(is_boundary("ab", 0) && is_boundary("ab", 2));
        assert!(!is_boundary("", 0));
    }
}
