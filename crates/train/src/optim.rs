//! Optimisation: AdamW over the LoRA tensors with its moments as plain vectors (so they can be
//! checkpointed bit for bit), linear warm-up then cosine decay, global-norm clipping, and the
//! seeded order of the data.

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// AdamW hyper-parameters (PyTorch's defaults besides `lr` and `weight_decay`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW state for a fixed list of parameters.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimiser steps taken.
    pub t: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> Self {
        Self {
            config,
            t: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of `params` with `grads` (same order and sizes) at learning rate `lr`.
    pub fn step(&mut self, params: &[Var], grads: &[Vec<f32>], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, var) in params.iter().enumerate() {
            let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], &grads[i]);
            for j in 0..p.len() {
                let gj = g[j] as f64;
                let mj = c.beta1 * m[j] as f64 + (1.0 - c.beta1) * gj;
                let vj = c.beta2 * v[j] as f64 + (1.0 - c.beta2) * gj * gj;
                m[j] = mj as f32;
                v[j] = vj as f32;
                let mut pj = p[j] as f64;
                pj -= lr * c.weight_decay * pj;
                pj -= lr * (mj / bias1) / ((vj / bias2).sqrt() + c.eps);
                p[j] = pj as f32;
            }
            var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm` (when > 0); returns
/// the norm before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let factor = (max_norm / (norm + 1e-6)) as f32;
        for g in grads.iter_mut().flat_map(|g| g.iter_mut()) {
            *g *= factor;
        }
    }
    norm
}

/// The learning rate of optimiser step `step` (1-based) of `total`: linear warm-up over
/// `warmup` steps to `peak`, then cosine decay towards 0 (reaching it one step after the end,
/// so the last step still learns).
pub fn learning_rate(peak: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step <= warmup && warmup > 0 {
        return peak * step as f64 / warmup as f64;
    }
    let span = (total.saturating_sub(warmup) + 1) as f64;
    let progress = (step - warmup) as f64 / span;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The order of the examples in `epoch`: a permutation drawn from `seed` and the epoch alone,
/// so a resumed run sees the same order without replaying earlier epochs.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0x5348_5546_464c_4500 ^ epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// The examples held out for evaluation (`--eval-split`): `count` of them, drawn from the
/// seed alone and returned in input order.
pub fn held_out(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0x4556_414c_0000_0000));
    order.shuffle(&mut rng);
    let mut picked = order[..count.min(n)].to_vec();
    picked.sort_unstable();
    picked
}

/// The dropout generator of optimiser step `step`, likewise a function of the seed and step.
pub fn dropout_rng(seed: u64, step: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, 0x4452_4f50_0000_0000 ^ step as u64))
}

/// splitmix64 of `a` combined with `b`: independent streams from one user seed.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let lrs: Vec<f64> = (1..=10).map(|s| learning_rate(1.0, s, 10, 2)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert!(lrs.windows(2).skip(1).all(|w| w[1] < w[0]), "{lrs:?}");
        assert!(lrs[9] > 0.0);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        let norm = clip_global_norm(&mut g, 1.0);
        assert!((norm - 5.0).abs() < 1e-9);
        let after = (g[0][0].powi(2) + g[1][0].powi(2)).sqrt();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(20, 7, 0);
        assert_eq!(a, epoch_order(20, 7, 0));
        assert_ne!(a, epoch_order(20, 7, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    }
}
