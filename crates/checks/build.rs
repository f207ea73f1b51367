//! Lays out at build time the data the checks would otherwise parse at start-up, so a process
//! is ready at once and reads only the pages it touches:
//!
//! - `langdetect-table.bin`: the vendored langdetect 1.0.9 language profiles
//!   (`data/langdetect/profiles`, JSON) as one flat little-endian table for `langid`;
//! - `punkt-english.bin`: NLTK's English Punkt parameters (`data/punkt_tab/english`) as four
//!   hash tables in the layout of `src/strtable.rs` (this script includes that file), for
//!   `punkt`;
//! - `langdetect-normalize.rs`: langdetect's `NGram.normalize` of every code point of the Basic
//!   Multilingual Plane, computed with the `langdetect` crate itself, as a two-level table of
//!   distinct 256-character blocks (the crate builds a 64K-entry table on first use instead);
//! - `pyregex-tables.rs`: the `\w` and `\d` classes of the Python `regex` module
//!   (`data/pyregex`, code point ranges) as sorted range arrays plus a bitmap of the Basic
//!   Multilingual Plane, for `pyregex`.
//!
//! The langdetect table:
//! loading the JSON (or building a hash map of heap rows, as the `langdetect` crate does) at
//! run time costs tens of milliseconds and megabytes on every process that detects a language.
//! Layout (all integers little-endian), see `src/langid/table.rs`:
//!
//! ```text
//! "LDT2" nlang:u32 nslots:u32 nentries:u32 hash_bits:u32
//! nlang  x (name_len:u8 name n_words:[u64; 3])          languages in file-name order
//! pad to 8
//! nslots x key:u64          open addressing, linear probing: a packed n-gram, or 0 (empty)
//! (nslots + 1) x start:u32  entries of the key in slot s: start[s]..start[s+1]
//! nentries x count:u32      the n-gram's count in that language
//! nentries x lang:u8        the language's index
//! ```
//!
//! A lookup reads one slot array, so it costs one cache miss, not two.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

#[path = "src/strtable.rs"]
mod strtable;

/// Must equal `langid::table::pack`: up to three code points, each + 1, in 21-bit lanes.
fn pack(chars: &[char]) -> u64 {
    let mut k = 0u64;
    for (i, &c) in chars.iter().enumerate() {
        k |= (c as u64 + 1) << (21 * i);
    }
    k
}

/// Must equal `langid::table::slot_of`: the home slot of a key.
fn slot_of(key: u64, bits: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

const HASH_BITS: u32 = 17;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/strtable.rs");
    punkt_tables(&manifest.join("data/punkt_tab/english"), &out_dir);
    pyregex_tables(&manifest.join("data/pyregex"), &out_dir);
    langdetect_table();
    langdetect_normalize(&out_dir);
}

/// `NORM_INDEX[cp >> 8]` names the block holding `normalize(cp)` for the 256 code points
/// `cp & !0xFF ..`; `NORM_BLOCKS[block * 256 + (cp & 0xFF)]` is the result (always in the
/// BMP). Surrogates, which no `char` holds, map to themselves.
fn langdetect_normalize(out_dir: &Path) {
    use std::fmt::Write;
    let mut index = Vec::with_capacity(256);
    let mut blocks: Vec<Vec<u16>> = Vec::new();
    for hi in 0..256u32 {
        let block: Vec<u16> = (0..256u32)
            .map(|lo| {
                let cp = hi << 8 | lo;
                char::from_u32(cp).map_or(cp, |c| langdetect::text::normalize(c) as u32)
            })
            .map(|n| u16::try_from(n).expect("a BMP character normalises into the BMP"))
            .collect();
        let id = blocks.iter().position(|b| *b == block).unwrap_or_else(|| {
            blocks.push(block);
            blocks.len() - 1
        });
        index.push(u8::try_from(id).expect("at most 256 distinct blocks"));
    }
    let mut src = String::new();
    writeln!(src, "static NORM_INDEX: [u8; 256] = {index:?};").unwrap();
    let flat: Vec<u16> = blocks.concat();
    writeln!(src, "static NORM_BLOCKS: [u16; {}] = {flat:?};", flat.len()).unwrap();
    fs::write(out_dir.join("langdetect-normalize.rs"), src).unwrap();
}

/// The lines of a `punkt_tab` file as nltk's `TabDecoder` reads them: one entry per line,
/// the newline removed.
fn read_lines(path: &Path) -> String {
    println!("cargo:rerun-if-changed={}", path.display());
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `punkt-english.bin`: "PKT1", then the abbreviation types, collocations (key "a\tb"),
/// sentence starters (sets: value 0) and orthographic contexts (value: the flags).
fn punkt_tables(dir: &Path, out_dir: &Path) {
    let abbrev = read_lines(&dir.join("abbrev_types.txt"));
    let colloc = read_lines(&dir.join("collocations.tab"));
    let starters = read_lines(&dir.join("sent_starters.txt"));
    let ortho = read_lines(&dir.join("ortho_context.tab"));
    let set = |text: &str| -> Vec<u8> {
        let entries: Vec<(&str, u32)> = text.lines().map(|l| (l, 0)).collect();
        strtable::build(&entries)
    };
    let collocations: Vec<(&str, u32)> = colloc
        .lines()
        .inspect(|l| assert_eq!(l.matches('\t').count(), 1, "collocation {l:?}"))
        .map(|l| (l, 0))
        .collect();
    let ortho_context: Vec<(&str, u32)> = ortho
        .lines()
        .map(|l| {
            let (typ, flags) = l.split_once('\t').expect("ortho_context line has a tab");
            (
                typ,
                flags.trim().parse::<u32>().expect("ortho_context flags"),
            )
        })
        .collect();
    let mut out = b"PKT1".to_vec();
    out.extend(set(&abbrev));
    out.extend(strtable::build(&collocations));
    out.extend(set(&starters));
    out.extend(strtable::build(&ortho_context));
    fs::write(out_dir.join("punkt-english.bin"), out).unwrap();
}

/// Reads a `data/pyregex` table: inclusive ranges "XXXX..YYYY", sorted and disjoint.
fn read_ranges(path: &Path) -> Vec<(u32, u32)> {
    let text = read_lines(path);
    let mut out: Vec<(u32, u32)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (a, b) = line.split_once("..").expect("range line");
        let (a, b) = (
            u32::from_str_radix(a, 16).unwrap(),
            u32::from_str_radix(b, 16).unwrap(),
        );
        assert!(a <= b && b < 0x11_0000, "{line}");
        assert!(
            out.last().is_none_or(|&(_, hi)| hi + 1 < a),
            "unsorted at {line}"
        );
        out.push((a, b));
    }
    out
}

fn pyregex_tables(dir: &Path, out_dir: &Path) {
    use std::fmt::Write;
    let word = read_ranges(&dir.join("word.txt"));
    let digit = read_ranges(&dir.join("digit.txt"));
    let mut bmp = vec![0u64; 1024];
    for &(a, b) in &word {
        for cp in a..=b.min(0xFFFF) {
            bmp[(cp >> 6) as usize] |= 1 << (cp & 63);
        }
    }
    let mut src = String::new();
    let list = |r: &[(u32, u32)]| {
        r.iter()
            .map(|(a, b)| format!("(0x{a:X}, 0x{b:X})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        src,
        "/// `\\w` of Python `regex`: inclusive code point ranges."
    )
    .unwrap();
    writeln!(
        src,
        "static WORD_RANGES: [(u32, u32); {}] = [{}];",
        word.len(),
        list(&word)
    )
    .unwrap();
    writeln!(
        src,
        "/// `\\w` of Python `regex` below U+10000: one bit per code point."
    )
    .unwrap();
    writeln!(
        src,
        "static WORD_BMP: [u64; 1024] = [{}];",
        bmp.iter()
            .map(|w| format!("0x{w:X}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    writeln!(
        src,
        "/// `\\d` of Python `regex`: inclusive code point ranges."
    )
    .unwrap();
    writeln!(
        src,
        "static DIGIT_RANGES: [(u32, u32); {}] = [{}];",
        digit.len(),
        list(&digit)
    )
    .unwrap();
    fs::write(out_dir.join("pyregex-tables.rs"), src).unwrap();
}

fn langdetect_table() {
    let dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("data/langdetect/profiles");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| !f.starts_with('.'))
        .collect();
    // langdetect adds profiles in `os.listdir` order; the port it must match (and the parity
    // checks against Python) use file-name order.
    files.sort();

    let mut langs = Vec::new();
    // (key, lang, count) for every 1- to 3-character n-gram of every profile.
    let mut triples: Vec<(u64, u8, u32)> = Vec::new();
    for (li, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
        let text = fs::read_to_string(dir.join(file)).unwrap();
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        let name = p["name"].as_str().unwrap().to_owned();
        let n_words: Vec<u64> = p["n_words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert_eq!(n_words.len(), 3, "{file}");
        for (word, count) in p["freq"].as_object().unwrap() {
            let chars: Vec<char> = word.chars().collect();
            if !(1..=3).contains(&chars.len()) {
                continue;
            }
            // langdetect divides by n_words[len - 1]; a zero there would fail its load.
            assert!(n_words[chars.len() - 1] > 0, "{file}: zero n_words");
            let count = u32::try_from(count.as_u64().unwrap()).unwrap();
            triples.push((pack(&chars), li as u8, count));
        }
        langs.push((name, n_words));
    }
    assert!(langs.len() < 256);
    triples.sort_unstable();
    // One entry per (key, language): a JSON object has each key once.
    triples.dedup_by_key(|t| (t.0, t.1));

    // The entries of each key, as a range of `triples`.
    let mut groups: Vec<(u64, usize, usize)> = Vec::new();
    for (i, t) in triples.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if g.0 == t.0 => g.2 = i + 1,
            _ => groups.push((t.0, i, i + 1)),
        }
    }
    let size = 1usize << HASH_BITS;
    // At most three quarters full, so probes stay short.
    assert!(groups.len() * 4 < size * 3);
    let mut slots: Vec<Option<usize>> = vec![None; size];
    for (g, &(k, _, _)) in groups.iter().enumerate() {
        assert_ne!(k, 0, "packed keys are never 0");
        let mut s = slot_of(k, HASH_BITS);
        while slots[s].is_some() {
            s = (s + 1) & (size - 1);
        }
        slots[s] = Some(g);
    }

    let mut out = b"LDT2".to_vec();
    for v in [langs.len(), size, triples.len(), HASH_BITS as usize] {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for (name, n_words) in &langs {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        for n in n_words {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    for s in &slots {
        let key = s.map_or(0, |g| groups[g].0);
        out.extend_from_slice(&key.to_le_bytes());
    }
    // Entries in slot order.
    let mut entries: Vec<(u32, u8)> = Vec::with_capacity(triples.len());
    for s in &slots {
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        if let Some(g) = *s {
            let (_, a, b) = groups[g];
            entries.extend(triples[a..b].iter().map(|t| (t.2, t.1)));
        }
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in &entries {
        out.extend_from_slice(&e.0.to_le_bytes());
    }
    for e in &entries {
        out.push(e.1);
    }
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap()).join("langdetect-table.bin");
    fs::write(dest, out).unwrap();
}
