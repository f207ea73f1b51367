//! The character classes of the third-party Python `regex` module (mrab-regex, `VERSION0`,
//! `str` patterns), which nltk 3.10.4 — the version IFEval parity is defined against — compiles
//! every one of its own patterns with (`nltk.redos`), where nltk 3.9 used the stdlib `re`.
//!
//! The two engines disagree on exactly the classes nltk's tokenizers lean on. In `regex`,
//! `\w` is Alphabetic | Mark | Decimal_Number | Connector_Punctuation | Join_Control, so
//! combining marks (U+0301), variation selectors (U+FE0F), ZWJ/ZWNJ and Indic or Thai vowel
//! signs are word characters and `"re\u{301}sume\u{301}"` is one `\w+` run, where stdlib `re`
//! (letters, numbers and `_`) sees two; `\s` is the White_Space property, without the
//! separators U+001C..U+001F that stdlib `re` and `str.isspace()` count; `\d` is
//! Decimal_Number at the module's own (newer) Unicode version; and `\b` follows `\w`.
//! Every nltk path here (IFEval's `count_words`, [`crate::punkt`], most of
//! [`crate::treebank`]) uses these; the IFEval checks' own patterns are stdlib `re` and use
//! [`crate::pystr`]. The `\w` and `\d` tables are the module's own answers for every code
//! point (`data/pyregex`, compiled by `build.rs`; `scripts/check-nltk-parity.py` re-derives
//! them and compares nltk with this crate). Case-insensitive matching in `regex` is simple
//! case folding, which is what the Rust `regex` crate's `(?i)` does for the ASCII letters
//! nltk's patterns hold (`s` also matches LONG S, `k` KELVIN SIGN).

include!(concat!(env!("OUT_DIR"), "/pyregex-tables.rs"));

/// Whether `cp` lies in one of the sorted, disjoint inclusive `ranges`.
fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < cp);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// `regex`'s `\w` for one character.
#[inline]
pub fn is_word(c: char) -> bool {
    let cp = c as u32;
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    if cp < 0x1_0000 {
        return WORD_BMP[(cp >> 6) as usize] >> (cp & 63) & 1 == 1;
    }
    in_ranges(&WORD_RANGES, cp)
}

/// `regex`'s `\d` for one character (Decimal_Number).
#[inline]
pub fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_ranges(&DIGIT_RANGES, c as u32)
}

/// `regex`'s `\s` for one character: the White_Space property, which is what Rust's
/// `char::is_whitespace` tests (a test checks the two agree on every code point).
#[inline]
pub fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `regex`'s `[^\W\d]`: a word character that is not a decimal digit.
#[inline]
pub fn is_alpha(c: char) -> bool {
    is_word(c) && !is_digit(c)
}

/// `regex`'s `\b` at byte offset `at` of `s`: the characters on either side differ in being
/// word characters. Out-of-range sides count as non-word.
pub fn is_boundary(s: &str, at: usize) -> bool {
    crate::pystr::boundary_with(s, at, is_word)
}

/// Number of `\w+` runs: IFEval's `count_words`, `len(RegexpTokenizer(r"\w+").tokenize(s))`.
pub fn count_words(s: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    if s.is_ascii() {
        for &b in s.as_bytes() {
            let w = b.is_ascii_alphanumeric() || b == b'_';
            n += usize::from(w && !in_word);
            in_word = w;
        }
        return n;
    }
    for c in s.chars() {
        let w = is_word(c);
        n += usize::from(w && !in_word);
        in_word = w;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values in these tests are nltk 3.10.4's (with regex 2026.11.19):
    // `len(RegexpTokenizer(r"\w+").tokenize(text))`, or `regex.fullmatch(...)` for a class.

    #[test]
    fn combining_marks_join_words() {
        assert_eq!(count_words("re\u{301}sume\u{301}"), 1);
        assert_eq!(count_words("re\u{301}sume\u{301} and cafe\u{301}"), 3);
        assert_eq!(count_words("na\u{308}ive co\u{f6}perate"), 2);
        // Other numbers (², ⅕) are not `\w` in `regex`; Mark and Connector_Punctuation are.
        assert_eq!(count_words("man\u{303}ana x\u{b2} \u{2155}"), 2);
        assert_eq!(count_words("cafe\u{301} x\u{b2} \u{2155} _a"), 3);
        assert_eq!(count_words("snake_case \u{203f}join \u{2040}x"), 3);
        // Circled letters are Alphabetic (So): words here, not in stdlib `re`.
        assert_eq!(count_words("\u{24b6}\u{24b7} circled"), 2);
        assert_eq!(count_words("\u{20dd} \u{488} x\u{20dd}"), 3);
    }

    #[test]
    fn emoji_sequences_and_joiners() {
        // U+FE0F (a variation selector, Mn) and ZWJ (Join_Control) are word characters,
        // the emoji themselves are not.
        assert_eq!(count_words("\u{2764}\u{fe0f} love \u{263a}\u{fe0f}"), 3);
        assert_eq!(
            count_words("\u{1F468}\u{200d}\u{1F469}\u{200d}\u{1F467} family"),
            3
        );
        assert_eq!(count_words("a\u{200c}b c\u{200d}d"), 2);
        assert_eq!(count_words("\u{E0100} var \u{E0101}x"), 3);
    }

    #[test]
    fn indic_and_thai_vowel_signs() {
        // नमस्ते दुनिया: virama and vowel signs keep each word whole.
        assert_eq!(
            count_words(
                "\u{928}\u{92e}\u{938}\u{94d}\u{924}\u{947} \u{926}\u{941}\u{928}\u{93f}\u{92f}\u{93e}"
            ),
            2
        );
        // สวัสดีครับ
        assert_eq!(
            count_words("\u{e2a}\u{e27}\u{e31}\u{e2a}\u{e14}\u{e35}\u{e04}\u{e23}\u{e31}\u{e1a}"),
            1
        );
    }

    #[test]
    fn plain_text_and_edges() {
        assert_eq!(count_words("don't stop-me now"), 5);
        assert_eq!(count_words(""), 0);
        assert_eq!(count_words("  \n "), 0);
        assert_eq!(count_words("中文没有空格"), 1);
        assert_eq!(count_words("\u{301}"), 1);
    }

    #[test]
    fn classes() {
        for c in [
            '\u{301}', '\u{fe0f}', '\u{200d}', '\u{200c}', '\u{93f}', '\u{e31}', 'é', '_',
        ] {
            assert!(is_word(c), "{c:?}");
        }
        for c in [
            '\u{b2}',
            '\u{2155}',
            '-',
            '\'',
            ' ',
            '\u{1F600}',
            '\u{a830}',
        ] {
            assert!(!is_word(c), "{c:?}");
        }
        assert!(is_digit('\u{663}') && is_digit('\u{11de0}') && !is_digit('\u{b2}'));
        assert!(is_alpha('\u{301}') && !is_alpha('\u{663}') && !is_alpha('.'));
        // `regex`'s `\s` leaves out the separators that `str.isspace()` counts.
        assert!(!is_space('\u{1c}') && !is_space('\u{1f}') && !is_space('\u{200b}'));
        assert!(is_space('\u{85}') && is_space('\u{a0}') && is_space('\u{3000}'));
        assert!(!is_boundary("cafe\u{301}", 4) && is_boundary("cafe\u{301}", 6));
        assert!(is_boundary("ab", 0) && !is_boundary("", 0));
    }

    /// The BMP bitmap and the range list say the same, and `\s` is White_Space.
    #[test]
    fn tables_are_consistent() {
        for cp in 0..0x1_0000u32 {
            if let Some(c) = char::from_u32(cp) {
                assert_eq!(is_word(c), in_ranges(&WORD_RANGES, cp), "{c:?}");
            }
        }
        let ws = regex::Regex::new(r"^\s$").expect("test regex compiles");
        for c in (0..0x11_0000u32).filter_map(char::from_u32) {
            assert_eq!(
                is_space(c),
                ws.is_match(c.encode_utf8(&mut [0; 4])),
                "{c:?}"
            );
        }
        assert_eq!(WORD_RANGES.len(), 817);
        assert_eq!(DIGIT_RANGES.len(), 72);
    }
}
