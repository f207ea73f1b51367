//! CPython's `random` module as langdetect drives it: `random.seed(0)`, then `gauss(0, 1)` and
//! `choice(ngrams)`. Detection must draw exactly the numbers Python draws, so this is MT19937
//! with CPython's `init_by_array` seeding, `random()`, `gauss()` (with its cached second value)
//! and `_randbelow()` by rejection, each step as CPython computes it. Ported from the
//! `langdetect` crate 0.1.0 (Apache-2.0; see `data/langdetect/NOTICE`).

use std::sync::LazyLock;

const N: usize = 624;
const M: usize = 397;

/// The generator state after `random.seed(0)`.
#[derive(Clone)]
pub(super) struct PyRandom {
    mt: [u32; N],
    idx: usize,
    gauss_next: Option<f64>,
}

impl PyRandom {
    /// `random.Random(0)`. The seeded state is computed once and copied, since langdetect
    /// reseeds with the same value before every detection.
    pub(super) fn seeded_zero() -> Self {
        static ZERO: LazyLock<PyRandom> = LazyLock::new(|| PyRandom::from_key(&[0]));
        ZERO.clone()
    }

    fn init_genrand(s: u32) -> [u32; N] {
        let mut mt = [0u32; N];
        mt[0] = s;
        for i in 1..N {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        mt
    }

    /// `init_by_array(key)`; an integer seed `n` is the key of its 32-bit words (`[0]` for 0).
    fn from_key(key: &[u32]) -> Self {
        let mut mt = Self::init_genrand(19650218);
        let (mut i, mut j) = (1usize, 0usize);
        let mut k = N.max(key.len());
        while k > 0 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1664525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1566083941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            k -= 1;
        }
        mt[0] = 0x80000000;
        PyRandom {
            mt,
            idx: N,
            gauss_next: None,
        }
    }

    fn twist(&mut self) {
        #[inline(always)]
        fn mix(upper: u32, lower: u32, far: u32) -> u32 {
            let y = (upper & 0x80000000) | (lower & 0x7fffffff);
            far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & 0x9908b0df)
        }
        let mt = &mut self.mt;
        for kk in 0..N - M {
            mt[kk] = mix(mt[kk], mt[kk + 1], mt[kk + M]);
        }
        for kk in N - M..N - 1 {
            mt[kk] = mix(mt[kk], mt[kk + 1], mt[kk + M - N]);
        }
        mt[N - 1] = mix(mt[N - 1], mt[0], mt[M - 1]);
        self.idx = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.idx >= N {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        y ^= y >> 18;
        y
    }

    /// `random.random()`: 53 bits from two draws.
    fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
    }

    /// `random.gauss(0.0, 1.0)` (Box-Muller; the second value is kept for the next call).
    pub(super) fn gauss(&mut self) -> f64 {
        if let Some(z) = self.gauss_next.take() {
            return z;
        }
        let x2pi = self.random() * (2.0 * std::f64::consts::PI);
        let g2rad = (-2.0 * (1.0 - self.random()).ln()).sqrt();
        self.gauss_next = Some(x2pi.sin() * g2rad);
        x2pi.cos() * g2rad
    }

    /// `random._randbelow(n)` for `1 <= n < 2**32`: the top `n.bit_length()` bits of a draw,
    /// redrawn until below `n`.
    pub(super) fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        debug_assert!((1..=32).contains(&k));
        loop {
            let r = (self.next_u32() >> (32 - k)) as usize;
            if r < n {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of CPython 3.11: `r = random.Random(0)`; `r.getrandbits(32)`, `r.random()`.
    #[test]
    fn matches_cpython_seed_zero() {
        let mut r = PyRandom::seeded_zero();
        assert_eq!(r.next_u32(), 3626764237);
        let mut r = PyRandom::seeded_zero();
        assert_eq!(r.random(), 0.8444218515250481);
        // `r = random.Random(0)`; `r.gauss(0, 1)`, `r.gauss(0, 1)`, `r.choice(range(1000))`.
        let mut r = PyRandom::seeded_zero();
        assert_eq!(r.gauss(), 0.9417154046806644);
        assert_eq!(r.gauss(), -1.3965781047011498);
        assert_eq!(r.randbelow(1000), 430);
    }
}
