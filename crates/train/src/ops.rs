//! Differentiable building blocks for the trainable llama, as candle custom ops.
//!
//! candle's fast kernels for RMSNorm, interleaved RoPE and the last-dimension softmax have no
//! backward (a model built from them silently trains nothing), and its matmul backward always
//! computes the gradient of *both* operands, so every frozen projection would cost a second,
//! wasted GEMM per layer. Each op here runs fast kernels forward and supplies the backward by
//! hand, for the inputs only: the frozen tensors (weights, norm scales, rotation tables) live
//! inside the op, outside the autograd graph. The finite-difference test in
//! `tests/train.rs` checks every one of them.
//!
//! Three ops fuse whole sub-graphs, because on a 2-core CPU each recorded candle op costs an
//! output allocation, a gradient buffer and a thread-pool round trip: [`Attention`] (RoPE,
//! grouped-query scores, causal softmax, values), [`FrozenMlp`] (SwiGLU without LoRA) and
//! [`LmHeadLogProb`] (tied output projection, log-softmax over the vocabulary and the pick of
//! each target token, keeping the softmax for the backward pass instead of a log-softmax graph
//! over 49,152 columns). Together they halved the backward pass of a SmolLM2 step.

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

/// The frozen SwiGLU MLP `down(silu(x·Gᵀ) ⊙ x·Uᵀ)` as one op: two GEMMs and one
/// elementwise pass forward, three GEMMs and one pass backward, instead of a dozen autograd
/// nodes (splits, activation, product, each with its gradient buffers). Used when no MLP
/// projection carries LoRA.
pub struct FrozenMlp {
    /// Gate rows then up rows, `(2·ffn, d)`.
    pub gate_up: Tensor,
    /// `(d, ffn)`.
    pub down: Tensor,
}

impl FrozenMlp {
    /// `x` is `(n, d)`; returns `(n, d)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = MlpOp {
            gate_up: self.gate_up.clone(),
            down: self.down.clone(),
            saved: Mutex::new(None),
            keep: x.track_op(),
        };
        if x.track_op() {
            x.apply_op1(op)
        } else {
            x.apply_op1_no_bwd(&op)
        }
    }
}

struct MlpOp {
    gate_up: Tensor,
    down: Tensor,
    /// The gate/up pre-activations `(n, 2·ffn)`, for the backward pass.
    saved: Mutex<Option<Vec<f32>>>,
    keep: bool,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp1 for MlpOp {
    fn name(&self) -> &'static str {
        "frozen-mlp"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_tensor(storage, layout)?;
        let n = x.dim(0)?;
        let ffn = self.down.dim(1)?;
        let gu = x
            .matmul(&self.gate_up.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut act = vec![0f32; n * ffn];
        act.par_chunks_mut(ffn)
            .zip(gu.par_chunks(2 * ffn))
            .for_each(|(a, row)| {
                let (g, u) = row.split_at(ffn);
                for j in 0..ffn {
                    a[j] = g[j] * sigmoid(g[j]) * u[j];
                }
            });
        let act = Tensor::from_vec(act, (n, ffn), &Device::Cpu)?;
        let out = act.matmul(&self.down.t()?)?;
        if self.keep {
            *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(gu);
        }
        output_storage(&out)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(gu) = self.saved.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            candle_core::bail!("mlp backward run twice or without a forward")
        };
        let n = x.dim(0)?;
        let ffn = self.down.dim(1)?;
        let d_act = grad
            .contiguous()?
            .matmul(&self.down)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut d_gu = vec![0f32; n * 2 * ffn];
        d_gu.par_chunks_mut(2 * ffn)
            .zip(gu.par_chunks(2 * ffn))
            .zip(d_act.par_chunks(ffn))
            .for_each(|((d, row), da)| {
                let (g, u) = row.split_at(ffn);
                let (dg, du) = d.split_at_mut(ffn);
                for j in 0..ffn {
                    let s = sigmoid(g[j]);
                    let silu = g[j] * s;
                    du[j] = da[j] * silu;
                    dg[j] = da[j] * u[j] * (s + silu * (1.0 - s));
                }
            });
        let d_gu = Tensor::from_vec(d_gu, (n, 2 * ffn), &Device::Cpu)?;
        Ok(Some(d_gu.matmul(&self.gate_up)?))
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

/// In place over rows of `keys` scores: row `r` is a query at position `r % keys`, which sees
/// keys `0..=r % keys`; the rest get weight 0.
fn causal_softmax_rows(data: &mut [f32], keys: usize, scale: f32) {
    data.par_chunks_mut(keys).enumerate().for_each(|(r, row)| {
        let visible = r % keys + 1;
        let (seen, hidden) = row.split_at_mut(visible);
        let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in seen.iter_mut() {
            *v = ((*v - max) * scale).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in seen.iter_mut() {
            *v *= inv;
        }
        hidden.fill(0.0);
    });
}

/// Causal grouped-query self-attention with interleaved RoPE, from the projected `q`
/// (`n × heads·hd`), `k` and `v` (`n × kv_heads·hd`) of `rows` sequences of `len` tokens to
/// the heads' outputs (`n × heads·hd`), as one op: the reshapes, rotations, score and value
/// products and the softmax run on plain tensors, and the backward pass is written out
/// (saving the rotated q/k, v and the attention weights) instead of recorded op by op.
pub struct Attention {
    pub rows: usize,
    pub len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// RoPE tables for positions `0..len`, `(len, head_dim / 2)`.
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Attention {
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let op = AttentionOp {
            shape: AttentionShape {
                rows: self.rows,
                len: self.len,
                heads: self.heads,
                kv_heads: self.kv_heads,
                head_dim: self.head_dim,
            },
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            saved: Mutex::new(None),
            keep: q.track_op() || k.track_op() || v.track_op(),
        };
        if op.keep {
            q.apply_op3(&k, &v, op)
        } else {
            q.apply_op3_no_bwd(&k, &v, &op)
        }
    }
}

#[derive(Clone, Copy)]
struct AttentionShape {
    rows: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl AttentionShape {
    /// `(n, heads·hd)` → `(rows, heads, len, hd)`.
    fn split(&self, t: &Tensor, heads: usize) -> Result<Tensor> {
        t.reshape((self.rows, self.len, heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `(rows, heads, len, hd)` (or the grouped view of it) → `(n, heads·hd)`.
    fn merge(&self, t: &Tensor, heads: usize) -> Result<Tensor> {
        t.reshape((self.rows, heads, self.len, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((self.rows * self.len, heads * self.head_dim))
    }

    /// Query heads sharing a KV head stacked as rows: `(rows, kv_heads, n_rep·len, hd)`.
    fn grouped(&self, t: &Tensor) -> Result<Tensor> {
        let n_rep = self.heads / self.kv_heads;
        t.reshape((self.rows, self.kv_heads, n_rep * self.len, self.head_dim))
    }

    /// Un-rotates a gradient (rotation by `-θ`) and lays it out as `(n, heads·hd)`.
    fn unrotate(&self, t: &Tensor, heads: usize, cos: &Tensor, neg_sin: &Tensor) -> Result<Tensor> {
        let t = t
            .reshape((self.rows, heads, self.len, self.head_dim))?
            .contiguous()?;
        self.merge(&candle_nn::rotary_emb::rope_i(&t, cos, neg_sin)?, heads)
    }
}

struct AttentionOp {
    shape: AttentionShape,
    cos: Tensor,
    sin: Tensor,
    /// Grouped rotated q, rotated k, v and the attention weights, for the backward pass.
    saved: Mutex<Option<[Tensor; 4]>>,
    keep: bool,
}

impl candle_core::CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let sh = self.shape;
        let q = sh.split(&input_tensor(s1, l1)?, sh.heads)?;
        let k = sh.split(&input_tensor(s2, l2)?, sh.kv_heads)?;
        let v = sh.split(&input_tensor(s3, l3)?, sh.kv_heads)?;
        let q = sh.grouped(&candle_nn::rotary_emb::rope_i(&q, &self.cos, &self.sin)?)?;
        let k = candle_nn::rotary_emb::rope_i(&k, &self.cos, &self.sin)?;
        let scores = q.matmul(&k.t()?)?;
        let dims = scores.dims().to_vec();
        let mut att = scores.flatten_all()?.to_vec1::<f32>()?;
        causal_softmax_rows(&mut att, sh.len, 1.0 / (sh.head_dim as f32).sqrt());
        let att = Tensor::from_vec(att, dims, &Device::Cpu)?;
        let y = sh.merge(&att.matmul(&v)?, sh.heads)?;
        if self.keep {
            *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some([q, k, v, att]);
        }
        output_storage(&y)
    }

    fn bwd(
        &self,
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some([q, k, v, att]) = self.saved.lock().unwrap_or_else(|p| p.into_inner()).take()
        else {
            candle_core::bail!("attention backward run twice or without a forward")
        };
        let sh = self.shape;
        let scale = 1.0 / (sh.head_dim as f64).sqrt();
        let dy = sh.grouped(&sh.split(&grad.contiguous()?, sh.heads)?)?;
        let d_att = dy.matmul(&v.t()?)?;
        let dv = att.t()?.matmul(&dy)?;
        let dot = (&d_att * &att)?.sum_keepdim(D::Minus1)?;
        let d_scores = ((d_att.broadcast_sub(&dot)? * att)? * scale)?;
        let dq = d_scores.matmul(&k)?;
        let dk = d_scores.t()?.matmul(&q)?;
        let neg_sin = self.sin.neg()?;
        let dq = sh.unrotate(&dq, sh.heads, &self.cos, &neg_sin)?;
        let dk = sh.unrotate(&dk, sh.kv_heads, &self.cos, &neg_sin)?;
        Ok((Some(dq), Some(dk), Some(sh.merge(&dv, sh.kv_heads)?)))
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
