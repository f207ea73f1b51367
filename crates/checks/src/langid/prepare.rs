//! langdetect 1.0.9's text preparation — `Detector.append` (URLs and e-mail addresses replaced
//! by a space, Vietnamese letters and combining marks composed, the text cut to its maximum
//! length, runs of spaces collapsed) and `NGram.normalize` — with the `langdetect` crate's
//! answers but none of its start-up work. The crate compiles two regexes for the first text
//! that holds `http` or `@` (the URL one, with its `{1,2076}` repetition, takes milliseconds)
//! and fills a 64K-entry normalisation table on the first character; here the regexes are
//! scans and the table is laid out by `build.rs` (with the crate's own `normalize`). Tests
//! compare both with the crate on many texts. Not a general text cleaner.

use std::borrow::Cow;
use std::sync::LazyLock;

use langdetect::text;

include!(concat!(env!("OUT_DIR"), "/langdetect-normalize.rs"));

/// `NGram.normalize` of one character.
#[inline]
pub(super) fn normalize(c: char) -> char {
    let cp = c as u32;
    if cp < 0x1_0000 {
        let block = NORM_INDEX[(cp >> 8) as usize] as usize;
        let n = NORM_BLOCKS[block * 256 + (cp & 0xFF) as usize];
        // Every entry is the normalisation of a `char`, so it is one (never a surrogate).
        return char::from_u32(u32::from(n)).unwrap_or(c);
    }
    // Outside the BMP the crate computes the answer directly, without its table.
    text::normalize(c)
}

/// `[-_.?&~;+=/#0-9A-Za-z]`, the characters of a URL's tail.
fn is_url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.?&~;+=/#".contains(&b)
}

/// `[-_.0-9A-Za-z]`, an e-mail address's local part and domain tail.
fn is_mail_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.".contains(&b)
}

/// `[-_0-9A-Za-z]`, the start of an e-mail domain.
fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_".contains(&b)
}

/// The number of leading bytes of `s` (at most `max`) that satisfy `f`.
fn run(s: &[u8], max: usize, f: fn(u8) -> bool) -> usize {
    s.iter().take(max).take_while(|&&b| f(b)).count()
}

/// `re.sub(r"https?://[-_.?&~;+=/#0-9A-Za-z]{1,2076}", " ", text)`.
fn remove_urls(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while let Some(k) = text[i..].find("http") {
        let at = i + k;
        // `s?` is greedy, but "https://" and "http://" cannot both start here.
        let head = if b[at..].starts_with(b"https://") {
            8
        } else if b[at..].starts_with(b"http://") {
            7
        } else {
            0
        };
        let tail = if head > 0 {
            run(&b[at + head..], 2076, is_url_char)
        } else {
            0
        };
        if tail > 0 {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..at]);
            o.push(' ');
            i = at + head + tail;
            copied = i;
        } else {
            i = at + 1;
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

/// `re.sub(r"[-_.0-9A-Za-z]{1,64}@[-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255}", " ", text)`.
///
/// The local part cannot hold `@`, so each match ends a run of local-part characters right
/// before an `@` and starts at most 64 characters back (leftmost). The domain's first part is
/// greedy but must leave one character for the second, which adds only `.`: it takes the
/// whole run of `[-_0-9A-Za-z]` (at most 255) when a second-part character follows, else one
/// fewer; the second part then takes what it can, up to 255.
fn remove_mails(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut from) = (0, 0);
    for at in memchr_all(b, b'@') {
        if at < from {
            continue;
        }
        let local = b[from..at]
            .iter()
            .rev()
            .take_while(|&&c| is_mail_char(c))
            .count()
            .min(64);
        if local == 0 {
            continue;
        }
        let d = at + 1;
        let run1 = run(&b[d..], 255, is_domain_char);
        let first = if b.get(d + run1).copied().is_some_and(is_mail_char) {
            run1
        } else {
            run1.saturating_sub(1)
        };
        if first == 0 {
            continue;
        }
        let second = run(&b[d + first..], 255, is_mail_char);
        let start = at - local;
        let end = d + first + second;
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..start]);
        o.push(' ');
        copied = end;
        from = end;
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

fn memchr_all(b: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter(move |&(_, &c)| c == needle)
        .map(|(i, _)| i)
}

/// `NGram.normalize_vi`'s tables: the letters that take a mark, the five marks, and for each
/// mark the composed letters in the same order.
struct Vietnamese {
    letters: Vec<char>,
    marks: Vec<char>,
    composed: Vec<Vec<char>>,
}

static VIETNAMESE: LazyLock<Vietnamese> = LazyLock::new(|| {
    let (letters, marks, composed) = text::vietnamese_tables();
    Vietnamese {
        letters: letters.chars().collect(),
        marks: marks.chars().collect(),
        composed: composed.iter().map(|r| r.chars().collect()).collect(),
    }
});

/// `NGram.normalize_vi`: a letter followed by one of the five combining marks becomes the
/// precomposed letter.
fn normalize_vi(text: &str) -> Cow<'_, str> {
    // The five marks are U+0300, U+0301, U+0303, U+0309 and U+0323: all start with 0xCC.
    if !text.as_bytes().contains(&0xCC) {
        return Cow::Borrowed(text);
    }
    let vi = &*VIETNAMESE;
    if !text.chars().any(|c| vi.marks.contains(&c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if let Some(a) = vi.letters.iter().position(|&x| x == c)
            && let Some(d) = it.peek().and_then(|n| vi.marks.iter().position(|x| x == n))
            && let Some(&to) = vi.composed.get(d).and_then(|row| row.get(a))
        {
            out.push(to);
            it.next();
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// The text one `Detector.append(text)` adds (`langdetect::text::prepare`).
pub(super) fn prepare(text: &str, max_text_length: i64) -> String {
    let t = remove_urls(text);
    let t = match remove_mails(&t) {
        Cow::Owned(s) => Cow::Owned(s),
        Cow::Borrowed(_) => t,
    };
    let t = match normalize_vi(&t) {
        Cow::Owned(s) => Cow::Owned(s),
        Cow::Borrowed(_) => t,
    };
    text::truncate(&t, max_text_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_equals_the_crate() {
        for c in (0..0x11_0000u32).filter_map(char::from_u32) {
            assert_eq!(normalize(c), text::normalize(c), "{c:?}");
        }
    }

    /// A small deterministic generator (xorshift) for mixed texts.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn prepare_equals_the_crate() {
        let pieces = [
            "http",
            "https",
            "://",
            ":/",
            "http://",
            "https://x",
            "a",
            "Z",
            "9",
            ".",
            "-",
            "_",
            "?",
            "&",
            "~",
            ";",
            "+",
            "=",
            "/",
            "#",
            "@",
            "@@",
            " ",
            "  ",
            "é",
            "中",
            "\u{301}",
            "a\u{301}",
            "e\u{303}",
            "o\u{309}",
            "u\u{323}",
            "A\u{300}",
            "ư\u{301}",
            "\u{cc}",
            "mail",
            "x.y",
            "..",
            "\n",
            "!",
            "%",
            "http:",
            "ftp://",
            "@a.b",
            "a@b",
            "-@-",
        ];
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut texts: Vec<String> = vec![
            "see https://x.org/a  now".into(),
            "mail a.b@c.de ok".into(),
            "x@y".into(),
            "x@yz".into(),
            "x@y.".into(),
            "@abc".into(),
            format!("{}@{}", "a".repeat(70), "b".repeat(300)),
            format!("{}@{}.{}", "a".repeat(64), "b".repeat(255), "c".repeat(300)),
            format!("{}@{} rest", "l".repeat(5), "d".repeat(256)),
            format!("http://{} tail", "u".repeat(3000)),
            "httphttps://a http://".into(),
        ];
        for _ in 0..20_000 {
            let n = rng.below(14);
            texts.push((0..n).map(|_| pieces[rng.below(pieces.len())]).collect());
        }
        for t in &texts {
            for max in [10_000, 5] {
                assert_eq!(prepare(t, max), text::prepare(t, max), "{t:?} {max}");
            }
        }
    }
}
