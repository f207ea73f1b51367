//! A read-only map from strings to `u32` laid out in one byte buffer: an open-addressing
//! hash index over a blob of keys. `build.rs` includes this file to lay out the Punkt
//! parameters at build time, and `punkt` reads them in place from the binary, so no text is
//! parsed and no map is built when a process first splits sentences. Not a general-purpose
//! map: it is built once and never changes.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! "STB1" nslots:u32 nkeys:u32 blob_len:u32
//! nslots x slot:u32                      key index + 1, or 0 for an empty slot
//! nkeys  x (offset:u32 len:u32 value:u32) the key's bytes in the blob, its value
//! blob_len bytes                         the keys, one after the other
//! ```

const MAGIC: &[u8; 4] = b"STB1";
const HEADER: usize = 16;

/// FNV-1a over the bytes of `parts`, as if they were one string.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Lays out a table of `entries`; a key given twice keeps its last value (like filling a
/// Python dict or set in file order).
#[allow(dead_code)] // each includer uses one side
pub fn build(entries: &[(&str, u32)]) -> Vec<u8> {
    let mut keys: Vec<(&str, u32)> = Vec::with_capacity(entries.len());
    let mut index = std::collections::HashMap::new();
    for &(k, v) in entries {
        match index.get(k) {
            Some(&i) => keys[i] = (k, v),
            None => {
                index.insert(k, keys.len());
                keys.push((k, v));
            }
        }
    }
    // At most half full, a power of two.
    let nslots = (keys.len() * 2).next_power_of_two().max(8);
    let mut slots = vec![0u32; nslots];
    for (i, (k, _)) in keys.iter().enumerate() {
        let mut s = hash(&[k.as_bytes()]) as usize & (nslots - 1);
        while slots[s] != 0 {
            s = (s + 1) & (nslots - 1);
        }
        slots[s] = i as u32 + 1;
    }
    let blob_len: usize = keys.iter().map(|(k, _)| k.len()).sum();
    let mut out = Vec::with_capacity(HEADER + 4 * nslots + 12 * keys.len() + blob_len);
    out.extend_from_slice(MAGIC);
    for n in [nslots, keys.len(), blob_len] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for s in &slots {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let mut offset = 0u32;
    for (k, v) in &keys {
        for n in [offset, k.len() as u32, *v] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        offset += k.len() as u32;
    }
    for (k, _) in &keys {
        out.extend_from_slice(k.as_bytes());
    }
    out
}

#[inline]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Where a table laid out by [`build`] lies in a byte buffer; lookups take that buffer.
#[derive(Debug, Clone)]
#[allow(dead_code)] // each includer uses one side
pub struct StrTable {
    slots: usize,
    keys: usize,
    blob: usize,
    nslots: usize,
    nkeys: usize,
}

#[allow(dead_code)]
impl StrTable {
    /// Reads the table that starts at byte `at` of `bytes`; returns it and the offset just
    /// after it, or `None` when no whole, well-formed table starts there.
    pub fn parse(bytes: &[u8], at: usize) -> Option<(StrTable, usize)> {
        let head = bytes.get(at..at.checked_add(HEADER)?)?;
        if &head[..4] != MAGIC {
            return None;
        }
        let nslots = u32_at(head, 4) as usize;
        let nkeys = u32_at(head, 8) as usize;
        let blob_len = u32_at(head, 12) as usize;
        if !nslots.is_power_of_two() || nkeys >= nslots {
            return None;
        }
        let slots = at + HEADER;
        let keys = slots + 4 * nslots;
        let blob = keys + 12 * nkeys;
        let end = blob.checked_add(blob_len)?;
        if end > bytes.len() {
            return None;
        }
        // Every slot names a key and every key lies in the blob, so lookups cannot fail.
        let ok = (0..nslots).all(|s| u32_at(bytes, slots + 4 * s) as usize <= nkeys)
            && (0..nkeys).all(|i| {
                let o = u32_at(bytes, keys + 12 * i) as usize;
                let l = u32_at(bytes, keys + 12 * i + 4) as usize;
                o.checked_add(l).is_some_and(|e| e <= blob_len)
            });
        let table = StrTable {
            slots,
            keys,
            blob,
            nslots,
            nkeys,
        };
        ok.then_some((table, end))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.nkeys
    }

    /// Whether the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.nkeys == 0
    }

    /// The value of the key that is the concatenation of `parts`; `bytes` is the buffer
    /// [`StrTable::parse`] read this table from.
    #[inline]
    pub fn get_parts(&self, bytes: &[u8], parts: &[&[u8]]) -> Option<u32> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mask = self.nslots - 1;
        let mut s = hash(parts) as usize & mask;
        loop {
            let v = u32_at(bytes, self.slots + 4 * s) as usize;
            if v == 0 {
                return None;
            }
            let e = self.keys + 12 * (v - 1);
            let (o, l) = (u32_at(bytes, e) as usize, u32_at(bytes, e + 4) as usize);
            if l == total {
                let mut key = &bytes[self.blob + o..self.blob + o + l];
                let same = parts.iter().all(|p| {
                    let (head, tail) = key.split_at(p.len());
                    key = tail;
                    head == *p
                });
                if same {
                    return Some(u32_at(bytes, e + 8));
                }
            }
            s = (s + 1) & mask;
        }
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, bytes: &[u8], key: &str) -> Option<u32> {
        self.get_parts(bytes, &[key.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let entries = [
            ("dr", 0),
            ("u.s", 0),
            ("a\tb", 7),
            ("", 3),
            ("dr", 5),
            ("é", 9),
        ];
        let bytes = build(&entries);
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(b"tail");
        let b = &with_tail;
        let (t, end) = StrTable::parse(b, 0).unwrap();
        assert_eq!(&b[end..], b"tail");
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(b, "dr"), Some(5), "the last value wins");
        assert_eq!(t.get(b, "u.s"), Some(0));
        assert_eq!(t.get(b, ""), Some(3));
        assert_eq!(t.get(b, "é"), Some(9));
        assert_eq!(t.get_parts(b, &[b"a", b"\t", b"b"]), Some(7));
        assert_eq!(t.get_parts(b, &[b"a\t", b"", b"b"]), Some(7));
        assert_eq!(t.get(b, "a"), None);
        assert_eq!(t.get(b, "d"), None);
        assert_eq!(t.get(b, "drx"), None);
        // A second table after the first.
        let mut two = bytes.clone();
        two.extend(build(&[("x", 1)]));
        let (_, mid) = StrTable::parse(&two, 0).unwrap();
        let (u, end) = StrTable::parse(&two, mid).unwrap();
        assert_eq!(
            (u.get(&two, "x"), u.get(&two, "dr"), end),
            (Some(1), None, two.len())
        );
        let empty = build(&[]);
        let (e, _) = StrTable::parse(&empty, 0).unwrap();
        assert!(e.is_empty() && e.get(&empty, "x").is_none());
    }

    #[test]
    fn rejects_damaged_bytes() {
        let bytes = build(&[("abc", 1), ("de", 2)]);
        assert!(StrTable::parse(&bytes[..bytes.len() - 1], 0).is_none());
        assert!(StrTable::parse(b"STB0", 0).is_none());
        assert!(StrTable::parse(&bytes, 1).is_none());
        assert!(StrTable::parse(&bytes, usize::MAX).is_none());
        let mut bad = bytes.clone();
        // A key that claims to run past the blob.
        let keys_at = HEADER + 4 * u32_at(&bytes, 4) as usize;
        bad[keys_at + 4..keys_at + 8].copy_from_slice(&100u32.to_le_bytes());
        assert!(StrTable::parse(&bad, 0).is_none());
    }
}
