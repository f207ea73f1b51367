//! NLTK's word tokenizer as `nltk.word_tokenize(text)` applies it: Punkt sentences, then the
//! improved Treebank tokenizer (`NLTKWordTokenizer`) on each sentence. Not a general-purpose
//! tokenizer: it reproduces nltk 3.10.4's tokens, oddities included.
//!
//! IFEval's `change_case:capital_word_frequency` counts the tokens that are all capitals, so
//! how contractions (`DON'T` → `DO`, `N'T`), quotes, brackets and final periods are split
//! decides its verdicts. The substitutions below are NLTK's, in NLTK's order, each written as a
//! scan (no regex is compiled, and a sentence skips every rule whose characters it lacks).
//! nltk 3.10.4 compiles most of them with the Python `regex` module, whose
//! `\s` (White_Space, as the `regex` crate's) and `\w`/`\d` are [`crate::pyregex`]'s; only
//! the MacIntyre contractions (`cannot`, `gimme`, `'tis`, ...) are still stdlib `re`, with its
//! `\b` (combining marks are not word characters), its `\s` (U+001C..U+001F included) and its
//! case-insensitive matching (`i` also matches `İ` and `ı`, `s` LONG S, `k` KELVIN SIGN).

use crate::{punkt, pyregex, pystr};

/// `re.sub(pattern, repl, text)` for a pattern given as a matcher: `at(text, i)` is the end of
/// the match starting at byte `i` (a character boundary), if one does, and `rep` writes the
/// replacement of a matched slice. Matches do not overlap and are tried left to right, as in
/// Python; none of the patterns here can match empty. Callers first test a cheap necessary
/// condition (a character the pattern must contain), so most sentences skip most rules.
fn sub(
    text: String,
    at: impl Fn(&str, usize) -> Option<usize>,
    rep: impl Fn(&str, &mut String),
) -> String {
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    let n = text.len();
    while i < n {
        if let Some(end) = at(&text, i) {
            let o = out.get_or_insert_with(|| String::with_capacity(n + 16));
            o.push_str(&text[copied..i]);
            rep(&text[i..end], o);
            copied = end;
            i = end;
        } else {
            i += 1;
            while !text.is_char_boundary(i) {
                i += 1;
            }
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            o
        }
        None => text,
    }
}

/// The character at byte `i` of `t`.
#[inline]
fn char_at(t: &str, i: usize) -> Option<char> {
    t[i..].chars().next()
}

/// Whether `text` holds a character of `set`: one byte scan for the characters' first bytes
/// (exact when they are all ASCII), then, if needed, an exact check.
fn contains_any(text: &str, set: &[char]) -> bool {
    let mut lead = [false; 256];
    let mut ascii = true;
    for c in set {
        lead[c.encode_utf8(&mut [0; 4]).as_bytes()[0] as usize] = true;
        ascii &= c.is_ascii();
    }
    text.bytes().any(|b| lead[b as usize]) && (ascii || text.contains(set))
}

/// Pads every character of `set` with a space on each side (`re.sub("[...]", r" \g<0> ", t)`).
fn pad(text: String, set: &[char]) -> String {
    if !contains_any(&text, set) {
        return text;
    }
    sub(
        text,
        |t, i| {
            char_at(t, i)
                .filter(|c| set.contains(c))
                .map(|c| i + c.len_utf8())
        },
        pad_rep,
    )
}

fn pad_rep(m: &str, o: &mut String) {
    o.push(' ');
    o.push_str(m);
    o.push(' ');
}

/// `STARTING_QUOTES`, the first four rules.
fn starting_quotes(text: String) -> String {
    // `([«“‘„]|[`]+)` → ` \1 `: a run of backticks is one match.
    let text = if contains_any(&text, &['«', '“', '‘', '„', '`']) {
        sub(
            text,
            |t, i| match char_at(t, i)? {
                '`' => Some(i + t[i..].bytes().take_while(|&b| b == b'`').count()),
                c @ ('«' | '“' | '‘' | '„') => Some(i + c.len_utf8()),
                _ => None,
            },
            pad_rep,
        )
    } else {
        text
    };
    // `^"` → ``` `` ```.
    let text = match text.strip_prefix('"') {
        Some(rest) => format!("``{rest}"),
        None => text,
    };
    // `(``)` → ` `` `.
    let text = if text.contains("``") {
        sub(
            text,
            |t, i| t[i..].starts_with("``").then_some(i + 2),
            pad_rep,
        )
    } else {
        text
    };
    // `([ (\[{<])("|'{2})` → `\1 `` `.
    if !(text.contains('"') || text.contains("''")) {
        return text;
    }
    sub(
        text,
        |t, i| {
            let b = t.as_bytes();
            if !matches!(b[i], b' ' | b'(' | b'[' | b'{' | b'<') {
                return None;
            }
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'"'), _) => Some(i + 2),
                (Some(b'\''), Some(b'\'')) => Some(i + 3),
                _ => None,
            }
        },
        |m, o| {
            o.push_str(&m[..1]);
            o.push_str(" `` ");
        },
    )
}

/// `([:,])$` → ` \1 `: a colon or comma at the end, or before a final newline.
fn pad_final_colon_comma(text: String) -> String {
    let body = text.strip_suffix('\n').unwrap_or(&text);
    match body.chars().next_back() {
        Some(c @ (':' | ',')) => {
            let (head, tail) = text.split_at(body.len() - 1);
            format!("{head} {c} {}", &tail[1..])
        }
        _ => text,
    }
}

/// `\.{2,}` → ` \g<0> `.
fn pad_ellipses(text: String) -> String {
    if !text.contains("..") {
        return text;
    }
    sub(
        text,
        |t, i| {
            let n = t[i..].bytes().take_while(|&b| b == b'.').count();
            (n >= 2).then_some(i + n)
        },
        pad_rep,
    )
}

/// `([^'])' ` → `\1 ' `: a quote and space after any other character.
fn split_closing_quote(text: String) -> String {
    if !text.contains("' ") {
        return text;
    }
    sub(
        text,
        |t, i| {
            let c = char_at(t, i)?;
            let j = i + c.len_utf8();
            (c != '\'' && t[j..].starts_with("' ")).then_some(j + 2)
        },
        |m, o| {
            o.push_str(&m[..m.len() - 2]);
            o.push_str(" ' ");
        },
    )
}

/// `--` → ` -- `.
fn pad_double_dashes(text: String) -> String {
    if !text.contains("--") {
        return text;
    }
    sub(
        text,
        |t, i| t[i..].starts_with("--").then_some(i + 2),
        pad_rep,
    )
}

/// `ENDING_QUOTES`: closing quotes, whitespace runs, and clitics before a space.
fn ending_quotes(text: String) -> String {
    let text = pad(text, &['»', '”', '’']);
    let text = if text.contains("''") {
        sub(
            text,
            |t, i| t[i..].starts_with("''").then_some(i + 2),
            |_, o| o.push_str(" '' "),
        )
    } else {
        text
    };
    let text = if text.contains('"') {
        text.replace('"', " '' ")
    } else {
        text
    };
    // `\s+` → ` ` (the `regex` module's `\s`: U+001C..U+001F stay).
    let mut collapsed = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if pyregex::is_space(c) {
            if !in_space {
                collapsed.push(' ');
            }
            in_space = true;
        } else {
            collapsed.push(c);
            in_space = false;
        }
    }
    if !collapsed.contains('\'') {
        return collapsed;
    }
    // `([^' ])('[sS]|'[mM]|'[dD]|') ` then `([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) `, both
    // → `\1 \2 `.
    let split = |m: &str, o: &mut String| {
        let c = m.chars().next().map_or(0, char::len_utf8);
        o.push_str(&m[..c]);
        o.push(' ');
        o.push_str(&m[c..]);
    };
    let text = sub(
        collapsed,
        |t, i| {
            let c = char_at(t, i)?;
            if c == '\'' || c == ' ' {
                return None;
            }
            let r = &t[i + c.len_utf8()..];
            let g = if r.len() >= 3
                && r.as_bytes()[0] == b'\''
                && matches!(r.as_bytes()[1], b's' | b'S' | b'm' | b'M' | b'd' | b'D')
                && r.as_bytes()[2] == b' '
            {
                2
            } else if r.starts_with("' ") {
                1
            } else {
                return None;
            };
            Some(i + c.len_utf8() + g + 1)
        },
        split,
    );
    const CLITICS: [&str; 8] = [
        "'ll ", "'LL ", "'re ", "'RE ", "'ve ", "'VE ", "n't ", "N'T ",
    ];
    sub(
        text,
        |t, i| {
            let c = char_at(t, i)?;
            if c == '\'' || c == ' ' {
                return None;
            }
            let j = i + c.len_utf8();
            CLITICS
                .iter()
                .any(|k| t[j..].starts_with(k))
                .then_some(j + 4)
        },
        split,
    )
}

/// `re.sub(r"([:,])([^\d])", r" \1 \2", text)`, the first `PUNCTUATION` rule after the final
/// period's: a colon or comma before anything but a digit is padded; the character after it
/// is consumed, so it cannot start the next match.
fn pad_colon_comma(text: String) -> String {
    if !text.contains([':', ',']) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match it.peek() {
            Some(&d) if matches!(c, ':' | ',') && !pyregex::is_digit(d) => {
                out.push(' ');
                out.push(c);
                out.push(' ');
                out.push(d);
                it.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// One of Robert MacIntyre's contraction patterns, which nltk 3.10.4 still compiles with the
/// stdlib `re` (`(?i)\b(can)(not)\b`, `(?i) ('t)(is)\b`, ...), replaced by `" \1 \2 "`.
struct Contraction {
    /// The match begins with a space (consumed, and replaced by the replacement's leading
    /// space) instead of a word boundary.
    lead_space: bool,
    first: &'static str,
    second: &'static str,
    /// The match must be followed by whitespace (`(?=\s)`) instead of a word boundary.
    space_after: bool,
}

const fn contraction(first: &'static str, second: &'static str) -> Contraction {
    Contraction {
        lead_space: false,
        first,
        second,
        space_after: false,
    }
}

/// `CONTRACTIONS2` then `CONTRACTIONS3`, in nltk's order.
const CONTRACTIONS: &[Contraction] = &[
    contraction("can", "not"),
    contraction("d", "'ye"),
    contraction("gim", "me"),
    contraction("gon", "na"),
    contraction("got", "ta"),
    contraction("lem", "me"),
    contraction("more", "'n"),
    Contraction {
        space_after: true,
        ..contraction("wan", "na")
    },
    Contraction {
        lead_space: true,
        ..contraction("'t", "is")
    },
    Contraction {
        lead_space: true,
        ..contraction("'t", "was")
    },
];

/// Whether `c` matches the pattern character `p` (an ASCII lowercase letter or `'`) under
/// stdlib `re`'s `IGNORECASE`: the two ASCII cases, plus the characters whose simple
/// lowercase `re` treats as the same letter.
fn stdlib_ci(c: char, p: u8) -> bool {
    if c.is_ascii() {
        return c.to_ascii_lowercase() as u32 == u32::from(p);
    }
    match p {
        b'i' => matches!(c, '\u{130}' | '\u{131}'),
        b's' => c == '\u{17f}',
        b'k' => c == '\u{212a}',
        _ => false,
    }
}

/// The end of `pat` matched case-insensitively (stdlib `re`) at byte `at` of `text`.
fn match_ci(text: &str, at: usize, pat: &str) -> Option<usize> {
    let mut it = text[at..].char_indices();
    for &p in pat.as_bytes() {
        let (_, c) = it.next()?;
        if !stdlib_ci(c, p) {
            return None;
        }
    }
    Some(it.next().map_or(text.len(), |(j, _)| at + j))
}

/// The match of `r` at byte `at` (a character boundary): the end of its first group and of
/// the whole match.
fn match_contraction(text: &str, at: usize, r: &Contraction) -> Option<(usize, usize)> {
    let start = if r.lead_space {
        if !text[at..].starts_with(' ') {
            return None;
        }
        at + 1
    } else {
        // `\b` before a letter: the character before is not a word character.
        if text[..at].chars().next_back().is_some_and(pystr::is_word) {
            return None;
        }
        at
    };
    let mid = match_ci(text, start, r.first)?;
    let end = match_ci(text, mid, r.second)?;
    let next = text[end..].chars().next();
    let ok = if r.space_after {
        next.is_some_and(pystr::is_space)
    } else {
        // `\b` after a letter.
        !next.is_some_and(pystr::is_word)
    };
    ok.then_some((mid, end))
}

/// `re.sub(pattern, r" \1 \2 ", text)` for one contraction pattern.
fn split_contraction(text: String, r: &Contraction) -> String {
    let lead = r.first.as_bytes()[0];
    let want = if r.lead_space { b' ' } else { lead };
    // Every character that can start a match is ASCII here (`c`, `d`, `g`, `l`, `m`, `w`,
    // a space), so candidate starts are bytes equal to it in either case.
    let bytes = text.as_bytes();
    if !bytes.iter().any(|b| b.to_ascii_lowercase() == want) {
        return text;
    }
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i].to_ascii_lowercase() == want
            && let Some((mid, end)) = match_contraction(&text, i, r)
        {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 8));
            o.push_str(&text[copied..i]);
            o.push(' ');
            o.push_str(&text[if r.lead_space { i + 1 } else { i }..mid]);
            o.push(' ');
            o.push_str(&text[mid..end]);
            o.push(' ');
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            o
        }
        None => text,
    }
}

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
        if c == '\'' && !prev.is_some_and(pyregex::is_word) {
            let rest = &text[i + 1..];
            let next_is_word = rest.chars().next().is_some_and(pyregex::is_word);
            if next_is_word && !starts_with_suffix(rest) {
                out.push(' ');
            }
        }
        prev = Some(c);
    }
    out
}

/// `(?i)(?:re|ve|ll|m|t|s|d|n)\b` matched at the start of `rest`, in the Python `regex`
/// module: its simple case folding lets `s` match LONG S too (no other letter here has a
/// partner outside ASCII), and `\b` after a letter means no word character follows.
fn starts_with_suffix(rest: &str) -> bool {
    ["re", "ve", "ll", "m", "t", "s", "d", "n"]
        .iter()
        .any(|suf| {
            let mut it = rest.chars();
            suf.bytes().all(|p| {
                it.next().is_some_and(|c| {
                    c.to_ascii_lowercase() as u32 == u32::from(p) || (p == b's' && c == '\u{17f}')
                })
            }) && !it.next().is_some_and(pyregex::is_word)
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
    if !tail[run..].chars().all(pyregex::is_space) {
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
    // STARTING_QUOTES.
    let text = starting_quotes(sentence.to_owned());
    let text = split_opening_apostrophes(&text);
    // PUNCTUATION.
    let text = final_period(text, CLOSERS_1, true);
    let text = pad_colon_comma(text);
    let text = pad_final_colon_comma(text);
    let text = pad_ellipses(text);
    let text = pad(text, &[';', '@', '#', '$', '%', '&']);
    let text = pad(text, &['\u{2012}', '\u{2013}', '\u{2014}', '\u{2015}']);
    let text = final_period(text, CLOSERS_2, false);
    let text = pad(text, &['?', '!']);
    let text = split_closing_quote(text);
    let text = pad(text, &['*']);
    // PARENS_BRACKETS, DOUBLE_DASHES.
    let text = pad(text, &[']', '[', '(', ')', '{', '}', '<', '>']);
    let text = pad_double_dashes(text);
    let text = ending_quotes(format!(" {text} "));
    let text = CONTRACTIONS.iter().fold(text, split_contraction);
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

    /// Expected values are nltk 3.10.4's `word_tokenize`: most rules run on the Python
    /// `regex` module, the MacIntyre contractions on the stdlib `re`.
    #[test]
    fn engine_classes_follow_nltk_3_10() {
        // Contractions: stdlib `\b` (a combining mark is not a word character) and stdlib
        // IGNORECASE (`i` matches dotless and dotted I).
        assert_eq!(
            toks("cannot\u{301} cannot gimme\u{301}"),
            vec![
                "can", "not", "\u{301}", "can", "not", "gim", "me", "\u{301}"
            ]
        );
        assert_eq!(
            toks("\u{131} g\u{131}mme G\u{130}MME LEMME"),
            vec!["\u{131}", "g\u{131}m", "me", "G\u{130}M", "ME", "LEM", "ME"]
        );
        // stdlib `\s` includes U+001C for `wanna`; `regex`'s `\s+` does not turn it into a
        // space, so "'S" stays attached.
        assert_eq!(
            toks("wanna\u{1c}go wanna go"),
            vec!["wan", "na", "go", "wan", "na", "go"]
        );
        assert_eq!(toks("IT'S\u{1c} OK"), vec!["IT'S", "OK"]);
        // Opening quotes: `regex`'s `\w` and `\b` (marks are word characters) and its case
        // folding (`s` matches LONG S).
        assert_eq!(
            toks("'t\u{17f} '\u{17f} x 'S\u{301} 'm\u{308} 'd'"),
            vec![
                "'", "t\u{17f}", "'\u{17f}", "x", "'", "S\u{301}", "'", "m\u{308}", "'d", "'"
            ]
        );
        assert_eq!(
            toks("x\u{301}'\u{301}s 'd\u{301}"),
            vec!["x\u{301}'\u{301}s", "'", "d\u{301}"]
        );
        assert_eq!(
            toks("'\u{301}a 'e\u{301}"),
            vec!["'", "\u{301}a", "'", "e\u{301}"]
        );
        // `[^\d]` after a comma or colon: non-ASCII decimal digits keep `a,٣b` whole.
        assert_eq!(
            toks("It is 5\u{6f3}: a,\u{663}b,c"),
            vec!["It", "is", "5\u{6f3}", ":", "a,\u{663}b", ",", "c"]
        );
        assert_eq!(toks("Done.\u{1c}"), vec!["Done", "."]);
        assert_eq!(toks("Wait:\u{1c}"), vec!["Wait", ":"]);
    }

    #[test]
    fn empty_and_unicode() {
        assert!(toks("").is_empty());
        assert!(toks(" \n ").is_empty());
        assert_eq!(toks("中文，没有空格。"), vec!["中文，没有空格。"]);
        assert_eq!(toks("ÉCOLE ÇA"), vec!["ÉCOLE", "ÇA"]);
    }
}
