//! Picks the next token from logits: greedy at temperature 0, otherwise softmax at the given
//! temperature, cut to the smallest set of most likely tokens whose probability reaches
//! `top_p`, drawn with a ChaCha RNG seeded from the request, so the same seed gives the same
//! text on every run and platform (`StdRng` makes no such promise across `rand` versions).
//!
//! It runs once per generated token on the engine thread, between batched decode calls, so it
//! avoids sorting the whole vocabulary: without a `top_p` cut it draws over the tokens in id
//! order, and with one it sorts only as many of the most likely tokens as the cut needs
//! (found by selection, growing the count until their mass reaches `top_p`). Ties are broken
//! by id, so every order, and so every draw, is a function of the logits and the seed.
//!
//! Tokens the grammar forbids arrive as `-inf` logits and so get probability zero.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;

/// Names the draw procedure in backend identities: another procedure draws other tokens from
/// the same logits and seed, so it must not answer from this one's cache.
pub const SAMPLER_ID: &str = "sampler2";

/// The most likely tokens sorted first (the cut starts with this many, then grows 4× at a
/// time).
const FIRST_CUT: usize = 64;

pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: ChaCha8Rng,
    /// Scratch: (token, unnormalised probability) of every possible token.
    candidates: Vec<(u32, f32)>,
}

/// Most likely first; ties by id.
fn likelier(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
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
            candidates: Vec::new(),
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
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| x.is_finite())
                .map(|(i, &x)| (i as u32, ((x - max) / self.temperature).exp()))
                .filter(|(_, p)| *p > 0.0),
        );
        if self.top_p < 1.0 {
            let total: f64 = candidates.iter().map(|c| f64::from(c.1)).sum();
            let needed = f64::from(self.top_p) * total;
            let n = candidates.len();
            let mut sorted = FIRST_CUT.min(n);
            let keep = loop {
                if sorted < n {
                    candidates.select_nth_unstable_by(sorted - 1, likelier);
                }
                candidates[..sorted].sort_unstable_by(likelier);
                let mut cumulative = 0.0;
                let reached = candidates[..sorted].iter().position(|c| {
                    cumulative += f64::from(c.1);
                    cumulative >= needed
                });
                match reached {
                    Some(i) => break i + 1,
                    None if sorted == n => break n,
                    None => sorted = (sorted * 4).min(n),
                }
            };
            candidates.truncate(keep.max(1));
        }
        let kept: f64 = candidates.iter().map(|c| f64::from(c.1)).sum();
        let mut target = self.rng.random::<f64>() * kept;
        for &(id, p) in candidates.iter() {
            target -= f64::from(p);
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

    #[test]
    fn the_top_p_cut_keeps_the_smallest_most_likely_set() {
        // 300 tokens: ten likely ones (ids 100..110) and a long flat tail, so the cut needs
        // more than the first selection of 64 when top_p is high.
        let mut logits = vec![0.0f32; 300];
        for (k, l) in logits[100..110].iter_mut().enumerate() {
            *l = 5.0 - k as f32 * 0.1;
        }
        let draws = |top_p: f32| {
            let mut s = Sampler::new(1.0, top_p, 11);
            (0..400)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<std::collections::BTreeSet<u32>>()
        };
        // The ten hold about 83% of the mass: a 0.5 cut keeps some of them only, the most
        // likely first; 0.99 reaches into the tail (past 64 tokens).
        let half = draws(0.5);
        assert!(half.iter().all(|&id| (100..107).contains(&id)), "{half:?}");
        assert!(half.contains(&100));
        let most = draws(0.99);
        assert!(most.iter().any(|&id| !(100..110).contains(&id)), "{most:?}");
        assert!(most.len() > 64, "{}", most.len());
    }

    #[test]
    fn draws_follow_the_probabilities() {
        // Two tokens at 3:1 odds: over 4000 draws the likelier one comes about 3000 times.
        let logits = [3f32.ln(), 0.0];
        let mut s = Sampler::new(1.0, 1.0, 5);
        let first = (0..4000).filter(|_| s.sample(&logits) == Some(0)).count();
        assert!((2850..3150).contains(&first), "{first}");
    }
}
