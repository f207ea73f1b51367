//! The keyword patterns of IFEval's keyword checks: the reference passes each keyword to
//! Python's `re` with `IGNORECASE`, so a keyword is a regular expression, but nearly all are
//! plain words. Compiling a Unicode case-insensitive regex costs tens of microseconds (the
//! `regex` crate builds a DFA and a literal prefilter for it), more than searching a response,
//! so a keyword made only of ASCII letters, digits and a few inert punctuation marks is
//! matched directly, with exactly the `regex` crate's `(?i)` semantics (simple case folding:
//! an ASCII letter matches its other case, and `k`/`s` also match KELVIN SIGN and LONG S).
//! Anything else is compiled once per distinct pattern and shared across rows and threads.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

/// A case-insensitive search pattern built from `(?i)` + a keyword.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A plain keyword, stored lowercased (ASCII), matched without a regex engine.
    Literal(Box<[u8]>),
    /// Any other pattern.
    Regex(Regex),
}

/// Characters a literal keyword may hold: none is special in a pattern outside a class.
fn is_inert(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b' ' | b'-' | b'\'' | b',' | b'_' | b'!' | b'%')
}

/// `Regex::new(pattern)`, compiled once per distinct pattern for the whole process.
pub fn cached_regex(pattern: &str) -> Result<Regex, regex::Error> {
    static CACHE: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);
    if let Some(r) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(r.clone());
    }
    let r = Regex::new(pattern)?;
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pattern.to_owned(), r.clone());
    Ok(r)
}

impl Pattern {
    /// The pattern `(?i)` + `keyword`.
    pub fn ignore_case(keyword: &str) -> Result<Pattern, regex::Error> {
        if !keyword.is_empty() && keyword.bytes().all(is_inert) {
            return Ok(Pattern::Literal(
                keyword.to_ascii_lowercase().into_bytes().into_boxed_slice(),
            ));
        }
        cached_regex(&format!("(?i){keyword}")).map(Pattern::Regex)
    }

    /// Whether the pattern occurs in `text` (`re.search`).
    pub fn is_match(&self, text: &str) -> bool {
        self.find_at(text, 0).is_some()
    }

    /// How many non-overlapping matches `text` has (`len(re.findall(...))`).
    pub fn count(&self, text: &str) -> usize {
        match self {
            Pattern::Regex(r) => r.find_iter(text).count(),
            Pattern::Literal(_) => {
                let (mut n, mut pos) = (0, 0);
                // A literal is never empty, so each match moves past its start.
                while let Some((_, end)) = self.find_at(text, pos) {
                    n += 1;
                    pos = end;
                }
                n
            }
        }
    }

    /// The leftmost match starting at or after byte `start` (a character boundary), as
    /// `Regex::find_at` gives it: `(start, end)` byte offsets.
    pub fn find_at(&self, text: &str, start: usize) -> Option<(usize, usize)> {
        match self {
            Pattern::Regex(r) => r.find_at(text, start).map(|m| (m.start(), m.end())),
            Pattern::Literal(lit) => find_literal(lit, text, start),
        }
    }
}

/// KELVIN SIGN, which simple case folding puts with `k`, and LONG S, with `s`.
const KELVIN: &str = "\u{212A}";
const LONG_S: &str = "\u{17F}";

/// The length in bytes of a match of `lit` at byte `i` of `text`, if there is one.
#[inline]
fn match_len(lit: &[u8], text: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for &p in lit {
        let b = *text.get(j)?;
        if b.to_ascii_lowercase() == p {
            j += 1;
        } else if p == b'k' && text[j..].starts_with(KELVIN.as_bytes()) {
            j += KELVIN.len();
        } else if p == b's' && text[j..].starts_with(LONG_S.as_bytes()) {
            j += LONG_S.len();
        } else {
            return None;
        }
    }
    Some(j - i)
}

fn find_literal(lit: &[u8], text: &str, start: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let first = lit[0];
    // Bytes a match can start with: the first letter in either case, or the lead byte of
    // KELVIN SIGN / LONG S. None of them is a UTF-8 continuation byte, so every candidate
    // is a character boundary.
    let upper = first.to_ascii_uppercase();
    let special = match first {
        b'k' => KELVIN.as_bytes()[0],
        b's' => LONG_S.as_bytes()[0],
        _ => first,
    };
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if (b == first || b == upper || b == special)
            && let Some(len) = match_len(lit, bytes, i)
        {
            return Some((i, i + len));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_of(k: &str) -> Regex {
        Regex::new(&format!("(?i){k}")).unwrap()
    }

    fn same(k: &str, text: &str) {
        let lit = Pattern::ignore_case(k).unwrap();
        assert!(
            matches!(lit, Pattern::Literal(_)),
            "{k:?} should be literal"
        );
        let re = regex_of(k);
        assert_eq!(lit.is_match(text), re.is_match(text), "{k:?} in {text:?}");
        assert_eq!(
            lit.count(text),
            re.find_iter(text).count(),
            "{k:?} in {text:?}"
        );
        for start in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            assert_eq!(
                lit.find_at(text, start),
                re.find_at(text, start).map(|m| (m.start(), m.end())),
                "{k:?} in {text:?} from {start}"
            );
        }
    }

    #[test]
    fn literal_matches_like_the_regex_crate() {
        let texts = [
            "",
            "Kiss the KISS kiss \u{212A}i\u{17F}\u{17F} and ki\u{17F}s",
            "sss ssss SsS s",
            "the theme THE tHe: the-end the_end",
            "İstanbul ıi I i \u{130}\u{131}",
            "ǅ ǆ Ǆ ﬀ ff ß ẞ ss SS",
            "don't DON'T don’t",
            "100% 100 %",
            "aaaa",
        ];
        for k in [
            "kiss", "s", "ss", "the", "i", "don't", "100%", "aa", "the-end", "the end", "K", "a,b",
            "hi!",
        ] {
            for t in texts {
                same(k, t);
            }
        }
    }

    /// Which characters the `regex` crate's `(?i)` lets each ASCII letter or digit match:
    /// exactly its two cases, plus KELVIN SIGN for `k` and LONG S for `s`.
    #[test]
    fn ascii_case_orbits_are_as_assumed() {
        let any = Regex::new("(?i)^[a-z0-9]$").unwrap();
        let mut hits = Vec::new();
        for cp in 0..0x11_0000u32 {
            if let Some(c) = char::from_u32(cp)
                && any.is_match(c.encode_utf8(&mut [0; 4]))
            {
                hits.push(c);
            }
        }
        let mut expected: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        expected.extend(['\u{17F}', '\u{212A}']);
        assert_eq!(hits, expected);
        for b in (b'0'..=b'9').chain(b'a'..=b'z') {
            let re = Regex::new(&format!("(?i)^{}$", b as char)).unwrap();
            let lit = Pattern::ignore_case(&(b as char).to_string()).unwrap();
            for &c in &hits {
                let s = c.to_string();
                let ours = lit.find_at(&s, 0) == Some((0, s.len()));
                assert_eq!(ours, re.is_match(&s), "{} vs {c:?}", b as char);
            }
        }
    }

    #[test]
    fn other_patterns_use_the_regex_engine() {
        for k in ["a.b", "(x)", "é", "a+", "", "a\\b", "[ab]"] {
            if let Ok(p) = Pattern::ignore_case(k) {
                assert!(matches!(p, Pattern::Regex(_)), "{k:?}");
            }
        }
    }
}
