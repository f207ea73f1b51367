//! The combined objective: sigmoid DPO plus a weighted NLL of the chosen response, taken on
//! assistant tokens only.
//!
//! For a pair with policy log-probabilities `πc`, `πr` (summed over the response tokens) and
//! reference ones `ρc`, `ρr`, the implicit rewards are `β(πc − ρc)` and `β(πr − ρr)` and the
//! DPO loss is `−log σ(β[(πc − ρc) − (πr − ρr)])`. `--sft-weight w` adds `w · NLL`, where the
//! NLL is the mean negative log-likelihood per token over all chosen-response tokens of the
//! micro-batch: TRL's `rpo_alpha` (RPO, arXiv 2404.19733), the way the DeMoRecon paper
//! combines SFT and DPO in one objective. SFT rows add their tokens to the same NLL.
//!
//! A micro-batch is laid out as `[chosen₀ … chosenₚ₋₁, rejected₀ … rejectedₚ₋₁, sft₀ …]`.
//!
//! KTO ([`kto_loss`], arXiv 2402.01306, as TRL computes it) takes unpaired rows instead,
//! laid out `[kto₀ … ktoₖ₋₁, sft₀ …]`: with the log-ratio `r = π − ρ` of each row and the
//! reference point `z₀` (the batch's mean log-ratio on mismatched prompt/completion pairs,
//! clamped at 0 and not differentiated), a desirable row costs `w_d · (1 − σ(β(r − z₀)))` and
//! an undesirable one `w_u · (1 − σ(β(z₀ − r)))`; the loss is their mean. `sft+kto` adds
//! `sft_weight` × the NLL of the desirable rows (and SFT rows).

use candle_core::{DType, Device, Tensor};

/// Which terms the loss has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// NLL on every row's assistant tokens (pairs contribute their chosen response).
    Sft,
    /// Sigmoid DPO alone.
    Dpo,
    /// DPO + sft_weight × NLL of the chosen responses (and of SFT rows).
    SftDpo,
    /// KTO alone, on unpaired desirable/undesirable rows.
    Kto,
    /// KTO + sft_weight × NLL of the desirable responses (and of SFT rows).
    SftKto,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sft" => Ok(Mode::Sft),
            "dpo" => Ok(Mode::Dpo),
            "sft+dpo" | "dpo+sft" => Ok(Mode::SftDpo),
            "kto" => Ok(Mode::Kto),
            "sft+kto" | "kto+sft" => Ok(Mode::SftKto),
            other => Err(format!(
                "unknown mode `{other}` (sft, dpo, sft+dpo, kto, sft+kto)"
            )),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sft => "sft",
            Mode::Dpo => "dpo",
            Mode::SftDpo => "sft+dpo",
            Mode::Kto => "kto",
            Mode::SftKto => "sft+kto",
        }
    }

    pub fn uses_dpo(self) -> bool {
        matches!(self, Mode::Dpo | Mode::SftDpo)
    }

    pub fn uses_kto(self) -> bool {
        matches!(self, Mode::Kto | Mode::SftKto)
    }

    /// Whether the loss compares the policy with the frozen reference (DPO or KTO).
    pub fn uses_reference(self) -> bool {
        self != Mode::Sft
    }

    /// The weight of the NLL term.
    fn nll_weight(self, sft_weight: f64) -> f64 {
        match self {
            Mode::Sft => 1.0,
            Mode::Dpo | Mode::Kto => 0.0,
            Mode::SftDpo | Mode::SftKto => sft_weight,
        }
    }
}

impl serde::Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The loss and the figures reported alongside it (means over the micro-batch; `None` where a
/// term is absent).
pub struct LossParts {
    pub loss: Tensor,
    pub dpo_loss: Option<f64>,
    pub nll: Option<f64>,
    pub reward_chosen: Option<f64>,
    pub reward_rejected: Option<f64>,
    pub reward_accuracy: Option<f64>,
    /// The KTO term and its reference point (the clamped mismatched-pair log-ratio).
    pub kto_loss: Option<f64>,
    pub kl: Option<f64>,
    pub pairs: usize,
}

impl LossParts {
    fn empty(pairs: usize) -> candle_core::Result<Self> {
        Ok(Self {
            loss: Tensor::zeros((), DType::F32, &Device::Cpu)?,
            dpo_loss: None,
            nll: None,
            reward_chosen: None,
            reward_rejected: None,
            reward_accuracy: None,
            kto_loss: None,
            kl: None,
            pairs,
        })
    }
}

/// The summed log-probability of the row at `span` of `logp`, in position order.
fn row_sum(logp: &Tensor, (start, count): (usize, usize)) -> candle_core::Result<Tensor> {
    if count == 0 {
        Tensor::zeros((), DType::F32, &Device::Cpu)
    } else {
        logp.narrow(0, start, count)?.sum_all()
    }
}

/// The weighted token-level NLL of `rows` (recorded in `parts.nll` wherever the mode has an
/// NLL term), as the loss's starting value.
fn nll_term(
    logp: &Tensor,
    rows: &[(usize, usize)],
    mode: Mode,
    sft_weight: f64,
    parts: &mut LossParts,
) -> candle_core::Result<Tensor> {
    let zero = Tensor::zeros((), DType::F32, &Device::Cpu)?;
    let tokens: usize = rows.iter().map(|(_, c)| c).sum();
    if tokens == 0 || matches!(mode, Mode::Dpo | Mode::Kto) {
        return Ok(zero);
    }
    let sums = rows
        .iter()
        .map(|&span| row_sum(logp, span))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let nll = (Tensor::stack(&sums, 0)?.sum_all()? * (-1.0 / tokens as f64))?;
    parts.nll = Some(nll.to_scalar::<f32>()? as f64);
    let weight = mode.nll_weight(sft_weight);
    if weight == 0.0 {
        Ok(zero)
    } else {
        nll * weight
    }
}

/// The KTO side of a micro-batch: which rows are desirable, their reference sums, the
/// reference point, and the two weights.
pub struct KtoInputs<'a> {
    pub desirable: &'a [bool],
    pub reference: &'a [f32],
    /// The reference point `z₀`, already clamped at 0.
    pub kl: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

/// The KTO loss of a micro-batch laid out `[kto rows…, sft rows…]` (see the module docs).
pub fn kto_loss(
    logp: &Tensor,
    spans: &[(usize, usize)],
    kto: &KtoInputs,
    mode: Mode,
    beta: f64,
    sft_weight: f64,
) -> candle_core::Result<LossParts> {
    let n = kto.desirable.len();
    if kto.reference.len() != n || spans.len() < n {
        candle_core::bail!("{} reference values for {n} KTO rows", kto.reference.len());
    }
    let mut parts = LossParts::empty(0)?;
    let nll_rows: Vec<(usize, usize)> = spans
        .iter()
        .enumerate()
        .filter(|&(r, _)| r >= n || kto.desirable[r])
        .map(|(_, &span)| span)
        .collect();
    let mut loss = nll_term(logp, &nll_rows, mode, sft_weight, &mut parts)?;
    if n == 0 {
        parts.loss = loss;
        return Ok(parts);
    }
    let sums = spans[..n]
        .iter()
        .map(|&span| row_sum(logp, span))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let log_ratio = (Tensor::stack(&sums, 0)? - Tensor::new(kto.reference, &Device::Cpu)?)?;
    // 1 − σ(x) = σ(−x) = exp(−(−log σ(−x))): the stable −log σ, then exp.
    let sign: Vec<f32> = kto
        .desirable
        .iter()
        .map(|&d| if d { 1.0 } else { -1.0 })
        .collect();
    let sign = Tensor::new(sign.as_slice(), &Device::Cpu)?;
    let x = ((log_ratio.affine(1.0, -kto.kl)? * &sign)? * beta)?;
    let row_loss = neg_log_sigmoid(&x.neg()?)?.neg()?.exp()?;
    let weights: Vec<f32> = kto
        .desirable
        .iter()
        .map(|&d| {
            if d {
                kto.desirable_weight as f32
            } else {
                kto.undesirable_weight as f32
            }
        })
        .collect();
    let kto_mean = (row_loss * Tensor::new(weights.as_slice(), &Device::Cpu)?)?.mean_all()?;
    let rewards = (log_ratio * beta)?.to_vec1::<f32>()?;
    let mean_of = |want: bool| {
        let v: Vec<f64> = rewards
            .iter()
            .zip(kto.desirable)
            .filter(|(_, d)| **d == want)
            .map(|(r, _)| *r as f64)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    parts.kto_loss = Some(kto_mean.to_scalar::<f32>()? as f64);
    parts.reward_chosen = mean_of(true);
    parts.reward_rejected = mean_of(false);
    parts.kl = Some(kto.kl);
    loss = (loss + kto_mean)?;
    parts.loss = loss;
    Ok(parts)
}

/// `−log σ(z)` computed stably as `relu(−z) + log(1 + e^{−|z|})`.
pub fn neg_log_sigmoid(z: &Tensor) -> candle_core::Result<Tensor> {
    let soft = ((z.abs()?.neg()?.exp()? + 1.0)?).log()?;
    z.neg()?.relu()? + soft
}

/// The loss of one micro-batch from the per-position log-probabilities `logp`; `spans` gives
/// each row's `(start, count)` in `logp`. `pairs` rows of chosen then `pairs` rows of rejected
/// come first; `reference` holds the reference log-probability sums of those `2 · pairs` rows
/// in the same order. Row sums add a row's values in position order, as the reference pass
/// does, so at initialisation policy and reference agree bit for bit.
pub fn combined_loss(
    logp: &Tensor,
    spans: &[(usize, usize)],
    pairs: usize,
    reference: &[f32],
    mode: Mode,
    beta: f64,
    sft_weight: f64,
) -> candle_core::Result<LossParts> {
    let device = Device::Cpu;
    let mut parts = LossParts::empty(pairs)?;
    // Token-level NLL over chosen responses and SFT rows.
    let nll_rows: Vec<(usize, usize)> = spans
        .iter()
        .enumerate()
        .filter(|(r, _)| *r < pairs || *r >= 2 * pairs)
        .map(|(_, &span)| span)
        .collect();
    let mut loss = nll_term(logp, &nll_rows, mode, sft_weight, &mut parts)?;
    if mode.uses_dpo() && pairs > 0 {
        if reference.len() != 2 * pairs || spans.len() < 2 * pairs {
            candle_core::bail!("{} reference values for {pairs} pairs", reference.len());
        }
        let sums = spans[..2 * pairs]
            .iter()
            .map(|&span| row_sum(logp, span))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let sums = Tensor::stack(&sums, 0)?;
        let reference = Tensor::new(reference, &device)?;
        let log_ratio = (sums - reference)?;
        let chosen = log_ratio.narrow(0, 0, pairs)?;
        let rejected = log_ratio.narrow(0, pairs, pairs)?;
        let z = ((&chosen - &rejected)? * beta)?;
        let dpo = neg_log_sigmoid(&z)?.mean_all()?;
        let rc = (chosen * beta)?.to_vec1::<f32>()?;
        let rr = (rejected * beta)?.to_vec1::<f32>()?;
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        parts.dpo_loss = Some(dpo.to_scalar::<f32>()? as f64);
        parts.reward_chosen = Some(mean(&rc));
        parts.reward_rejected = Some(mean(&rr));
        parts.reward_accuracy =
            Some(rc.iter().zip(&rr).filter(|(c, r)| c > r).count() as f64 / pairs as f64);
        loss = (loss + dpo)?;
    }
    parts.loss = loss;
    Ok(parts)
}
