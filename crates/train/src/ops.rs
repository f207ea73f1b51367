//! Differentiable building blocks for the trainable llama, as candle custom ops.
//!
//! candle's fast kernels for RMSNorm, interleaved RoPE and the last-dimension softmax have no
//! backward (a model built from them silently trains nothing), and its matmul backward always
//! computes the gradient of *both* operands, so every frozen projection would cost a second,
//! wasted GEMM per layer. Each op here runs its own kernels forward and supplies the backward
//! by hand, for the inputs only: the frozen tensors (weights, norm scales, rotation tables)
//! live inside the op, outside the autograd graph. The finite-difference test in
//! `tests/train.rs` checks every one of them.
//!
//! The ops fuse whole sub-graphs, because on a 2-core CPU each recorded candle op costs an
//! output allocation, a zeroed gradient buffer and a parallel add in the backward pass, and a
//! thread-pool round trip each: [`LoraLinear`] (a frozen projection group plus the LoRA
//! branches of its adapted parts, with the gradients of `A` and `B` from one backward),
//! [`Attention`] (RoPE, grouped-query scores, causal softmax in 64-query blocks, values,
//! straight from the fused q/k/v projection), [`rms_norm`], [`swiglu`], [`FrozenMlp`] (the
//! whole MLP when it carries no LoRA) and [`LmHeadLogProb`] (tied output projection,
//! log-softmax over the vocabulary and the pick of each target token, keeping the softmax for
//! the backward pass instead of a log-softmax graph over 49,152 columns). [`layer`] runs a
//! whole transformer layer — norms, projections with their LoRA, attention, MLP, residual adds
//! — as one op made of the others' kernels: the model uses it whenever no LoRA dropout is
//! drawn, and the separate ops (which record dropout masks between them) otherwise. Inside
//! an op the products are [`blas`] GEMMs on the op's own buffers and the elementwise work is
//! one rayon pass. Without gradients (the DPO reference pass) the same kernels run and nothing
//! is kept for a backward pass.
//!
//! These are not general-purpose layers: f32, CPU, contiguous inputs.

pub mod blas;

use blas::Op::{N, T};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};
use rayon::prelude::*;
use std::sync::Mutex;

/// The values of a custom op's input (contiguous f32 on the CPU).
fn input_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("training ops take f32 tensors")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("training ops take contiguous tensors"),
    }
}

/// Runs `f` on the values of a contiguous f32 CPU tensor, without copying them.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("training ops run on the CPU")
    };
    f(input_slice(cpu, layout)?)
}

/// A copy of a tensor's values in row-major order.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `x · Wᵀ` with a frozen `W` (`out × in`): the gradient flows to `x` only.
pub struct FrozenLinear {
    pub weight: Tensor,
    out: usize,
    inp: usize,
}

impl FrozenLinear {
    pub fn new(weight: Tensor) -> Result<Self> {
        let weight = weight.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let (out, inp) = weight.dims2()?;
        Ok(Self { weight, out, inp })
    }

    /// `x` is `(n, in)`; returns `(n, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = FrozenLinearOp {
            weight: self.weight.clone(),
            out: self.out,
            inp: self.inp,
        };
        if x.track_op() {
            x.apply_op1(op)
        } else {
            x.apply_op1_no_bwd(&op)
        }
    }
}

struct FrozenLinearOp {
    weight: Tensor,
    out: usize,
    inp: usize,
}

/// `y = x · Wᵀ` for `x` of `n × in` values.
fn linear(weight: &Tensor, x: &[f32], n: usize, out: usize, inp: usize) -> Result<Vec<f32>> {
    let mut y = vec![0f32; n * out];
    with_values(weight, |w| {
        blas::gemm(n, out, inp, 1.0, x, N, w, T, &mut y, false)
    })?;
    Ok(y)
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_slice(storage, layout)?;
        let n = x.len() / self.inp;
        let y = linear(&self.weight, x, n, self.out, self.inp)?;
        Ok((CpuStorage::F32(y), Shape::from((n, self.out))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = values(grad)?;
        let dx = self.input_grad(&g)?;
        Tensor::from_vec(dx, (g.len() / self.out, self.inp), grad.device()).map(Some)
    }
}

impl FrozenLinearOp {
    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        linear(&self.weight, x, x.len() / self.inp, self.out, self.inp)
    }

    /// `g · W`.
    fn input_grad(&self, g: &[f32]) -> Result<Vec<f32>> {
        let n = g.len() / self.out;
        let mut dx = vec![0f32; n * self.inp];
        with_values(&self.weight, |w| {
            blas::gemm(n, self.inp, self.out, 1.0, g, N, w, N, &mut dx, false)
        })?;
        Ok(dx)
    }
}

/// A frozen projection group `x · Wᵀ` (`W` the stacked `out × in` weights of projections that
/// read the same input) plus `scale · (x · Aₚᵀ) · Bₚᵀ` on the columns of each adapted part `p`,
/// as one op over `x`, the adapted parts' `A`s stacked (`parts·r × in`) and their `B`s
/// stacked (`Σ widthₚ × r`). One backward gives `x`'s gradient (through `W` and every branch)
/// and every `A` and `B` gradient. No dropout: with dropout the model records the branches
/// separately.
pub struct LoraLinear {
    pub weight: Tensor,
    /// `(column offset, width)` in the output of each adapted part, in stacking order.
    pub parts: Vec<(usize, usize)>,
    pub rank: usize,
    pub scale: f32,
}

impl LoraLinear {
    /// `x` is `(n, in)`; returns `(n, out)`.
    pub fn forward(&self, x: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (_, inp) = self.weight.dims2()?;
        let r = self.rank;
        let p = self.parts.len();
        let b_rows: usize = self.parts.iter().map(|&(_, w)| w).sum();
        if a.dims() != [p * r, inp] || b.dims() != [b_rows, r] {
            candle_core::bail!(
                "LoRA shapes {:?} / {:?} do not fit {p} parts of rank {r} over {inp} inputs",
                a.dims(),
                b.dims()
            );
        }
        let op = self.op(x.track_op() || a.track_op() || b.track_op(), x.track_op())?;
        let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
        if x.track_op() || a.track_op() || b.track_op() {
            x.apply_op3(&a, &b, op)
        } else {
            x.apply_op3_no_bwd(&a, &b, &op)
        }
    }
}

impl LoraLinear {
    /// The `(A, B)` value counts of the stacked matrices.
    fn lora_sizes(&self) -> Result<(usize, usize)> {
        let (_, inp) = self.weight.dims2()?;
        let b_rows: usize = self.parts.iter().map(|&(_, w)| w).sum();
        Ok((self.parts.len() * self.rank * inp, b_rows * self.rank))
    }

    fn op(&self, keep: bool, need_dx: bool) -> Result<LoraLinearOp> {
        let (out, inp) = self.weight.dims2()?;
        if self.parts.iter().any(|&(o, w)| o + w > out) {
            candle_core::bail!("LoRA part outside the projection's {out} outputs");
        }
        Ok(LoraLinearOp {
            weight: self.weight.clone(),
            parts: self.parts.clone(),
            rank: self.rank,
            scale: self.scale,
            out,
            inp,
            low: Mutex::new(None),
            keep,
            need_dx,
        })
    }
}

struct LoraLinearOp {
    weight: Tensor,
    parts: Vec<(usize, usize)>,
    rank: usize,
    scale: f32,
    out: usize,
    inp: usize,
    /// `x · Aᵀ`, `n × parts·r`, kept for `B`'s gradient.
    low: Mutex<Option<Vec<f32>>>,
    /// Whether `x` is in the graph: the first layer's input (the embedding) is not, and its
    /// gradient, a full-size GEMM, is skipped.
    need_dx: bool,
    /// Whether a backward pass may follow (else `low` is not kept).
    keep: bool,
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "lora-linear"
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
        let (x, a, b) = (
            input_slice(s1, l1)?,
            input_slice(s2, l2)?,
            input_slice(s3, l3)?,
        );
        let y = self.forward(x, a, b)?;
        Ok((
            CpuStorage::F32(y),
            Shape::from((x.len() / self.inp, self.out)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xv, av, bv, g) = (values(x)?, values(a)?, values(b)?, values(grad)?);
        let (dx, da, db) = self.backward(&xv, &av, &bv, &g)?;
        let device = grad.device();
        let n = g.len() / self.out;
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, (n, self.inp), device))
                .transpose()?,
            Some(Tensor::from_vec(da, a.shape(), device)?),
            Some(Tensor::from_vec(db, b.shape(), device)?),
        ))
    }
}

impl LoraLinearOp {
    fn forward(&self, x: &[f32], a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
        let (out, inp, r) = (self.out, self.inp, self.rank);
        let n = x.len() / inp;
        let pr = self.parts.len() * r;
        let mut y = linear(&self.weight, x, n, out, inp)?;
        let mut low = vec![0f32; n * pr];
        blas::gemm(n, pr, inp, 1.0, x, N, a, T, &mut low, false)?;
        // y[:, part] += scale · low[:, part's r columns] · Bₚᵀ (strided views of y and low).
        let mut b_row = 0;
        for (i, &(offset, width)) in self.parts.iter().enumerate() {
            blas::gemm_strided(
                blas::Strided {
                    m: n,
                    n: width,
                    k: r,
                    alpha: self.scale,
                },
                (&low[i * r..], N, pr),
                (&b[b_row * r..], T, r),
                (&mut y[offset..], out),
                true,
            )?;
            b_row += width;
        }
        if self.keep {
            *lock(&self.low) = Some(low);
        }
        Ok(y)
    }

    /// The gradients of `x` (unless it is outside the graph), `A` and `B` from `g`.
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        xv: &[f32],
        av: &[f32],
        bv: &[f32],
        g: &[f32],
    ) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>)> {
        let Some(low) = lock(&self.low).take() else {
            candle_core::bail!("lora-linear backward run twice or without a forward")
        };
        let (out, inp, r) = (self.out, self.inp, self.rank);
        let n = g.len() / out;
        let pr = self.parts.len() * r;
        // d_low[:, part] = scale · g[:, part] · Bₚ; dBₚ = scale · g[:, part]ᵀ · low[:, part].
        let mut d_low = vec![0f32; n * pr];
        let mut db = vec![0f32; bv.len()];
        let mut b_row = 0;
        for (i, &(offset, width)) in self.parts.iter().enumerate() {
            blas::gemm_strided(
                blas::Strided {
                    m: n,
                    n: r,
                    k: width,
                    alpha: self.scale,
                },
                (&g[offset..], N, out),
                (&bv[b_row * r..], N, r),
                (&mut d_low[i * r..], pr),
                false,
            )?;
            blas::gemm_strided(
                blas::Strided {
                    m: width,
                    n: r,
                    k: n,
                    alpha: self.scale,
                },
                (&g[offset..], T, out),
                (&low[i * r..], N, pr),
                (&mut db[b_row * r..], r),
                false,
            )?;
            b_row += width;
        }
        // dA = d_lowᵀ · x; dx = g · W + d_low · A.
        let mut da = vec![0f32; pr * inp];
        blas::gemm(pr, inp, n, 1.0, &d_low, T, xv, N, &mut da, false)?;
        let dx = if self.need_dx {
            let mut dx = vec![0f32; n * inp];
            with_values(&self.weight, |w| {
                blas::gemm(n, inp, out, 1.0, g, N, w, N, &mut dx, false)
            })?;
            blas::gemm(n, inp, pr, 1.0, &d_low, N, av, N, &mut dx, true)?;
            Some(dx)
        } else {
            None
        };
        Ok((dx, da, db))
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
        let op = self.op(x.track_op())?;
        if x.track_op() {
            x.apply_op1(op)
        } else {
            x.apply_op1_no_bwd(&op)
        }
    }
}

impl FrozenMlp {
    fn op(&self, keep: bool) -> Result<MlpOp> {
        let (d, ffn) = self.down.dims2()?;
        Ok(MlpOp {
            gate_up: self.gate_up.clone(),
            down: self.down.clone(),
            d,
            ffn,
            saved: Mutex::new(None),
            keep,
        })
    }
}

struct MlpOp {
    gate_up: Tensor,
    down: Tensor,
    d: usize,
    ffn: usize,
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
        let x = input_slice(storage, layout)?;
        let out = self.forward(x)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((x.len() / self.d, self.d)),
        ))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = values(grad)?;
        let dx = self.backward(&g)?;
        Tensor::from_vec(dx, (g.len() / self.d, self.d), grad.device()).map(Some)
    }
}

impl MlpOp {
    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (d, ffn) = (self.d, self.ffn);
        let n = x.len() / d;
        let gu = linear(&self.gate_up, x, n, 2 * ffn, d)?;
        let act = swiglu_forward(&gu, ffn);
        let out = linear(&self.down, &act, n, d, ffn)?;
        if self.keep {
            *lock(&self.saved) = Some(gu);
        }
        Ok(out)
    }

    fn backward(&self, g: &[f32]) -> Result<Vec<f32>> {
        let Some(gu) = lock(&self.saved).take() else {
            candle_core::bail!("mlp backward run twice or without a forward")
        };
        let (d, ffn) = (self.d, self.ffn);
        let n = g.len() / d;
        let mut d_act = vec![0f32; n * ffn];
        with_values(&self.down, |w| {
            blas::gemm(n, ffn, d, 1.0, g, N, w, N, &mut d_act, false)
        })?;
        let mut d_gu = vec![0f32; n * 2 * ffn];
        swiglu_backward(&gu, &d_act, &mut d_gu, ffn);
        drop(d_act);
        let mut dx = vec![0f32; n * d];
        with_values(&self.gate_up, |w| {
            blas::gemm(n, d, 2 * ffn, 1.0, &d_gu, N, w, N, &mut dx, false)
        })?;
        Ok(dx)
    }
}

/// `silu(gate) ⊙ up` over the fused gate/up projection `(n, 2·ffn)` (gate columns first), as
/// one op: the MLP's activation when its projections carry LoRA (without, [`FrozenMlp`] runs
/// the whole MLP).
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    let gate_up = gate_up.contiguous()?;
    let (_, width) = gate_up.dims2()?;
    if !width.is_multiple_of(2) {
        candle_core::bail!("gate/up projection of odd width {width}");
    }
    let op = SwiGluOp { ffn: width / 2 };
    if gate_up.track_op() {
        gate_up.apply_op1(op)
    } else {
        gate_up.apply_op1_no_bwd(&op)
    }
}

struct SwiGluOp {
    ffn: usize,
}

impl CustomOp1 for SwiGluOp {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let gu = input_slice(storage, layout)?;
        let act = swiglu_forward(gu, self.ffn);
        Ok((
            CpuStorage::F32(act),
            Shape::from((gu.len() / (2 * self.ffn), self.ffn)),
        ))
    }

    fn bwd(&self, gate_up: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let ffn = self.ffn;
        let d_act = values(grad)?;
        let mut d_gu = vec![0f32; 2 * d_act.len()];
        with_values(gate_up, |gu| {
            swiglu_backward(gu, &d_act, &mut d_gu, ffn);
            Ok(())
        })?;
        Tensor::from_vec(d_gu, gate_up.shape(), grad.device()).map(Some)
    }
}

/// `silu(g) ⊙ u` of every gate/up row of `gu`.
fn swiglu_forward(gu: &[f32], ffn: usize) -> Vec<f32> {
    let mut act = vec![0f32; gu.len() / 2];
    act.par_chunks_mut(ffn)
        .zip(gu.par_chunks(2 * ffn))
        .for_each(|(a, row)| {
            let (g, u) = row.split_at(ffn);
            for j in 0..ffn {
                a[j] = g[j] * sigmoid(g[j]) * u[j];
            }
        });
    act
}

/// The gradient of `silu(g) ⊙ u` with respect to the gate/up rows `gu`, given `d_act`.
fn swiglu_backward(gu: &[f32], d_act: &[f32], d_gu: &mut [f32], ffn: usize) {
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
}

/// RMSNorm with a frozen scale; `x` is `(n, d)`.
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let op = RmsNormOp {
        scale: values(scale)?,
        eps,
    };
    if x.track_op() {
        x.apply_op1(op)
    } else {
        x.apply_op1_no_bwd(&op)
    }
}

struct RmsNormOp {
    scale: Vec<f32>,
    eps: f32,
}

impl RmsNormOp {
    /// `(mean(x²) + eps)^-½` of one row.
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ss: f32 = row.iter().map(|v| v * v).sum();
        1.0 / (ss / row.len() as f32 + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = self.forward(input_slice(storage, layout)?);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = values(grad)?;
        let dx = with_values(x, |x| Ok(self.backward(x, &g)))?;
        Tensor::from_vec(dx, x.shape(), grad.device()).map(Some)
    }
}

impl RmsNormOp {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let d = self.scale.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
            let r = self.inv_rms(x);
            for ((y, x), w) in y.iter_mut().zip(x).zip(&self.scale) {
                *y = x * r * w;
            }
        });
        y
    }

    // y = x·r·w with r = (mean(x²) + eps)^-½, so
    // dx = r·(g·w) − x·r³·mean(g·w·x) over the last dimension.
    fn backward(&self, x: &[f32], g: &[f32]) -> Vec<f32> {
        let d = self.scale.len();
        let mut dx = vec![0f32; g.len()];
        dx.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .zip(g.par_chunks(d))
            .for_each(|((dx, x), g)| {
                let r = self.inv_rms(x);
                let dot: f32 = g
                    .iter()
                    .zip(&self.scale)
                    .zip(x)
                    .map(|((g, w), x)| g * w * x)
                    .sum::<f32>()
                    / d as f32;
                let c = dot * r * r * r;
                for (((dx, g), w), x) in dx.iter_mut().zip(g).zip(&self.scale).zip(x) {
                    *dx = r * g * w - x * c;
                }
            });
        dx
    }
}

/// Causal grouped-query self-attention with interleaved RoPE, from the fused projection
/// `qkv` (`n × (heads + 2·kv_heads)·hd`: q, then k, then v columns) of `rows` sequences of
/// `len` tokens to the heads' outputs (`n × heads·hd`), as one op: rotations, score and value
/// products and the softmax run per (sequence, head) on plain buffers, and the backward pass
/// is written out, keeping only the attention weights (rotations are recomputed).
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
    pub fn forward(&self, qkv: &Tensor) -> Result<Tensor> {
        let qkv = qkv.contiguous()?;
        let width = (self.heads + 2 * self.kv_heads) * self.head_dim;
        if qkv.dims() != [self.rows * self.len, width] {
            candle_core::bail!("attention input {:?}, expected width {width}", qkv.dims());
        }
        let op = self.op(qkv.track_op())?;
        if op.keep {
            qkv.apply_op1(op)
        } else {
            qkv.apply_op1_no_bwd(&op)
        }
    }

    fn op(&self, keep: bool) -> Result<AttentionOp> {
        let half = self.head_dim / 2;
        if self.cos.dims() != [self.len, half]
            || self.sin.dims() != [self.len, half]
            || self.kv_heads == 0
            || !self.heads.is_multiple_of(self.kv_heads)
        {
            candle_core::bail!(
                "attention shapes: {} heads, {} kv heads, rope {:?}",
                self.heads,
                self.kv_heads,
                self.cos.dims()
            );
        }
        Ok(AttentionOp {
            rows: self.rows,
            len: self.len,
            heads: self.heads,
            kv_heads: self.kv_heads,
            hd: self.head_dim,
            cos: values(&self.cos)?,
            sin: values(&self.sin)?,
            saved: Mutex::new(None),
            keep,
        })
    }
}

struct AttentionOp {
    rows: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The attention weights of each (sequence, head), `len × len`, for the backward pass.
    saved: Mutex<Option<Vec<Vec<f32>>>>,
    keep: bool,
}

impl AttentionOp {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.hd
    }

    /// Copies head `col` (a column offset into a `qkv`-like row) of every token of sequence
    /// `row` into a `len × hd` buffer, rotated by `sign·θ` when `rotate`.
    fn gather(
        &self,
        src: &[f32],
        stride: usize,
        row: usize,
        col: usize,
        rotate: Option<f32>,
    ) -> Vec<f32> {
        let (len, hd) = (self.len, self.hd);
        let half = hd / 2;
        let mut out = vec![0f32; len * hd];
        for (t, o) in out.chunks_mut(hd).enumerate() {
            let s = &src[(row * len + t) * stride + col..][..hd];
            match rotate {
                Some(sign) => {
                    let (cos, sin) = (&self.cos[t * half..][..half], &self.sin[t * half..][..half]);
                    for i in 0..half {
                        let (a, b) = (s[2 * i], s[2 * i + 1]);
                        let (c, sn) = (cos[i], sign * sin[i]);
                        o[2 * i] = a * c - b * sn;
                        o[2 * i + 1] = a * sn + b * c;
                    }
                }
                None => o.copy_from_slice(s),
            }
        }
        out
    }

    /// Rotates every `hd`-row of a `len × hd` buffer by `−θ` in place (the backward of RoPE).
    fn unrotate(&self, buf: &mut [f32]) {
        let half = self.hd / 2;
        for (t, o) in buf.chunks_mut(self.hd).enumerate() {
            let (cos, sin) = (&self.cos[t * half..][..half], &self.sin[t * half..][..half]);
            for i in 0..half {
                let (a, b) = (o[2 * i], o[2 * i + 1]);
                o[2 * i] = a * cos[i] + b * sin[i];
                o[2 * i + 1] = -a * sin[i] + b * cos[i];
            }
        }
    }

    /// (sequence, query head, its kv head) of every task.
    fn tasks(&self) -> Vec<(usize, usize, usize)> {
        let n_rep = self.heads / self.kv_heads;
        (0..self.rows)
            .flat_map(|b| (0..self.heads).map(move |h| (b, h, h / n_rep)))
            .collect()
    }
}

/// Query blocks `[r0, r1)` of a causal attention over `len` tokens: block `[r0, r1)` needs
/// keys `0..r1` only, so the score and value products skip the masked upper triangle (about
/// half of the work at long sequences).
fn causal_blocks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    const BLOCK: usize = 64;
    (0..len)
        .step_by(BLOCK)
        .map(move |r0| (r0, (r0 + BLOCK).min(len)))
}

/// A product's shape with factor 1.
fn shape(m: usize, n: usize, k: usize) -> blas::Strided {
    blas::Strided {
        m,
        n,
        k,
        alpha: 1.0,
    }
}

/// In place over the `len × len` scores of one head: row `t` sees keys `0..=t`; the rest get
/// weight 0.
fn causal_softmax(scores: &mut [f32], len: usize, scale: f32) {
    for (t, row) in scores.chunks_mut(len).enumerate() {
        let (seen, hidden) = row.split_at_mut(t + 1);
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
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = self.forward(input_slice(storage, layout)?)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((self.rows * self.len, self.heads * self.hd)),
        ))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dy = values(grad)?;
        let d_qkv = with_values(qkv, |qkv| self.backward(qkv, &dy))?;
        Tensor::from_vec(d_qkv, qkv.shape(), grad.device()).map(Some)
    }
}

impl AttentionOp {
    fn forward(&self, qkv: &[f32]) -> Result<Vec<f32>> {
        let (len, hd, width) = (self.len, self.hd, self.width());
        let scale = 1.0 / (hd as f32).sqrt();
        let k_col = self.heads * hd;
        let v_col = k_col + self.kv_heads * hd;
        let results = self
            .tasks()
            .into_par_iter()
            .map(|(b, h, g)| -> Result<(Vec<f32>, Vec<f32>)> {
                let q = self.gather(qkv, width, b, h * hd, Some(1.0));
                let k = self.gather(qkv, width, b, k_col + g * hd, Some(1.0));
                let v = self.gather(qkv, width, b, v_col + g * hd, None);
                // Query block [r0, r1) sees keys [0, r1): the products skip the masked part.
                let mut att = vec![0f32; len * len];
                for (r0, r1) in causal_blocks(len) {
                    let rows = r1 - r0;
                    blas::gemm_block(
                        shape(rows, r1, hd),
                        (&q[r0 * hd..], N, hd),
                        (&k, T, hd),
                        (&mut att[r0 * len..], len),
                        false,
                    )?;
                }
                causal_softmax(&mut att, len, scale);
                let mut y = vec![0f32; len * hd];
                for (r0, r1) in causal_blocks(len) {
                    blas::gemm_block(
                        shape(r1 - r0, hd, r1),
                        (&att[r0 * len..], N, len),
                        (&v, N, hd),
                        (&mut y[r0 * hd..], hd),
                        false,
                    )?;
                }
                Ok((y, att))
            })
            .collect::<Result<Vec<_>>>()?;
        let ycols = self.heads * hd;
        let mut out = vec![0f32; self.rows * len * ycols];
        let mut saved = Vec::with_capacity(if self.keep { results.len() } else { 0 });
        for ((b, h, _), (y, att)) in self.tasks().into_iter().zip(results) {
            for (t, src) in y.chunks(hd).enumerate() {
                out[(b * len + t) * ycols + h * hd..][..hd].copy_from_slice(src);
            }
            if self.keep {
                saved.push(att);
            }
        }
        if self.keep {
            *lock(&self.saved) = Some(saved);
        }
        Ok(out)
    }

    /// The gradient of the fused q/k/v input from `dy`.
    fn backward(&self, qkv: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
        let Some(saved) = lock(&self.saved).take() else {
            candle_core::bail!("attention backward run twice or without a forward")
        };
        let (len, hd, width) = (self.len, self.hd, self.width());
        let scale = 1.0 / (hd as f32).sqrt();
        let k_col = self.heads * hd;
        let v_col = k_col + self.kv_heads * hd;
        let ycols = self.heads * hd;
        let tasks = self.tasks();
        let results = {
            tasks
                .par_iter()
                .zip(saved.par_iter())
                .map(|(&(b, h, g), att)| -> Result<[Vec<f32>; 3]> {
                    let q = self.gather(qkv, width, b, h * hd, Some(1.0));
                    let k = self.gather(qkv, width, b, k_col + g * hd, Some(1.0));
                    let v = self.gather(qkv, width, b, v_col + g * hd, None);
                    let dyh = self.gather(dy, ycols, b, h * hd, None);
                    // d_att = dy · vᵀ; dv = attᵀ · dy (block by block, as forward).
                    let mut ds = vec![0f32; len * len];
                    let mut dv = vec![0f32; len * hd];
                    for (r0, r1) in causal_blocks(len) {
                        let rows = r1 - r0;
                        blas::gemm_block(
                            shape(rows, r1, hd),
                            (&dyh[r0 * hd..], N, hd),
                            (&v, T, hd),
                            (&mut ds[r0 * len..], len),
                            false,
                        )?;
                        blas::gemm_block(
                            shape(r1, hd, rows),
                            (&att[r0 * len..], T, len),
                            (&dyh[r0 * hd..], N, hd),
                            (&mut dv, hd),
                            true,
                        )?;
                    }
                    // d_scores = (d_att − Σ d_att·att) · att · scale, row by row.
                    for (d, a) in ds.chunks_mut(len).zip(att.chunks(len)) {
                        let dot: f32 = d.iter().zip(a).map(|(d, a)| d * a).sum();
                        for (d, a) in d.iter_mut().zip(a) {
                            *d = (*d - dot) * a * scale;
                        }
                    }
                    // dq = d_scores · k; dk = d_scoresᵀ · q; both rotated back.
                    let mut dq = vec![0f32; len * hd];
                    let mut dk = vec![0f32; len * hd];
                    for (r0, r1) in causal_blocks(len) {
                        let rows = r1 - r0;
                        blas::gemm_block(
                            shape(rows, hd, r1),
                            (&ds[r0 * len..], N, len),
                            (&k, N, hd),
                            (&mut dq[r0 * hd..], hd),
                            false,
                        )?;
                        blas::gemm_block(
                            shape(r1, hd, rows),
                            (&ds[r0 * len..], T, len),
                            (&q[r0 * hd..], N, hd),
                            (&mut dk, hd),
                            true,
                        )?;
                    }
                    self.unrotate(&mut dq);
                    self.unrotate(&mut dk);
                    Ok([dq, dk, dv])
                })
                .collect::<Result<Vec<_>>>()?
        };
        let mut d_qkv = vec![0f32; self.rows * len * width];
        for (&(b, h, g), [dq, dk, dv]) in tasks.iter().zip(&results) {
            for t in 0..len {
                let row = &mut d_qkv[(b * len + t) * width..][..width];
                row[h * hd..][..hd].copy_from_slice(&dq[t * hd..][..hd]);
                for (o, s) in row[k_col + g * hd..][..hd]
                    .iter_mut()
                    .zip(&dk[t * hd..][..hd])
                {
                    *o += s;
                }
                for (o, s) in row[v_col + g * hd..][..hd]
                    .iter_mut()
                    .zip(&dv[t * hd..][..hd])
                {
                    *o += s;
                }
            }
        }
        Ok(d_qkv)
    }
}

/// A projection group inside a [`layer`]: frozen, or with the LoRA branches of its adapted
/// parts (whose stacked `A` and `B` come from the layer's flat LoRA input, in order).
pub enum ProjSpec<'a> {
    Frozen(&'a FrozenLinear),
    Lora(&'a LoraLinear),
}

/// The MLP inside a [`layer`]: frozen as a whole, or gate/up and down with their own specs.
pub enum MlpSpec<'a> {
    Frozen(&'a FrozenMlp),
    Split {
        gate_up: ProjSpec<'a>,
        down: ProjSpec<'a>,
    },
}

/// What one transformer layer is made of.
pub struct LayerSpec<'a> {
    pub attn_norm: &'a Tensor,
    pub ffn_norm: &'a Tensor,
    pub eps: f32,
    pub qkv: ProjSpec<'a>,
    pub o: ProjSpec<'a>,
    pub mlp: MlpSpec<'a>,
    pub attention: &'a Attention,
}

/// One pre-norm llama layer over the residual stream `x` (`n × d`) as a single op:
/// `x₁ = x + o(attention(qkv(norm(x))))`, `x₂ = x₁ + mlp(norm(x₁))`. `lora` is every adapted
/// group's stacked `A` then stacked `B`, flattened and concatenated in the order q/k/v, o,
/// gate/up, down (`None` when no group is adapted). The sub-ops are the ones above, run on the
/// op's own buffers; what candle records is one node per layer, so the backward pass makes one
/// residual-stream gradient per layer instead of a dozen (each a zeroed buffer plus a parallel
/// add), and the residual adds cost no parallel region at all.
pub fn layer(spec: &LayerSpec, x: &Tensor, lora: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (n, d) = x.dims2()?;
    let lora_tracked = lora.is_some_and(|l| l.track_op());
    let keep = x.track_op() || lora_tracked;
    let mut offset = 0;
    let mut proj = |p: &ProjSpec, need_dx: bool| -> Result<ProjOp> {
        Ok(match p {
            ProjSpec::Frozen(f) => ProjOp::Frozen(FrozenLinearOp {
                weight: f.weight.clone(),
                out: f.out,
                inp: f.inp,
            }),
            ProjSpec::Lora(l) => {
                let (a, b) = l.lora_sizes()?;
                let op = l.op(keep, need_dx)?;
                let ranges = (offset..offset + a, offset + a..offset + a + b);
                offset += a + b;
                ProjOp::Lora(op, ranges.0, ranges.1)
            }
        })
    };
    let qkv = proj(&spec.qkv, x.track_op())?;
    let o = proj(&spec.o, true)?;
    let mlp = match &spec.mlp {
        MlpSpec::Frozen(m) => LayerMlp::Frozen(m.op(keep)?),
        MlpSpec::Split { gate_up, down } => LayerMlp::Split {
            gate_up: proj(gate_up, true)?,
            down: proj(down, true)?,
        },
    };
    let lora_len = lora.map_or(0, |l| l.elem_count());
    if offset != lora_len {
        candle_core::bail!("the layer's LoRA input holds {lora_len} values, its groups {offset}");
    }
    let op = LayerOp {
        rms1: RmsNormOp {
            scale: values(spec.attn_norm)?,
            eps: spec.eps,
        },
        rms2: RmsNormOp {
            scale: values(spec.ffn_norm)?,
            eps: spec.eps,
        },
        qkv,
        o,
        mlp,
        attention: spec.attention.op(keep)?,
        d,
        need_dx: x.track_op(),
        keep,
        saved: Mutex::new(None),
    };
    if op.rms1.scale.len() != d || spec.attention.rows * spec.attention.len != n {
        candle_core::bail!("layer input {:?} does not fit the layer", x.dims());
    }
    // Without LoRA the op still takes a second input: an untracked empty tensor.
    let lora = match lora {
        Some(l) => l.contiguous()?,
        None => Tensor::zeros(0, candle_core::DType::F32, x.device())?,
    };
    if keep {
        x.apply_op2(&lora, op)
    } else {
        x.apply_op2_no_bwd(&lora, &op)
    }
}

enum ProjOp {
    Frozen(FrozenLinearOp),
    /// The op and the ranges of its stacked `A` and `B` in the layer's LoRA input.
    Lora(LoraLinearOp, std::ops::Range<usize>, std::ops::Range<usize>),
}

impl ProjOp {
    fn forward(&self, x: &[f32], lora: &[f32]) -> Result<Vec<f32>> {
        match self {
            ProjOp::Frozen(op) => op.forward(x),
            ProjOp::Lora(op, a, b) => op.forward(x, &lora[a.clone()], &lora[b.clone()]),
        }
    }

    /// `x`'s gradient (`None` where not needed); LoRA gradients go to their ranges of `d_lora`.
    fn backward(
        &self,
        x: &[f32],
        lora: &[f32],
        g: &[f32],
        d_lora: &mut [f32],
    ) -> Result<Option<Vec<f32>>> {
        match self {
            ProjOp::Frozen(op) => op.input_grad(g).map(Some),
            ProjOp::Lora(op, a, b) => {
                let (dx, da, db) = op.backward(x, &lora[a.clone()], &lora[b.clone()], g)?;
                d_lora[a.clone()].copy_from_slice(&da);
                d_lora[b.clone()].copy_from_slice(&db);
                Ok(dx)
            }
        }
    }
}

enum LayerMlp {
    Frozen(MlpOp),
    Split { gate_up: ProjOp, down: ProjOp },
}

struct LayerOp {
    rms1: RmsNormOp,
    rms2: RmsNormOp,
    qkv: ProjOp,
    o: ProjOp,
    mlp: LayerMlp,
    attention: AttentionOp,
    d: usize,
    /// Whether the layer's input is in the graph (not for the first layer).
    need_dx: bool,
    keep: bool,
    saved: Mutex<Option<LayerSaved>>,
}

/// The intermediate values the backward pass reads.
struct LayerSaved {
    h1: Vec<f32>,
    qkv: Vec<f32>,
    y: Vec<f32>,
    x1: Vec<f32>,
    h2: Vec<f32>,
    /// Gate/up pre-activations and the activation, for a split MLP.
    gu_act: Option<(Vec<f32>, Vec<f32>)>,
}

fn add_into(acc: &mut [f32], v: &[f32]) {
    for (a, v) in acc.iter_mut().zip(v) {
        *a += v;
    }
}

impl CustomOp2 for LayerOp {
    fn name(&self) -> &'static str {
        "llama-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, lora) = (input_slice(s1, l1)?, input_slice(s2, l2)?);
        let h1 = self.rms1.forward(x);
        let qkv = self.qkv.forward(&h1, lora)?;
        let y = self.attention.forward(&qkv)?;
        let mut x1 = self.o.forward(&y, lora)?;
        add_into(&mut x1, x);
        let h2 = self.rms2.forward(&x1);
        let (mut x2, gu_act) = match &self.mlp {
            LayerMlp::Frozen(op) => (op.forward(&h2)?, None),
            LayerMlp::Split { gate_up, down } => {
                let gu = gate_up.forward(&h2, lora)?;
                let rows = x.len() / self.d;
                let act = swiglu_forward(&gu, gu.len() / (2 * rows));
                (down.forward(&act, lora)?, Some((gu, act)))
            }
        };
        add_into(&mut x2, &x1);
        if self.keep {
            *lock(&self.saved) = Some(LayerSaved {
                h1,
                qkv,
                y,
                x1,
                h2,
                gu_act,
            });
        }
        Ok((CpuStorage::F32(x2), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        lora: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = lock(&self.saved).take() else {
            candle_core::bail!("layer backward run twice or without a forward")
        };
        let g = values(grad)?;
        let lora_v = values(lora)?;
        let mut d_lora = vec![0f32; lora_v.len()];
        let need = |what: &str, v: Option<Vec<f32>>| {
            v.ok_or_else(|| candle_core::Error::Msg(format!("layer backward: no {what} gradient")))
        };
        // x₂ = x₁ + mlp(norm(x₁)).
        let dh2 = match &self.mlp {
            LayerMlp::Frozen(op) => op.backward(&g)?,
            LayerMlp::Split { gate_up, down } => {
                let Some((gu, act)) = &saved.gu_act else {
                    candle_core::bail!("layer backward: the MLP activations were not kept")
                };
                let d_act = need("activation", down.backward(act, &lora_v, &g, &mut d_lora)?)?;
                let mut d_gu = vec![0f32; gu.len()];
                swiglu_backward(gu, &d_act, &mut d_gu, act.len() / (g.len() / self.d));
                need(
                    "MLP input",
                    gate_up.backward(&saved.h2, &lora_v, &d_gu, &mut d_lora)?,
                )?
            }
        };
        let mut dx1 = g;
        add_into(&mut dx1, &self.rms2.backward(&saved.x1, &dh2));
        // x₁ = x + o(attention(qkv(norm(x)))).
        let dy = need(
            "attention output",
            self.o.backward(&saved.y, &lora_v, &dx1, &mut d_lora)?,
        )?;
        let d_qkv = self.attention.backward(&saved.qkv, &dy)?;
        let dh1 = self.qkv.backward(&saved.h1, &lora_v, &d_qkv, &mut d_lora)?;
        let dx = match dh1 {
            Some(dh1) if self.need_dx => {
                let mut dx = with_values(x, |x| Ok(self.rms1.backward(x, &dh1)))?;
                add_into(&mut dx, &dx1);
                Some(Tensor::from_vec(dx, x.shape(), grad.device())?)
            }
            _ => None,
        };
        let d_lora = (lora.elem_count() > 0)
            .then(|| Tensor::from_vec(d_lora, lora.shape(), grad.device()))
            .transpose()?;
        Ok((dx, d_lora))
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
        let (vocab, d) = self.weight.dims2()?;
        let op = LmHeadOp {
            weight: self.weight.clone(),
            vocab,
            d,
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
        let (vocab, d) = self.weight.dims2()?;
        let h = values(&h.contiguous()?)?;
        let n = h.len() / d;
        let logits = linear(&self.weight, &h, n, vocab, d)?;
        Tensor::from_vec(logits, (n, vocab), self.weight.device())
    }
}

struct LmHeadOp {
    weight: Tensor,
    vocab: usize,
    d: usize,
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
        let h = input_slice(storage, layout)?;
        let (vocab, d) = (self.vocab, self.d);
        let n = h.len() / d;
        let mut logits = linear(&self.weight, h, n, vocab, d)?;
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
            *lock(&self.probs) = Some(logits);
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    // d logp[t] / d logits = onehot(t) − softmax; then through the frozen projection.
    fn bwd(&self, _h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(mut probs) = lock(&self.probs).take() else {
            candle_core::bail!("lm-head backward run twice or without a forward")
        };
        let (vocab, d) = (self.vocab, self.d);
        let g = grad.to_vec1::<f32>()?;
        let n = g.len();
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
        let mut dh = vec![0f32; n * d];
        with_values(&self.weight, |w| {
            blas::gemm(n, d, vocab, 1.0, &probs, N, w, N, &mut dh, false)
        })?;
        Tensor::from_vec(dh, (n, d), grad.device()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    //! Shapes the model-level finite-difference test in `tests/train.rs` does not reach: several
    //! causal blocks (sequences longer than 64 tokens) and LoRA on part of a group.

    use super::*;
    use candle_core::{Device, Var};

    fn values_from(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Central differences of `sum(f(x) ⊙ w)` against the backward pass on entries of `x`.
    fn gradient_matches(x: Vec<f32>, shape: (usize, usize), f: impl Fn(&Tensor) -> Tensor) {
        let dev = Device::Cpu;
        let var = Var::from_vec(x.clone(), shape, &dev).unwrap();
        let out = f(var.as_tensor());
        let w = Tensor::from_vec(values_from(out.elem_count(), 7), out.shape(), &dev).unwrap();
        let grads = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let loss_at = |v: Vec<f32>| -> f64 {
            let t = Tensor::from_vec(v, shape, &dev).unwrap();
            let out = f(&t).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            out.iter().zip(&w).map(|(o, w)| (o * w) as f64).sum()
        };
        let eps = 1e-2f32;
        for j in (0..x.len()).step_by(x.len() / 29 + 1) {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[j] += eps;
            minus[j] -= eps;
            let numeric = (loss_at(plus) - loss_at(minus)) / (2.0 * eps as f64);
            let analytic = g[j] as f64;
            assert!(
                (numeric - analytic).abs() <= 0.02 * numeric.abs().max(analytic.abs()) + 2e-3,
                "entry {j}: analytic {analytic}, numeric {numeric}"
            );
        }
    }

    fn attention(rows: usize, len: usize) -> Attention {
        let half = 2;
        let angles: Vec<f32> = (0..len * half)
            .map(|i| (i / half) as f32 * 0.3 / (1 + i % half) as f32)
            .collect();
        let table = |f: fn(f32) -> f32| {
            let v: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
            Tensor::from_vec(v, (len, half), &Device::Cpu).unwrap()
        };
        Attention {
            rows,
            len,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            cos: table(f32::cos),
            sin: table(f32::sin),
        }
    }

    #[test]
    fn blocked_causal_attention_matches_the_plain_formula_and_its_gradient() {
        let (rows, len, hd) = (2, 150, 4);
        let att = attention(rows, len);
        let width = 4 * hd;
        let qkv = values_from(rows * len * width, 3);
        let x = Tensor::from_vec(qkv.clone(), (rows * len, width), &Device::Cpu).unwrap();
        let y: Vec<f32> = att
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The plain formula, position by position.
        let (cos, sin) = (values(&att.cos).unwrap(), values(&att.sin).unwrap());
        let rot = |v: &[f32], t: usize| -> Vec<f32> {
            let mut o = v.to_vec();
            for i in 0..hd / 2 {
                let (c, s) = (cos[t * 2 + i], sin[t * 2 + i]);
                o[2 * i] = v[2 * i] * c - v[2 * i + 1] * s;
                o[2 * i + 1] = v[2 * i] * s + v[2 * i + 1] * c;
            }
            o
        };
        let at = |b: usize, t: usize, col: usize| &qkv[(b * len + t) * width + col..][..hd];
        for b in 0..rows {
            for h in 0..2 {
                for t in [0, 1, 63, 64, 65, 127, 128, 149] {
                    let q = rot(at(b, t, h * hd), t);
                    let scores: Vec<f32> = (0..=t)
                        .map(|s| {
                            let k = rot(at(b, s, 2 * hd), s);
                            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>() / 2.0
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f32 = e.iter().sum();
                    for i in 0..hd {
                        let want: f32 = (0..=t).map(|s| e[s] / z * at(b, s, 3 * hd)[i]).sum();
                        let got = y[(b * len + t) * 2 * hd + h * hd + i];
                        assert!((got - want).abs() < 1e-5, "b{b} h{h} t{t}: {got} vs {want}");
                    }
                }
            }
        }
        gradient_matches(qkv, (rows * len, width), |x| att.forward(x).unwrap());
    }

    #[test]
    fn lora_linear_gradients_match_finite_differences() {
        // Three parts of widths 3, 5, 4; LoRA on the first and the last.
        let (n, inp, r) = (40, 6, 2);
        let dev = Device::Cpu;
        let weight = Tensor::from_vec(values_from(12 * inp, 1), (12, inp), &dev).unwrap();
        let op = LoraLinear {
            weight,
            parts: vec![(0, 3), (8, 4)],
            rank: r,
            scale: 1.5,
        };
        let x = values_from(n * inp, 2);
        let a = values_from(2 * r * inp, 3);
        let b = values_from(7 * r, 4);
        let t = |v: &[f32], s: (usize, usize)| Tensor::from_vec(v.to_vec(), s, &dev).unwrap();
        let (at, bt) = (t(&a, (2 * r, inp)), t(&b, (7, r)));
        gradient_matches(x.clone(), (n, inp), |x| op.forward(x, &at, &bt).unwrap());
        let xt = t(&x, (n, inp));
        gradient_matches(a, (2 * r, inp), |a| op.forward(&xt, a, &bt).unwrap());
        gradient_matches(b, (7, r), |b| op.forward(&xt, &at, b).unwrap());
    }

    #[test]
    fn swiglu_and_rms_norm_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        gradient_matches(values_from(30 * 8, 5), (30, 8), |x| swiglu(x).unwrap());
        let scale = Tensor::from_vec(values_from(8, 6), 8, &dev).unwrap();
        gradient_matches(values_from(30 * 8, 8), (30, 8), |x| {
            rms_norm(x, &scale, 1e-5).unwrap()
        });
    }
}
