//! Compiles the vendored langdetect 1.0.9 language profiles (`data/langdetect/profiles`, JSON)
//! into one flat little-endian table that `langid` embeds with `include_bytes!`.
//!
//! Loading the JSON (or building a hash map of heap rows, as the `langdetect` crate does) at
//! run time costs tens of milliseconds and megabytes on every process that detects a language;
//! a table laid out at build time is ready at once and only the pages a detection touches are
//! ever read in. Layout (all integers little-endian), see `src/langid/table.rs`:
//!
//! ```text
//! "LDT1" nlang:u32 nkeys:u32 nentries:u32 hash_bits:u32
//! nlang  x (name_len:u8 name n_words:[u64; 3])          languages in file-name order
//! pad to 8
//! nkeys  x key:u64                                       packed n-grams, sorted
//! (nkeys + 1) x start:u32                                entries of key i: start[i]..start[i+1]
//! nentries x count:u32                                   the n-gram's count in that language
//! nentries x lang:u8                                     the language's index
//! pad to 4
//! (1 << hash_bits) x slot:u32       open addressing: key index + 1 (low 17 bits), fingerprint
//! ```

use std::env;
use std::fs;
use std::path::PathBuf;

/// Must equal `langid::table::pack`: up to three code points, each + 1, in 21-bit lanes.
fn pack(chars: &[char]) -> u64 {
    let mut k = 0u64;
    for (i, &c) in chars.iter().enumerate() {
        k |= (c as u64 + 1) << (21 * i);
    }
    k
}

/// Must equal `langid::table::slot_of`: the home slot and a 15-bit fingerprint of a key.
fn slot_of(key: u64, bits: u32) -> (usize, u32) {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> (64 - bits)) as usize, ((h >> 8) & 0x7FFF) as u32)
}

const HASH_BITS: u32 = 17;

fn main() {
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

    let mut keys: Vec<u64> = Vec::new();
    let mut starts: Vec<u32> = Vec::new();
    for (i, t) in triples.iter().enumerate() {
        if keys.last() != Some(&t.0) {
            keys.push(t.0);
            starts.push(i as u32);
        }
    }
    starts.push(triples.len() as u32);

    let size = 1usize << HASH_BITS;
    // At most three quarters full; key index + 1 must fit the slot's low 17 bits.
    assert!(keys.len() * 4 < size * 3 && keys.len() < (1 << 17) - 1);
    let mut slots = vec![0u32; size];
    for (i, &k) in keys.iter().enumerate() {
        let (mut s, fp) = slot_of(k, HASH_BITS);
        while slots[s] != 0 {
            s = (s + 1) & (size - 1);
        }
        slots[s] = (i as u32 + 1) | (fp << 17);
    }

    let mut out = b"LDT1".to_vec();
    for v in [langs.len(), keys.len(), triples.len(), HASH_BITS as usize] {
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
    for k in &keys {
        out.extend_from_slice(&k.to_le_bytes());
    }
    for s in &starts {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for t in &triples {
        out.extend_from_slice(&t.2.to_le_bytes());
    }
    for t in &triples {
        out.push(t.1);
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    for s in &slots {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap()).join("langdetect-table.bin");
    fs::write(dest, out).unwrap();
}
