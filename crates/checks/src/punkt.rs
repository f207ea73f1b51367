//! NLTK's Punkt sentence splitter for English, ported step for step so that sentence counts
//! (and so IFEval's `number_sentences` and `capital_word_frequency` verdicts) equal the
//! reference's. It splits sentences only; word tokens for other uses are [`crate::treebank`].
//!
//! The trained parameters (abbreviations, collocations, frequent sentence starters and
//! orthographic contexts) are NLTK's `punkt_tab/english` files in `data/punkt_tab/english`
//! (see the NOTICE there), laid out as hash tables by `build.rs` and read in place from the
//! binary. The algorithm follows `PunktSentenceTokenizer.tokenize(text)` of nltk 3.10.4 with
//! boundary realignment: candidate ends are `.`, `?`, `!` followed by punctuation or by
//! whitespace and a token; each candidate's context (previous word, the mark, the next token)
//! is split into Punkt word tokens, annotated (first pass: abbreviations, ellipses; second
//! pass: collocations, orthographic heuristic, initials, numbers) and a break is made when a
//! token other than the last one ends a sentence. nltk 3.10.4 compiles these regexes with the
//! Python `regex` module, so their `\s`, `\S`, `\d` and `[^\W\d]` are [`crate::pyregex`]'s
//! (U+001C..U+001F are not whitespace, combining marks are letters); the plain string methods
//! (`strip`, `rstrip`, `lower`, `isupper`) stay Python's ([`crate::pystr`]). The regexes use
//! look-ahead, so they are hand-written scans here; every offset is a byte offset into the
//! input `&str`.

use std::borrow::Cow;
use std::sync::LazyLock;

use crate::strtable::{self, StrTable};
use crate::{pyregex, pystr};

/// The English parameters, laid out by `build.rs` (see `strtable`).
static ENGLISH_TABLES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/punkt-english.bin"));

const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC + ORTHO_MID_UC + ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC + ORTHO_MID_LC + ORTHO_UNK_LC;

/// Trained Punkt parameters (NLTK's `PunktParameters`): four read-only hash tables in one
/// byte buffer, which for the embedded English parameters is part of the binary.
#[derive(Debug)]
pub struct PunktParams {
    bytes: Cow<'static, [u8]>,
    abbrev_types: StrTable,
    /// Keys are `"type\tnext_type"`.
    collocations: StrTable,
    sent_starters: StrTable,
    ortho_context: StrTable,
}

impl PunktParams {
    /// Builds parameters from the four `punkt_tab` files' contents, read as NLTK's
    /// `PunktDecoder` reads them (one entry per line; a collocation line holds two types
    /// separated by a tab, an orthographic-context line a type, a tab and an integer; other
    /// lines could never match and are left out).
    pub fn from_tab(abbrev: &str, colloc: &str, starters: &str, ortho: &str) -> Self {
        let set = |text: &str| strtable::build(&text.lines().map(|l| (l, 0)).collect::<Vec<_>>());
        let collocations: Vec<(&str, u32)> = colloc
            .lines()
            .filter(|l| l.matches('\t').count() == 1)
            .map(|l| (l, 0))
            .collect();
        let ortho_context: Vec<(&str, u32)> = ortho
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(a, b)| b.trim().parse::<u32>().ok().map(|n| (a, n)))
            .collect();
        let mut bytes = b"PKT1".to_vec();
        bytes.extend(set(abbrev));
        bytes.extend(strtable::build(&collocations));
        bytes.extend(set(starters));
        bytes.extend(strtable::build(&ortho_context));
        Self::from_bytes(Cow::Owned(bytes)).expect("tables laid out here read back")
    }

    /// Reads "PKT1" and four tables in the `strtable` layout.
    fn from_bytes(bytes: Cow<'static, [u8]>) -> Option<Self> {
        let at = if bytes.starts_with(b"PKT1") {
            4
        } else {
            return None;
        };
        let (abbrev_types, at) = StrTable::parse(&bytes, at)?;
        let (collocations, at) = StrTable::parse(&bytes, at)?;
        let (sent_starters, at) = StrTable::parse(&bytes, at)?;
        let (ortho_context, at) = StrTable::parse(&bytes, at)?;
        (at == bytes.len()).then_some(PunktParams {
            bytes,
            abbrev_types,
            collocations,
            sent_starters,
            ortho_context,
        })
    }

    /// NLTK's English parameters, embedded in the binary.
    pub fn english() -> &'static PunktParams {
        static ENGLISH: LazyLock<PunktParams> = LazyLock::new(|| {
            PunktParams::from_bytes(Cow::Borrowed(ENGLISH_TABLES))
                .expect("embedded Punkt tables are well formed")
        });
        &ENGLISH
    }

    fn is_abbrev(&self, typ: &str) -> bool {
        self.abbrev_types.get(&self.bytes, typ).is_some()
    }

    fn is_sent_starter(&self, typ: &str) -> bool {
        self.sent_starters.get(&self.bytes, typ).is_some()
    }

    fn is_collocation(&self, typ: &str, next: &str) -> bool {
        self.collocations
            .get_parts(&self.bytes, &[typ.as_bytes(), b"\t", next.as_bytes()])
            .is_some()
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(&self.bytes, typ).unwrap_or(0)
    }
}

/// Splits `text` into sentences with the English parameters (`nltk.sent_tokenize(text)`).
pub fn sentences(text: &str) -> Vec<&str> {
    split_sentences(PunktParams::english(), text)
}

/// Number of sentences, as IFEval's `count_sentences` counts them.
pub fn count_sentences(text: &str) -> usize {
    sentences(text).len()
}

/// `PunktSentenceTokenizer.tokenize(text, realign_boundaries=True)` with the given parameters.
pub fn split_sentences<'a>(params: &PunktParams, text: &'a str) -> Vec<&'a str> {
    let slices = slices_from_text(params, text);
    realign_boundaries(text, &slices)
        .into_iter()
        .filter_map(|(s, e)| text.get(s..e))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Character classes of PunktLanguageVars.

fn is_sent_end(c: char) -> bool {
    matches!(c, '.' | '?' | '!')
}

/// `_re_non_word_chars`: punctuation that ends a word (English: `?` and `!` but not `.`).
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// `_re_word_start`: characters that may begin a multi-character word token.
fn is_word_start(c: char) -> bool {
    !matches!(
        c,
        '(' | '"'
            | '`'
            | '{'
            | '['
            | ':'
            | ';'
            | '&'
            | '#'
            | '*'
            | '@'
            | ')'
            | '}'
            | ']'
            | '-'
            | ','
    )
}

/// Characters that `re_boundary_realignment` moves to the previous sentence.
fn is_realign_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
    )
}

/// `_re_multi_char_punct` = `(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)` matched at the start of `s`;
/// returns the byte length of the match.
fn multi_char_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0] == b'-' && b[1] == b'-' {
        return Some(b.iter().take_while(|&&x| x == b'-').count());
    }
    if b.len() >= 2 && b[0] == b'.' && b[1] == b'.' {
        return Some(b.iter().take_while(|&&x| x == b'.').count());
    }
    if b.first() != Some(&b'.') {
        return None;
    }
    // (?:\.\s){2,}\. : greedy pairs, then a final period (backtracking one pair if needed).
    let mut ends = Vec::new(); // byte offset after each complete pair
    let mut pos = 0;
    loop {
        let mut it = s[pos..].chars();
        match (it.next(), it.next()) {
            (Some('.'), Some(w)) if pyregex::is_space(w) => {
                pos += 1 + w.len_utf8();
                ends.push(pos);
            }
            _ => break,
        }
    }
    for (k, &end) in ends.iter().enumerate().rev() {
        if k + 1 < 2 {
            break;
        }
        if s[end..].starts_with('.') {
            return Some(end + 1);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Word tokenization (PunktLanguageVars.word_tokenize) and tokens.

/// Whether a word token may end at byte `j` of `line` (the look-ahead of `_word_tokenize_fmt`).
fn word_ends_at(line: &str, j: usize) -> bool {
    let rest = &line[j..];
    let mut it = rest.chars();
    let Some(c) = it.next() else { return true };
    if pyregex::is_space(c) || is_non_word(c) || multi_char_at(rest).is_some() {
        return true;
    }
    if c == ',' {
        let after = &rest[1..];
        return match after.chars().next() {
            None => true,
            Some(d) => pyregex::is_space(d) || is_non_word(d) || multi_char_at(after).is_some(),
        };
    }
    false
}

/// Punkt's word tokens of one line (`_word_tokenizer_re().findall(line)`).
fn word_tokenize(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let Some(c) = line[i..].chars().next() else {
            break;
        };
        if let Some(n) = multi_char_at(&line[i..]) {
            out.push(&line[i..i + n]);
            i += n;
            continue;
        }
        if pyregex::is_space(c) {
            i += c.len_utf8();
            continue;
        }
        if is_word_start(c) {
            // \S+? up to the first position where the word may end.
            let mut j = i + c.len_utf8();
            while !word_ends_at(line, j) {
                match line[j..].chars().next() {
                    Some(d) => j += d.len_utf8(),
                    None => break,
                }
            }
            out.push(&line[i..j]);
            i = j;
        } else {
            out.push(&line[i..i + c.len_utf8()]);
            i += c.len_utf8();
        }
    }
    out
}

#[derive(Debug)]
struct Token<'a> {
    tok: &'a str,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

/// `_RE_NUMERIC` = `^-?[\.,]?\d[\d,\.-]*\.?$` matched against a token's lowercase form (which
/// holds no newline, so `$` is the end). Each optional prefix can only be taken when present:
/// skipping it would leave a `-`, `.` or `,` for `\d`.
fn is_numeric(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let s = s.strip_prefix(['.', ',']).unwrap_or(s);
    let mut cs = s.chars();
    cs.next().is_some_and(pyregex::is_digit)
        && cs.all(|c| pyregex::is_digit(c) || matches!(c, ',' | '.' | '-'))
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        let lower = pystr::lower(tok);
        let typ = if is_numeric(&lower) {
            "##number##".to_owned()
        } else {
            lower
        };
        Token {
            tok,
            typ,
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(|c| {
            let mut b = [0u8; 4];
            pystr::is_upper(c.encode_utf8(&mut b))
        })
    }

    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(|c| {
            let mut b = [0u8; 4];
            pystr::is_lower(c.encode_utf8(&mut b))
        })
    }

    /// `\.\.+$` matched at the start: two or more periods and nothing else.
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }

    /// `[^\W\d]\.$` matched at the start: one non-digit word character and a period.
    fn is_initial(&self) -> bool {
        let mut it = self.tok.chars();
        match (it.next(), it.next(), it.next()) {
            (Some(c), Some('.'), None) => pyregex::is_alpha(c),
            _ => false,
        }
    }
}

/// `_tokenize_words`: word tokens line by line.
fn tokenize_words(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if !pystr::strip(line).is_empty() {
            out.extend(word_tokenize(line).into_iter().map(Token::new));
        }
    }
    out
}

fn first_pass(params: &PunktParams, t: &mut Token<'_>) {
    let tok = t.tok;
    if tok == "." || tok == "?" || tok == "!" {
        t.sentbreak = true;
    } else if t.is_ellipsis() {
        t.ellipsis = true;
    } else if t.period_final && !tok.ends_with("..") {
        let stem = pystr::lower(&tok[..tok.len() - 1]);
        let last = stem.rsplit('-').next().unwrap_or("");
        if params.is_abbrev(&stem) || params.is_abbrev(last) {
            t.abbr = true;
        } else {
            t.sentbreak = true;
        }
    }
}

#[derive(PartialEq)]
enum Ortho {
    Starter,
    NotStarter,
    Unknown,
}

fn ortho_heuristic(params: &PunktParams, t: &Token<'_>) -> Ortho {
    if matches!(t.tok, ";" | ":" | "," | "." | "!" | "?") {
        return Ortho::NotStarter;
    }
    let ctx = params.ortho(t.type_no_sentperiod());
    if t.first_upper() && (ctx & ORTHO_LC) != 0 && (ctx & ORTHO_MID_UC) == 0 {
        return Ortho::Starter;
    }
    if t.first_lower() && ((ctx & ORTHO_UC) != 0 || (ctx & ORTHO_BEG_LC) == 0) {
        return Ortho::NotStarter;
    }
    Ortho::Unknown
}

/// `_second_pass_annotation(tok1, tok2)`.
fn second_pass(params: &PunktParams, t1: &mut Token<'_>, t2: &Token<'_>) {
    if !t1.period_final {
        return;
    }
    let typ = t1.type_no_period().to_owned();
    let next_typ = t2.type_no_sentperiod();
    let is_initial = t1.is_initial();
    if params.is_collocation(&typ, next_typ) {
        t1.sentbreak = false;
        t1.abbr = true;
        return;
    }
    if (t1.abbr || t1.ellipsis) && !is_initial {
        if ortho_heuristic(params, t2) == Ortho::Starter {
            t1.sentbreak = true;
            return;
        }
        if t2.first_upper() && params.is_sent_starter(next_typ) {
            t1.sentbreak = true;
            return;
        }
    }
    if is_initial || typ == "##number##" {
        let h = ortho_heuristic(params, t2);
        if h == Ortho::NotStarter {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if h == Ortho::Unknown
            && is_initial
            && t2.first_upper()
            && (params.ortho(next_typ) & ORTHO_LC) == 0
        {
            t1.sentbreak = false;
            t1.abbr = true;
        }
    }
}

/// `text_contains_sentbreak`: some token other than the last one ends a sentence.
fn text_contains_sentbreak(params: &PunktParams, text: &str) -> bool {
    let mut toks = tokenize_words(text);
    for t in toks.iter_mut() {
        first_pass(params, t);
    }
    let n = toks.len();
    for i in 0..n {
        if i + 1 < n {
            let (a, b) = toks.split_at_mut(i + 1);
            second_pass(params, &mut a[i], &b[0]);
        }
        if toks[i].sentbreak && i + 1 < n {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Candidate sentence ends and slices.

struct EndMatch {
    /// Byte offset of the `.`, `?` or `!`.
    start: usize,
    /// Offset just after the mark (`match.end()`).
    end: usize,
    /// Offset after the `after_tok` group.
    after_end: usize,
    /// Offset where `next_tok` starts, when the mark is followed by whitespace and a token.
    next_start: Option<usize>,
}

/// `period_context_re().finditer(text)`.
fn period_contexts(text: &str) -> Vec<EndMatch> {
    let mut out = Vec::new();
    for (i, c) in text.char_indices() {
        if !is_sent_end(c) {
            continue;
        }
        let end = i + 1;
        let rest = &text[end..];
        let Some(d) = rest.chars().next() else {
            continue;
        };
        if is_non_word(d) {
            out.push(EndMatch {
                start: i,
                end,
                after_end: end + d.len_utf8(),
                next_start: None,
            });
        } else if pyregex::is_space(d) {
            let ws = rest.len() - rest.trim_start_matches(pyregex::is_space).len();
            let tok_start = end + ws;
            let tail = &text[tok_start..];
            if tail.is_empty() {
                continue;
            }
            let tok_len = tail.find(pyregex::is_space).unwrap_or(tail.len());
            out.push(EndMatch {
                start: i,
                end,
                after_end: tok_start + tok_len,
                next_start: Some(tok_start),
            });
        }
    }
    out
}

/// `_get_last_whitespace_index`: index of the last ASCII whitespace (`string.whitespace`), or 0.
fn last_whitespace_index(s: &str) -> usize {
    s.bytes()
        .rposition(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c'))
        .unwrap_or(0)
}

/// `_match_potential_end_contexts`: each candidate with its context (previous word, the mark,
/// what follows), as (match, context ranges).
fn potential_end_contexts<'m>(
    text: &str,
    matches: &'m [EndMatch],
) -> Vec<(&'m EndMatch, (usize, usize))> {
    let mut out = Vec::new();
    let mut prev_slice = (0usize, 0usize);
    let mut prev_match: Option<&EndMatch> = None;
    for m in matches {
        let before = text.get(prev_slice.1..m.start).unwrap_or("");
        let mut idx = last_whitespace_index(before);
        if idx != 0 {
            idx += prev_slice.1 + 1;
        } else {
            idx = prev_slice.0;
        }
        let prev_word = (idx, m.start);
        if let Some(pm) = prev_match
            && prev_slice.1 <= prev_word.0
        {
            out.push((pm, prev_slice));
        }
        prev_match = Some(m);
        prev_slice = prev_word;
    }
    if let Some(pm) = prev_match {
        out.push((pm, prev_slice));
    }
    out
}

fn slices_from_text(params: &PunktParams, text: &str) -> Vec<(usize, usize)> {
    let matches = period_contexts(text);
    let mut slices = Vec::new();
    let mut last_break = 0;
    let mut context = String::new();
    for (m, (s, e)) in potential_end_contexts(text, &matches) {
        context.clear();
        if s < e {
            context.push_str(text.get(s..e).unwrap_or(""));
        }
        context.push_str(&text[m.start..m.end]);
        context.push_str(&text[m.end..m.after_end]);
        if text_contains_sentbreak(params, &context) {
            slices.push((last_break, m.end));
            last_break = m.next_start.unwrap_or(m.end);
        }
    }
    let rstripped = text.trim_end_matches(pystr::is_space).len();
    slices.push((last_break, rstripped));
    slices
}

/// `re_boundary_realignment.match(s)`: closing quotes/brackets (lazily, at least one) then
/// whitespace, `--` or the end of a line. Returns (length without trailing space, match end).
fn boundary_realignment(s: &str) -> Option<(usize, usize)> {
    let mut k = 0;
    let mut first = true;
    loop {
        let c = s[k..].chars().next();
        if !first {
            // After at least one closer: try the tail alternatives.
            match c {
                None => return Some((k, k)),
                Some(w) if pyregex::is_space(w) => {
                    let ws = s[k..].len() - s[k..].trim_start_matches(pyregex::is_space).len();
                    return Some((k, k + ws));
                }
                Some(_) if s[k..].starts_with("--") => return Some((k, k)),
                _ => {}
            }
        }
        match c {
            Some(q) if is_realign_closer(q) => {
                k += q.len_utf8();
                first = false;
            }
            _ => return None,
        }
    }
}

/// `_realign_boundaries`: moves closing punctuation that starts a sentence to the previous one.
fn realign_boundaries(text: &str, slices: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut realign = 0;
    for (i, &(s1, e1)) in slices.iter().enumerate() {
        let start = s1 + realign;
        let Some(&(s2, e2)) = slices.get(i + 1) else {
            if start < e1 {
                out.push((start, e1));
            }
            continue;
        };
        let second = if s2 < e2 {
            text.get(s2..e2).unwrap_or("")
        } else {
            ""
        };
        if let Some((len, end)) = boundary_realignment(second) {
            out.push((start, s2 + len));
            realign = end;
        } else {
            realign = 0;
            if start < e1 {
                out.push((start, e1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_load() {
        let p = PunktParams::english();
        assert_eq!(p.abbrev_types.len(), 156);
        assert!(p.is_abbrev("dr") && p.is_abbrev("u.s") && !p.is_abbrev("e.g"));
        assert_eq!(p.collocations.len(), 37);
        assert_eq!(p.sent_starters.len(), 39);
        assert_eq!(p.ortho_context.len(), 20366);
    }

    /// The tables `build.rs` laid out say what the parameter files say, read at run time.
    #[test]
    fn embedded_tables_equal_the_files() {
        let dir = |f: &str| {
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("data/punkt_tab/english")
                    .join(f),
            )
            .unwrap()
        };
        let (abbrev, colloc, starters, ortho) = (
            dir("abbrev_types.txt"),
            dir("collocations.tab"),
            dir("sent_starters.txt"),
            dir("ortho_context.tab"),
        );
        let parsed = PunktParams::from_tab(&abbrev, &colloc, &starters, &ortho);
        let e = PunktParams::english();
        assert_eq!(parsed.bytes.as_ref(), e.bytes.as_ref());
        for l in abbrev.lines() {
            assert!(e.is_abbrev(l), "{l:?}");
        }
        for l in starters.lines() {
            assert!(
                e.is_sent_starter(l) && !e.is_abbrev(&format!("{l}x")),
                "{l:?}"
            );
        }
        for l in colloc.lines() {
            let (a, b) = l.split_once('\t').unwrap();
            assert!(e.is_collocation(a, b) && !e.is_collocation(b, a), "{l:?}");
        }
        for l in ortho.lines() {
            let (a, n) = l.split_once('\t').unwrap();
            assert_eq!(e.ortho(a), n.parse::<u32>().unwrap(), "{l:?}");
        }
        assert_eq!(e.ortho("no-such-type-here"), 0);
    }

    #[test]
    fn word_tokens_match_nltk() {
        // PunktLanguageVars().word_tokenize(...)
        assert_eq!(
            word_tokenize("Hello, world... (yes) a-b --c."),
            vec![
                "Hello", ",", "world", "...", "(", "yes", ")", "a-b", "--", "c."
            ]
        );
        assert_eq!(
            word_tokenize("e.g. Dr. Smith's 3.5"),
            vec!["e.g.", "Dr.", "Smith", "'s", "3.5"]
        );
        assert_eq!(word_tokenize(". . . x"), vec![". . .", "x"]);
    }

    #[test]
    fn abbreviations_follow_the_trained_parameters() {
        // Expected values are nltk 3.10 `sent_tokenize` outputs.
        assert_eq!(
            sentences("Dr. Smith went home. He slept."),
            vec!["Dr. Smith went home.", "He slept."]
        );
        // "e.g" is not a trained abbreviation, so Punkt breaks after it.
        assert_eq!(
            sentences("Bring fruit, e.g. apples and pears. Then leave."),
            vec!["Bring fruit, e.g.", "apples and pears.", "Then leave."]
        );
        assert_eq!(sentences("e.g. this. i.e. that. etc. and so on.").len(), 6);
        assert_eq!(count_sentences("It costs $3.50 today. Really?"), 2);
        assert_eq!(
            sentences("Mr. J. R. R. Tolkien wrote it. The U.S. economy grew 3.5% in 2020. Wow!"),
            vec![
                "Mr. J. R. R. Tolkien wrote it.",
                "The U.S. economy grew 3.5% in 2020.",
                "Wow!"
            ]
        );
        assert_eq!(
            sentences("He left at 5 p.m. Then we ate."),
            vec!["He left at 5 p.m. Then we ate."]
        );
        assert_eq!(
            sentences("See fig. 3. It shows X."),
            vec!["See fig.", "3.", "It shows X."]
        );
        assert_eq!(
            sentences("I.B.M. is big. So is A.T.&T. today."),
            vec!["I.B.M.", "is big.", "So is A.T.&T.", "today."]
        );
    }

    #[test]
    fn punctuation_runs_and_lines() {
        assert_eq!(
            sentences("Hello world!!! What?! Yes... no. OK"),
            vec!["Hello world!!!", "What?!", "Yes... no.", "OK"]
        );
        assert_eq!(
            sentences("WHAT'S UP? I'M FINE, THANKS. YOU'RE WELCOME!!"),
            vec!["WHAT'S UP?", "I'M FINE, THANKS.", "YOU'RE WELCOME!", "!"]
        );
        assert_eq!(
            sentences("* item one.\n* item two.\n\nPara two. Ends here"),
            vec!["* item one.", "* item two.", "Para two.", "Ends here"]
        );
        assert_eq!(
            sentences("hello..world. foo?bar! baz"),
            vec!["hello..world.", "foo?bar!", "baz"]
        );
        assert_eq!(
            sentences("Look -- there. Here --- too."),
            vec!["Look -- there.", "Here --- too."]
        );
        assert_eq!(
            sentences("Line one.\r\nLine two.\u{2028}Line three."),
            vec!["Line one.", "Line two.", "Line three."]
        );
    }

    #[test]
    fn empty_and_blank_have_no_sentences() {
        assert_eq!(count_sentences(""), 0);
        assert_eq!(count_sentences("   \n\t "), 0);
        assert_eq!(count_sentences("no end mark"), 1);
    }

    #[test]
    fn realigns_closing_quotes() {
        assert_eq!(
            sentences("He said \"Stop.\" Then he left."),
            vec!["He said \"Stop.\"", "Then he left."]
        );
        assert_eq!(sentences("(Yes.) No."), vec!["(Yes.)", "No."]);
        assert_eq!(
            sentences("\"Quote.\" 'Single.' (Paren.) [Bracket.] Done."),
            vec!["\"Quote.\"", "'Single.'", "(Paren.)", "[Bracket.]", "Done."]
        );
    }

    /// nltk 3.10.4 compiles Punkt's patterns with the Python `regex` module: combining marks
    /// and joiners are letters (`[^\W\d]`), U+001C..U+001F are not whitespace (`\s`), though
    /// `str.strip()` still removes them. Expected values are nltk 3.10.4's `sent_tokenize`.
    #[test]
    fn regex_module_classes() {
        // A lone combining mark before the period is an initial in `regex` (not in `re`).
        assert_eq!(
            sentences("\u{301}. Next one. \u{301}x. Then."),
            vec!["\u{301}.", "Next one.", "\u{301}x.", "Then."]
        );
        assert_eq!(
            sentences("J\u{301}. Smith. A. Smith."),
            vec!["J\u{301}.", "Smith.", "A. Smith."]
        );
        assert_eq!(
            sentences("e\u{301}. Me\u{301}. Ok."),
            vec!["e\u{301}.", "Me\u{301}.", "Ok."]
        );
        assert_eq!(
            sentences("Ok\u{200d}. Next\u{200c}. Done."),
            vec!["Ok\u{200d}.", "Next\u{200c}.", "Done."]
        );
        // U+001C..U+001F do not separate a period from the next token ...
        assert_eq!(
            sentences("IT'S\u{1c} OK. FINE\u{1d}. YES."),
            vec!["IT'S\u{1c} OK. FINE\u{1d}.", "YES."]
        );
        assert_eq!(sentences("A.\u{1c}B. C."), vec!["A.\u{1c}B.", "C."]);
        assert_eq!(
            sentences("Wait . \u{1c}. Go."),
            vec!["Wait .", "\u{1c}.", "Go."]
        );
        // ... nor end a closing quote's realignment ...
        assert_eq!(
            sentences("He said \"x.\"\u{1c} Then. \"Y.\" Z."),
            vec!["He said \"x.", "\"\u{1c} Then.", "\"Y.\"", "Z."]
        );
        // ... but the last sentence is `rstrip()`ped of them.
        assert_eq!(
            sentences("tab\u{1f}. Sep\u{1e}. End"),
            vec!["tab\u{1f}.", "Sep\u{1e}.", "End"]
        );
        // Non-ASCII decimal digits make number types; other Unicode spaces separate.
        assert_eq!(
            sentences("3.\u{661} 4.\u{663}. Ok."),
            vec!["3.\u{661} 4.\u{663}.", "Ok."]
        );
        assert_eq!(
            sentences("hello\u{a0}world.\u{2003}Next\u{3000}one."),
            vec!["hello\u{a0}world.", "Next\u{3000}one."]
        );
        assert!(is_numeric("-.5") && is_numeric("\u{661}\u{662},3-4.") && is_numeric("5"));
        assert!(!is_numeric("--5") && !is_numeric(".,5") && !is_numeric("5a") && !is_numeric(""));
    }

    #[test]
    fn cjk_and_unicode_do_not_panic() {
        assert_eq!(count_sentences("这是中文。没有空格。"), 1);
        assert_eq!(count_sentences("Café. Ça va? Oui!"), 3);
        assert_eq!(
            sentences("e\u{301}. \u{301}. ..\u{2019}"),
            vec!["e\u{301}.", "\u{301}.", "..\u{2019}"]
        );
    }
}
