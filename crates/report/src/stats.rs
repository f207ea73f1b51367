//! The statistics behind the report's numbers: a seeded random source whose stream never
//! changes between versions (so a page is byte-stable), the ratio-of-sums bootstrap over items
//! (one resample at a time, shared by every metric and by both sides of a paired comparison),
//! percentile intervals, the two-sided bootstrap p-value, and McNemar's exact test.
//!
//! Not here: which metrics exist or how items are joined (`evals`), nor any formatting.

/// SplitMix64: tiny, fast, and fully specified here, so a seed gives the same resamples on
/// every platform and in every future build (library RNGs do not promise that).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (Lemire's multiply-shift with rejection: no modulo bias).
    /// `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }
}

/// A stable 64-bit hash (FNV-1a) of `parts`, used to give every bootstrap its own seed that
/// depends on what it is about, not on the order the folders were given in.
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Per-item `[num, den]` columns: `num[k][i]`, `den[k][i]` for column `k` and item `i`
/// (zero where the item does not take part).
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub num: Vec<Vec<f64>>,
    pub den: Vec<Vec<f64>>,
}

impl Columns {
    /// Σ num and Σ den of every column with item `i` counted `weights[i]` times.
    pub fn sums(&self, weights: &[f64]) -> Vec<(f64, f64)> {
        self.num
            .iter()
            .zip(&self.den)
            .map(|(n, d)| (dot(n, weights), dot(d, weights)))
            .collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// How many times each of `n` items is drawn in one resample with replacement.
pub fn resample_weights(rng: &mut Rng, n: usize, out: &mut Vec<f64>) {
    out.clear();
    out.resize(n, 0.0);
    for _ in 0..n {
        out[rng.below(n)] += 1.0;
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted `xs` with linear interpolation between order
/// statistics (NumPy's default). `None` for an empty slice.
pub fn quantile_sorted(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (xs.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(xs[lo] + (xs[hi] - xs[lo]) * frac)
}

/// The central 95 % percentile interval of `samples` (sorted in place); `None` if empty.
pub fn interval95(samples: &mut [f64]) -> Option<(f64, f64)> {
    samples.sort_by(f64::total_cmp);
    Some((
        quantile_sorted(samples, 0.025)?,
        quantile_sorted(samples, 0.975)?,
    ))
}

/// Two-sided bootstrap p-value for "the difference is zero" from the bootstrap differences:
/// twice the smaller tail beyond zero, each tail counted with the usual +1 so that no
/// p-value is exactly 0, capped at 1. It agrees with the percentile interval: p < 0.05 about
/// when the 95 % interval excludes 0. All-zero differences give exactly 1.
pub fn bootstrap_p(diffs: &[f64]) -> Option<f64> {
    if diffs.is_empty() {
        return None;
    }
    let below = diffs.iter().filter(|d| **d <= 0.0).count() as f64;
    let above = diffs.iter().filter(|d| **d >= 0.0).count() as f64;
    let b = diffs.len() as f64;
    let tail = (below.min(above) + 1.0) / (b + 1.0);
    Some((2.0 * tail).min(1.0))
}

/// McNemar's exact test on the discordant pairs: `b` items only the first model got right,
/// `c` only the second. Two-sided p = 2·P(X ≤ min(b, c)) for X ~ Binomial(b + c, ½), capped
/// at 1 (and 1 when there are no discordant pairs).
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    (2.0 * binomial_half_cdf(b.min(c), n)).min(1.0)
}

/// P(X ≤ k) for X ~ Binomial(n, ½), summed in log space so large `n` does not underflow.
fn binomial_half_cdf(k: u64, n: u64) -> f64 {
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut log_terms = Vec::with_capacity(k as usize + 1);
    let mut log_choose = 0.0;
    for i in 0..=k {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        log_terms.push(log_choose + ln_half_n);
    }
    let max = log_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = log_terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs of the reference C implementation for seed 1234567.
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(7);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[r.below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(Rng::new(3).below(1), 0);
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(0, &["ab", "c"]), stable_hash(0, &["a", "bc"]));
        assert_ne!(stable_hash(0, &["x"]), stable_hash(1, &["x"]));
        assert_eq!(stable_hash(5, &["x", "y"]), stable_hash(5, &["x", "y"]));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        // numpy.quantile([1,2,3,4], [0.025, 0.5, 0.975]) = [1.075, 2.5, 3.925]
        assert!((quantile_sorted(&xs, 0.025).unwrap() - 1.075).abs() < 1e-12);
        assert!((quantile_sorted(&xs, 0.5).unwrap() - 2.5).abs() < 1e-12);
        assert!((quantile_sorted(&xs, 0.975).unwrap() - 3.925).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[], 0.5), None);
        assert_eq!(quantile_sorted(&[2.0], 0.975), Some(2.0));
    }

    #[test]
    fn mcnemar_exact_matches_scipy() {
        // scipy.stats.binomtest(2, 12, 0.5).pvalue = 0.03857421875
        assert!((mcnemar_exact(10, 2) - 0.03857421875).abs() < 1e-12);
        assert!((mcnemar_exact(2, 10) - 0.03857421875).abs() < 1e-12);
        // binomtest(0, 5).pvalue = 0.0625; binomtest(3, 6).pvalue = 1
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // binomtest(7, 20).pvalue = 0.26317596435546875
        assert!((mcnemar_exact(13, 7) - 0.263_175_964_355_468_75).abs() < 1e-12);
        // binomtest(400, 1000).pvalue = 2.728464156065947e-10 (large n must not underflow)
        let p = mcnemar_exact(400, 600);
        assert!((p / 2.728_464_156_065_947e-10 - 1.0).abs() < 1e-9, "{p:e}");
    }

    #[test]
    fn bootstrap_p_is_one_for_no_difference_and_small_for_a_clear_one() {
        assert_eq!(bootstrap_p(&[0.0; 100]), Some(1.0));
        let clear = vec![0.1; 1999];
        assert_eq!(bootstrap_p(&clear), Some(2.0 / 2000.0));
        let mixed: Vec<f64> = (0..100).map(|i| i as f64 - 49.5).collect();
        assert_eq!(bootstrap_p(&mixed), Some(1.0));
        assert_eq!(bootstrap_p(&[]), None);
    }

    #[test]
    fn resample_weights_sum_to_n() {
        let mut r = Rng::new(1);
        let mut w = Vec::new();
        resample_weights(&mut r, 37, &mut w);
        assert_eq!(w.len(), 37);
        assert_eq!(w.iter().sum::<f64>(), 37.0);
        let cols = Columns {
            num: vec![vec![1.0; 37]],
            den: vec![vec![2.0; 37]],
        };
        assert_eq!(cols.sums(&w), vec![(37.0, 74.0)]);
    }

    #[test]
    fn interval_of_a_constant_is_that_constant() {
        let mut xs = vec![0.5; 10];
        assert_eq!(interval95(&mut xs), Some((0.5, 0.5)));
        assert_eq!(interval95(&mut []), None);
    }
}
