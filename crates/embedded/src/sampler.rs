//! Picks the next token from logits: greedy at temperature 0, otherwise softmax at the given
//! temperature, cut to the smallest set whose probability reaches `top_p`, drawn with a
//! ChaCha RNG seeded from the request, so the same seed gives the same text on every run and
//! platform (`StdRng` makes no such promise across `rand` versions).
//!
//! Tokens the grammar forbids arrive as `-inf` logits and so get probability zero.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        let top_p = if top_p.is_finite() && top_p > 0.0 {
            top_p.min(1.0)
        } else {
            1.0
        };
        let temperature = if temperature.is_finite() {
            temperature.max(0.0)
        } else {
            0.0
        };
        Self {
            temperature,
            top_p,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The sampled token id, or `None` when every logit is `-inf` or NaN.
    pub fn sample(&mut self, logits: &[f32]) -> Option<u32> {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return None;
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, x)| x.is_finite())
            .map(|(i, &x)| (i as u32, ((x - max) / self.temperature).exp()))
            .filter(|(_, p)| *p > 0.0)
            .collect();
        // Highest first; ties broken by id so the order (and so the draw) is deterministic.
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f32 = candidates.iter().map(|c| c.1).sum();
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                cumulative += c.1 / total;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep.max(1));
        }
        let kept: f32 = candidates.iter().map(|c| c.1).sum();
        let mut target = self.rng.random::<f32>() * kept;
        for &(id, p) in &candidates {
            target -= p;
            if target <= 0.0 {
                return Some(id);
            }
        }
        candidates.last().map(|c| c.0)
    }
}

/// Index of the largest finite logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() || x == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_allowed() {
        let mut s = Sampler::new(0.0, 1.0, 1);
        assert_eq!(s.sample(&[0.1, 3.0, f32::NEG_INFINITY, 2.0]), Some(1));
        assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), None);
    }

    #[test]
    fn same_seed_same_draws_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32) * 0.1).collect();
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 1.0, seed);
            (0..20)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut s = Sampler::new(1.0, 0.01, 3);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), Some(49));
        }
        let mut s = Sampler::new(1.0, 1.0, 3);
        let masked = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        for _ in 0..20 {
            assert_eq!(s.sample(&masked), Some(1));
        }
    }
}
