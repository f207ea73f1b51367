//! The language profiles as one flat table built by `build.rs` and embedded in the binary:
//! nothing is parsed or allocated to use it, and only the pages a detection reads are loaded.
//! Lookups probe an open-addressing array of the packed n-grams themselves laid out at build
//! time (one cache miss per lookup); an n-gram's index is its slot, and its per-language
//! counts sit in one contiguous run. See `build.rs` for the byte layout.

static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/langdetect-table.bin"));

/// Packs an n-gram of one to three characters into a key (must equal `build.rs`'s `pack`).
#[inline]
pub(super) fn pack(chars: &[char]) -> u64 {
    let mut k = 0u64;
    for (i, &c) in chars.iter().enumerate() {
        k |= (c as u64 + 1) << (21 * i);
    }
    k
}

/// The home slot of a key (must equal `build.rs`'s `slot_of`).
#[inline]
fn slot_of(key: u64, bits: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

#[inline]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline]
fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// A view of the embedded table.
pub(super) struct Profiles {
    /// Language codes in profile (file-name) order.
    pub langs: Vec<&'static str>,
    /// `n_words` of each language: how many 1-, 2- and 3-grams its profile counted.
    n_words: Vec<[f64; 3]>,
    keys: &'static [u8],
    starts: &'static [u8],
    counts: &'static [u8],
    lang_of: &'static [u8],
    hash_bits: u32,
}

impl Profiles {
    pub(super) fn load() -> Profiles {
        let t = TABLE;
        assert_eq!(&t[..4], b"LDT2", "embedded langdetect table");
        let nlang = u32_at(t, 4) as usize;
        let nslots = u32_at(t, 8) as usize;
        let nentries = u32_at(t, 12) as usize;
        let hash_bits = u32_at(t, 16);
        assert_eq!(nslots, 1 << hash_bits, "embedded langdetect table");
        let mut pos = 20;
        let mut langs = Vec::with_capacity(nlang);
        let mut n_words = Vec::with_capacity(nlang);
        for _ in 0..nlang {
            let len = t[pos] as usize;
            let name = std::str::from_utf8(&t[pos + 1..pos + 1 + len]).expect("UTF-8 name");
            pos += 1 + len;
            // langdetect divides by `n_words[len - 1]`, an int, as a float.
            let n = [0, 1, 2].map(|i| u64_at(t, pos + 8 * i) as f64);
            pos += 24;
            langs.push(name);
            n_words.push(n);
        }
        pos = pos.next_multiple_of(8);
        let mut take = |len: usize| {
            let s = &t[pos..pos + len];
            pos += len;
            s
        };
        let keys = take(8 * nslots);
        let starts = take(4 * (nslots + 1));
        let counts = take(4 * nentries);
        let lang_of = take(nentries);
        assert_eq!(pos, t.len(), "embedded langdetect table");
        Profiles {
            langs,
            n_words,
            keys,
            starts,
            counts,
            lang_of,
            hash_bits,
        }
    }

    /// The index (slot) of an n-gram that occurs in some profile.
    #[inline]
    pub(super) fn find(&self, key: u64) -> Option<u32> {
        let mask = (1usize << self.hash_bits) - 1;
        let mut s = slot_of(key, self.hash_bits);
        loop {
            let k = u64_at(self.keys, 8 * s);
            if k == key {
                return Some(s as u32);
            }
            if k == 0 {
                return None;
            }
            s = (s + 1) & mask;
        }
    }

    /// Fills `row` (one slot per language) with `word_lang_prob_map[ngram]` of langdetect:
    /// `count / n_words[len - 1]` for the languages whose profile has the n-gram, else 0.
    pub(super) fn fill_row(&self, ngram: u32, row: &mut [f64]) {
        row.fill(0.0);
        let key = u64_at(self.keys, 8 * ngram as usize);
        // The number of characters: lanes with a non-zero code point.
        let len = 1 + usize::from(key >> 21 != 0) + usize::from(key >> 42 != 0);
        let i = ngram as usize;
        let (a, b) = (
            u32_at(self.starts, 4 * i) as usize,
            u32_at(self.starts, 4 * (i + 1)) as usize,
        );
        for e in a..b {
            let lang = self.lang_of[e] as usize;
            let count = u32_at(self.counts, 4 * e) as f64;
            row[lang] = count / self.n_words[lang][len - 1];
        }
    }
}
