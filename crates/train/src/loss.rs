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
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sft" => Ok(Mode::Sft),
            "dpo" => Ok(Mode::Dpo),
            "sft+dpo" | "dpo+sft" => Ok(Mode::SftDpo),
            other => Err(format!("unknown mode `{other}` (sft, dpo, sft+dpo)")),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sft => "sft",
            Mode::Dpo => "dpo",
            Mode::SftDpo => "sft+dpo",
        }
    }

    pub fn uses_dpo(self) -> bool {
        self != Mode::Sft
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
    pub pairs: usize,
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
    let row_sum = |(start, count): (usize, usize)| -> candle_core::Result<Tensor> {
        if count == 0 {
            Tensor::zeros((), DType::F32, &device)
        } else {
            logp.narrow(0, start, count)?.sum_all()
        }
    };
    let nll_weight = match mode {
        Mode::Sft => 1.0,
        Mode::Dpo => 0.0,
        Mode::SftDpo => sft_weight,
    };
    let mut loss = Tensor::zeros((), DType::F32, &device)?;
    let mut parts = LossParts {
        loss: loss.clone(),
        dpo_loss: None,
        nll: None,
        reward_chosen: None,
        reward_rejected: None,
        reward_accuracy: None,
        pairs,
    };
    // Token-level NLL over chosen responses and SFT rows.
    let nll_rows: Vec<(usize, usize)> = spans
        .iter()
        .enumerate()
        .filter(|(r, _)| *r < pairs || *r >= 2 * pairs)
        .map(|(_, &span)| span)
        .collect();
    let nll_tokens: usize = nll_rows.iter().map(|(_, c)| c).sum();
    if nll_tokens > 0 && mode != Mode::Dpo {
        let sums = nll_rows
            .iter()
            .map(|&span| row_sum(span))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let nll = (Tensor::stack(&sums, 0)?.sum_all()? * (-1.0 / nll_tokens as f64))?;
        parts.nll = Some(nll.to_scalar::<f32>()? as f64);
        if nll_weight != 0.0 {
            loss = (loss + (nll * nll_weight)?)?;
        }
    }
    if mode.uses_dpo() && pairs > 0 {
        if reference.len() != 2 * pairs || spans.len() < 2 * pairs {
            candle_core::bail!("{} reference values for {pairs} pairs", reference.len());
        }
        let sums = spans[..2 * pairs]
            .iter()
            .map(|&span| row_sum(span))
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
