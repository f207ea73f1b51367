//! Differentiable building blocks for the trainable llama, as candle custom ops.
//!
//! candle's fast kernels for RMSNorm, interleaved RoPE and the last-dimension softmax have no
//! backward (a model built from them silently trains nothing), and its matmul backward always
//! computes the gradient of *both* operands, so every frozen projection would cost a second,
//! wasted GEMM per layer. Each op here runs the fast kernel forward and supplies the backward
//! by hand, for the input only: the frozen tensors (weights, norm scales, rotation tables) live
//! inside the op, outside the autograd graph.
//!
//! [`LmHeadLogProb`] fuses the tied output projection, the log-softmax over the vocabulary and
//! the pick of each target token: it returns one log-probability per row and keeps the softmax
//! for the backward pass instead of materialising a log-softmax graph over 49,152 columns.

use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// A tensor over the op's (possibly strided) input, on the CPU.
fn input_tensor(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("training ops take f32 tensors")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu),
        None => candle_core::bail!("training ops take contiguous tensors"),
    }
}

/// The storage a custom op returns for `t`.
fn output_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    Ok((CpuStorage::F32(values), t.shape().clone()))
}

/// `x · Wᵀ` with a frozen `W` (`out × in`): the gradient flows to `x` only.
pub struct FrozenLinear {
    pub weight: Tensor,
}

impl FrozenLinear {
    pub fn new(weight: Tensor) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?.contiguous()?,
        })
    }

    /// `x` is `(n, in)`; returns `(n, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if x.track_op() {
            x.apply_op1(FrozenLinearOp(self.weight.clone()))
        } else {
            x.matmul(&self.weight.t()?)
        }
    }
}

struct FrozenLinearOp(Tensor);

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        output_storage(&input_tensor(storage, layout)?.matmul(&self.0.t()?)?)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.matmul(&self.0)?))
    }
}

/// RMSNorm with a frozen scale; `x` is `(n, d)`.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.track_op() {
        x.apply_op1(RmsNormOp {
            scale: scale.clone(),
            eps,
        })
    } else {
        candle_nn::ops::rms_norm(&x, scale, eps)
    }
}

struct RmsNormOp {
    scale: Tensor,
    eps: f32,
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_tensor(storage, layout)?;
        output_storage(&candle_nn::ops::rms_norm(&x, &self.scale, self.eps)?)
    }

    // y = x·r·w with r = (mean(x²) + eps)^-½, so
    // dx = r·(g·w) − x·r³·mean(g·w·x) over the last dimension.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let x = x.detach();
        let gw = grad.broadcast_mul(&self.scale)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?
            .sqrt()?
            .recip()?;
        let dot = (&gw * &x)?.mean_keepdim(D::Minus1)?;
        let dx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&(dot * r.powf(3.0)?)?)?)?;
        Ok(Some(dx))
    }
}

/// Interleaved rotary embedding (GGUF's q/k layout) of `(b, heads, t, head_dim)` with tables
/// `(t, head_dim / 2)`. A rotation, so its backward is the rotation by the opposite angle.
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.track_op() {
        x.apply_op1(RopeOp {
            cos: cos.clone(),
            sin: sin.clone(),
        })
    } else {
        candle_nn::rotary_emb::rope_i(&x, cos, sin)
    }
}

struct RopeOp {
    cos: Tensor,
    sin: Tensor,
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-interleaved"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_tensor(storage, layout)?;
        output_storage(&candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let back = candle_nn::rotary_emb::rope_i(&grad.contiguous()?, &self.cos, &self.sin.neg()?)?;
        Ok(Some(back))
    }
}

/// Causal attention weights: `softmax(scale · scores)` over the last dimension with every key
/// after the query masked out. `scores` is `(…, rows, keys)` where row `r` is the query at
/// position `r % keys` (grouped heads stack their queries). Backward: `scale · y·(g − Σ g·y)`.
pub fn causal_softmax(scores: &Tensor, keys: usize, scale: f32) -> Result<Tensor> {
    let scores = scores.contiguous()?;
    let op = CausalSoftmaxOp { keys, scale };
    if scores.track_op() {
        scores.apply_op1(op)
    } else {
        scores.apply_op1_no_bwd(&op)
    }
}

struct CausalSoftmaxOp {
    keys: usize,
    scale: f32,
}

impl CustomOp1 for CausalSoftmaxOp {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("training ops take f32 tensors")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("training ops take contiguous tensors")
        };
        let keys = self.keys;
        if layout.shape().dims().last() != Some(&keys) {
            candle_core::bail!("causal softmax over {:?} with {keys} keys", layout.shape());
        }
        let mut out = data[start..end].to_vec();
        out.par_chunks_mut(keys).enumerate().for_each(|(r, row)| {
            let visible = r % keys + 1;
            let (seen, hidden) = row.split_at_mut(visible);
            let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for v in seen.iter_mut() {
                *v = ((*v - max) * self.scale).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in seen.iter_mut() {
                *v *= inv;
            }
            hidden.fill(0.0);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let y = y.detach();
        let dot = (grad * &y)?.sum_keepdim(D::Minus1)?;
        Ok(Some(
            (grad.broadcast_sub(&dot)? * y)?.affine(self.scale as f64, 0.0)?,
        ))
    }
}

/// `log softmax(h · Eᵀ)[target]` per row of `h` (`n × d`), with `E` the frozen output
/// projection (`vocab × d`, the tied embedding for SmolLM2).
pub struct LmHeadLogProb {
    pub weight: Tensor,
}

impl LmHeadLogProb {
    /// One log-probability per row of `h` for the matching entry of `targets`.
    pub fn forward(&self, h: &Tensor, targets: &[u32]) -> Result<Tensor> {
        let h = h.contiguous()?;
        if h.dim(0)? != targets.len() {
            candle_core::bail!("{} rows but {} targets", h.dim(0)?, targets.len());
        }
        let op = LmHeadOp {
            weight: self.weight.clone(),
            targets: targets.to_vec(),
            probs: Mutex::new(None),
            keep_probs: h.track_op(),
        };
        if h.track_op() {
            h.apply_op1(op)
        } else {
            h.apply_op1_no_bwd(&op)
        }
    }

    /// Full logits `(n, vocab)` for rows of `h` (no gradient): for inspection and interop checks.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        h.contiguous()?.matmul(&self.weight.t()?)
    }
}

struct LmHeadOp {
    weight: Tensor,
    targets: Vec<u32>,
    /// The softmax of the forward pass, `n × vocab`, kept for the backward pass.
    probs: Mutex<Option<Vec<f32>>>,
    keep_probs: bool,
}

impl CustomOp1 for LmHeadOp {
    fn name(&self) -> &'static str {
        "lm-head-log-prob"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = input_tensor(storage, layout)?;
        let n = h.dim(0)?;
        let vocab = self.weight.dim(0)?;
        let mut logits = h
            .matmul(&self.weight.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = vec![0f32; n];
        let keep = self.keep_probs;
        logits
            .par_chunks_mut(vocab)
            .zip(out.par_iter_mut())
            .zip(self.targets.par_iter())
            .try_for_each(|((row, out), &target)| -> Result<()> {
                let Some(&picked) = row.get(target as usize) else {
                    candle_core::bail!("target id {target} is outside the vocabulary ({vocab})")
                };
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                let lse = max + sum.ln();
                *out = picked - lse;
                if keep {
                    for v in row.iter_mut() {
                        *v = (*v - lse).exp();
                    }
                }
                Ok(())
            })?;
        if keep {
            *self.probs.lock().unwrap_or_else(|p| p.into_inner()) = Some(logits);
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    // d logp[t] / d logits = onehot(t) − softmax; then through the frozen projection.
    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(mut probs) = self.probs.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            candle_core::bail!("lm-head backward run twice or without a forward")
        };
        let n = h.dim(0)?;
        let vocab = self.weight.dim(0)?;
        let g = grad.to_vec1::<f32>()?;
        probs
            .par_chunks_mut(vocab)
            .zip(g.par_iter())
            .zip(self.targets.par_iter())
            .for_each(|((row, &g), &target)| {
                for v in row.iter_mut() {
                    *v *= -g;
                }
                row[target as usize] += g;
            });
        let grad_logits = Tensor::from_vec(probs, (n, vocab), &Device::Cpu)?;
        Ok(Some(grad_logits.matmul(&self.weight)?))
    }
}
