//! The training loop: reference log-probabilities, micro-batches, gradient accumulation,
//! clipping, AdamW, metrics, checkpoints and resume.
//!
//! Every random choice is a function of the seed and the optimiser step (data order per
//! epoch, LoRA dropout per step), and checkpoints hold the adapter and AdamW's moments bit for
//! bit, so a run stopped after any checkpoint and resumed ends with the same adapter as one
//! that ran straight through.

use crate::checkpoint::{self, CheckpointState};
use crate::data::{Example, Sequence};
use crate::loss::{Mode, combined_loss};
use crate::model::{Adapter, TokenBatch, TrainLlama};
use crate::optim::{self, AdamW, AdamWConfig};
use crate::refcache::{ModelKey, RefCache};
use anyhow::Context as _;
use candle_core::Var;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Settings of the optimisation.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub mode: Mode,
    pub beta: f64,
    pub sft_weight: f64,
    pub lr: f64,
    /// Warm-up steps (linear from 0 to `lr`).
    pub warmup_steps: usize,
    pub epochs: usize,
    /// Examples (pairs or SFT rows) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Global gradient-norm cap (0: none).
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    pub seed: u64,
    /// Checkpoint every this many optimiser steps (0: only at the end).
    pub save_steps: usize,
    pub keep_checkpoints: usize,
    /// Stop (as if interrupted) after this optimiser step; the schedule is unchanged.
    pub stop_after: Option<usize>,
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            mode: Mode::SftDpo,
            beta: 0.1,
            sft_weight: 1.0,
            lr: 2e-4,
            warmup_steps: 0,
            epochs: 3,
            batch_size: 2,
            grad_accum: 1,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            seed: 0,
            save_steps: 50,
            keep_checkpoints: 2,
            stop_after: None,
            progress: false,
        }
    }
}

impl TrainConfig {
    pub fn micro_batches_per_epoch(&self, examples: usize) -> usize {
        examples.div_ceil(self.batch_size.max(1))
    }

    pub fn steps_per_epoch(&self, examples: usize) -> usize {
        self.micro_batches_per_epoch(examples)
            .div_ceil(self.grad_accum.max(1))
    }

    pub fn total_steps(&self, examples: usize) -> usize {
        self.epochs * self.steps_per_epoch(examples)
    }
}

/// One line of `metrics.jsonl`: means over the step's micro-batches; `null` where a figure
/// does not apply (rewards in SFT mode).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub dpo_loss: Option<f64>,
    pub nll: Option<f64>,
    pub reward_chosen: Option<f64>,
    pub reward_rejected: Option<f64>,
    pub reward_margin: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub lr: f64,
    pub tokens_per_s: f64,
}

/// The reference log-probability sums of each example's chosen and rejected sequence
/// (`None` for SFT rows).
pub type References = Vec<Option<(f32, f32)>>;

/// The summed log-probability of each sequence under the frozen base (adapter off), one
/// sequence per forward pass so a value depends on nothing but the sequence. Cached values
/// are reused; new ones are added to the cache.
pub fn reference_logps(
    model: &TrainLlama,
    examples: &[Example],
    key: &ModelKey,
    cache: &mut RefCache,
    progress: bool,
) -> anyhow::Result<References> {
    let missing: Vec<&Sequence> = examples
        .iter()
        .filter_map(|e| match e {
            Example::Pair { chosen, rejected } => Some([chosen, rejected]),
            Example::Sft(_) => None,
        })
        .flatten()
        .filter(|s| cache.get(&key.key(s)).is_none())
        .collect();
    if !missing.is_empty() {
        let bar = bar(progress, missing.len() as u64, "reference log-probs");
        let mut computed = Vec::with_capacity(missing.len());
        for seq in missing {
            computed.push((key.key(seq), sequence_logp(model, seq)?));
            bar.inc(1);
        }
        bar.finish_and_clear();
        cache.insert_all(&computed)?;
    }
    let lookup = |s: &Sequence| {
        cache
            .get(&key.key(s))
            .ok_or_else(|| anyhow::anyhow!("reference value missing after computing it"))
    };
    examples
        .iter()
        .map(|e| match e {
            Example::Pair { chosen, rejected } => Ok(Some((lookup(chosen)?, lookup(rejected)?))),
            Example::Sft(_) => Ok(None),
        })
        .collect()
}

/// The frozen base's summed log-probability of `seq`'s labelled tokens.
pub fn sequence_logp(model: &TrainLlama, seq: &Sequence) -> anyhow::Result<f32> {
    let batch = TokenBatch::new(&[(&seq.ids, &seq.labels)], 0);
    let logp = model.log_probs(&batch, &mut Adapter::Off)?;
    Ok(logp.sum_all()?.to_scalar::<f32>()?)
}

/// A micro-batch laid out for [`combined_loss`]: pairs' chosen rows, their rejected rows, then
/// SFT rows; with the reference values of the pair rows and the real token count.
pub struct MicroBatch {
    pub batch: TokenBatch,
    pub pairs: usize,
    pub reference: Vec<f32>,
    pub tokens: usize,
    /// Each row's span in the batch's scored positions.
    pub spans: Vec<(usize, usize)>,
}

impl MicroBatch {
    pub fn new(examples: &[&Example], references: &[Option<(f32, f32)>]) -> anyhow::Result<Self> {
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        let mut sft = Vec::new();
        let mut ref_c = Vec::new();
        let mut ref_r = Vec::new();
        for (example, reference) in examples.iter().zip(references) {
            match example {
                Example::Pair {
                    chosen: c,
                    rejected: r,
                } => {
                    chosen.push(c);
                    rejected.push(r);
                    if let Some((rc, rr)) = reference {
                        ref_c.push(*rc);
                        ref_r.push(*rr);
                    }
                }
                Example::Sft(s) => sft.push(s),
            }
        }
        let pairs = chosen.len();
        let rows: Vec<&Sequence> = chosen.into_iter().chain(rejected).chain(sft).collect();
        let seqs: Vec<(&[u32], &[bool])> = rows
            .iter()
            .map(|s| (s.ids.as_slice(), s.labels.as_slice()))
            .collect();
        let batch = TokenBatch::new(&seqs, 0);
        let mut spans = Vec::with_capacity(rows.len());
        let mut start = 0;
        for row in 0..rows.len() {
            let count = batch.row_of[start..]
                .iter()
                .take_while(|&&r| r as usize == row)
                .count();
            spans.push((start, count));
            start += count;
        }
        Ok(Self {
            tokens: rows.iter().map(|s| s.ids.len()).sum(),
            reference: [ref_c, ref_r].concat(),
            batch,
            pairs,
            spans,
        })
    }
}

/// What [`train`] did.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The optimiser step the run started after (0, or the checkpoint resumed from).
    pub resumed_from: usize,
    pub steps_done: usize,
    pub total_steps: usize,
    pub metrics: Vec<StepMetrics>,
    /// False when stopped early by `stop_after`.
    pub finished: bool,
}

/// Runs (or resumes, from the latest checkpoint under `out`) the optimisation of `model`'s
/// LoRA tensors on `examples`. `fingerprint` identifies the settings and data; a checkpoint
/// with another one is refused.
pub fn train(
    model: &TrainLlama,
    examples: &[Example],
    references: &References,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    fingerprint: &str,
) -> anyhow::Result<TrainOutcome> {
    if examples.is_empty() {
        anyhow::bail!("no training examples");
    }
    if cfg.mode.uses_dpo()
        && references
            .iter()
            .zip(examples)
            .any(|(r, e)| matches!(e, Example::Pair { .. }) && r.is_none())
    {
        anyhow::bail!("reference log-probs missing for some pairs");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let named = model.lora_vars();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let mut optimizer = AdamW::new(cfg.adamw, &sizes);
    let n = examples.len();
    let bs = cfg.batch_size.max(1);
    let accum = cfg.grad_accum.max(1);
    let micro_per_epoch = cfg.micro_batches_per_epoch(n);
    let steps_per_epoch = cfg.steps_per_epoch(n);
    let total = cfg.total_steps(n);

    let mut start = 0;
    if resume && let Some(dir) = checkpoint::latest(out)? {
        let state = checkpoint::load(&dir, &named, &mut optimizer)?;
        if state.fingerprint != fingerprint {
            anyhow::bail!(
                "{} was written by a run with other settings or data; start a new --out or \
                 drop --resume",
                dir.display()
            );
        }
        start = state.step;
    }
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics: Vec<StepMetrics> = Vec::new();
    if start > 0 {
        // Keep the lines of the steps the checkpoint covers; later ones are redone.
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            metrics = text
                .lines()
                .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
                .filter(|m| m.step <= start)
                .collect();
        }
    }
    let mut metrics_file = std::fs::File::create(&metrics_path)
        .with_context(|| format!("creating {}", metrics_path.display()))?;
    for m in &metrics {
        writeln!(metrics_file, "{}", serde_json::to_string(m)?)?;
    }

    let progress = bar(cfg.progress, total as u64, "training");
    progress.set_position(start as u64);
    let mut order_epoch = usize::MAX;
    let mut order = Vec::new();
    let mut finished = true;
    let mut steps_done = start;
    for step in start + 1..=total {
        let started = Instant::now();
        let epoch = (step - 1) / steps_per_epoch;
        let in_epoch = (step - 1) % steps_per_epoch;
        if epoch != order_epoch {
            order = optim::epoch_order(n, cfg.seed, epoch);
            order_epoch = epoch;
        }
        let micros: Vec<usize> =
            (in_epoch * accum..((in_epoch + 1) * accum).min(micro_per_epoch)).collect();
        let mut rng = optim::dropout_rng(cfg.seed, step);
        let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
        let mut sums = Sums::default();
        let mut tokens = 0;
        for &micro in &micros {
            let picked: Vec<usize> = order[micro * bs..((micro + 1) * bs).min(n)].to_vec();
            let batch_examples: Vec<&Example> = picked.iter().map(|&i| &examples[i]).collect();
            let batch_refs: Vec<Option<(f32, f32)>> =
                picked.iter().map(|&i| references[i]).collect();
            let mb = MicroBatch::new(&batch_examples, &batch_refs)?;
            tokens += mb.tokens;
            let parts = micro_loss(model, &mb, cfg, Some(&mut rng))?;
            let scaled = (&parts.loss / micros.len() as f64)?;
            let store = scaled.backward()?;
            for (i, var) in vars.iter().enumerate() {
                if let Some(g) = store.get(var) {
                    for (acc, x) in grads[i].iter_mut().zip(g.flatten_all()?.to_vec1::<f32>()?) {
                        *acc += x;
                    }
                }
            }
            sums.add(&parts)?;
        }
        optim::clip_global_norm(&mut grads, cfg.max_grad_norm);
        let lr = optim::learning_rate(cfg.lr, step, total, cfg.warmup_steps);
        optimizer.step(&vars, &grads, lr)?;
        let line = sums.metrics(step, lr, tokens as f64 / started.elapsed().as_secs_f64());
        writeln!(metrics_file, "{}", serde_json::to_string(&line)?)?;
        metrics_file.flush()?;
        progress.set_message(describe(&line));
        progress.inc(1);
        if !cfg.progress {
            // Nothing is drawn; the figures still reach a log.
        } else if progress.is_hidden() {
            eprintln!("step {step}/{total} {}", describe(&line));
        }
        metrics.push(line);
        steps_done = step;
        if (cfg.save_steps > 0 && step % cfg.save_steps == 0) || step == total {
            let state = CheckpointState {
                step,
                adam_t: optimizer.t,
                epoch: step / steps_per_epoch,
                micro_batch: (step % steps_per_epoch) * accum,
                seed: cfg.seed,
                fingerprint: fingerprint.to_string(),
            };
            checkpoint::save(out, &named, &optimizer, &state, cfg.keep_checkpoints)?;
        }
        if cfg.stop_after == Some(step) && step < total {
            finished = false;
            break;
        }
    }
    progress.finish_and_clear();
    Ok(TrainOutcome {
        resumed_from: start,
        steps_done,
        total_steps: total,
        metrics,
        finished,
    })
}

/// The loss of one micro-batch under the adapter (dropout drawn from `rng` when given).
pub fn micro_loss(
    model: &TrainLlama,
    mb: &MicroBatch,
    cfg: &TrainConfig,
    rng: Option<&mut rand_chacha::ChaCha8Rng>,
) -> candle_core::Result<crate::loss::LossParts> {
    let logp = model.log_probs(&mb.batch, &mut Adapter::On(rng))?;
    combined_loss(
        &logp,
        &mb.spans,
        mb.pairs,
        &mb.reference,
        cfg.mode,
        cfg.beta,
        cfg.sft_weight,
    )
}

#[derive(Default)]
struct Sums {
    micros: usize,
    loss: f64,
    dpo: Vec<f64>,
    nll: Vec<f64>,
    chosen: Vec<f64>,
    rejected: Vec<f64>,
    accuracy: Vec<f64>,
}

impl Sums {
    fn add(&mut self, parts: &crate::loss::LossParts) -> candle_core::Result<()> {
        self.micros += 1;
        self.loss += parts.loss.to_scalar::<f32>()? as f64;
        self.dpo.extend(parts.dpo_loss);
        self.nll.extend(parts.nll);
        self.chosen.extend(parts.reward_chosen);
        self.rejected.extend(parts.reward_rejected);
        self.accuracy.extend(parts.reward_accuracy);
        Ok(())
    }

    fn metrics(&self, step: usize, lr: f64, tokens_per_s: f64) -> StepMetrics {
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let chosen = mean(&self.chosen);
        let rejected = mean(&self.rejected);
        StepMetrics {
            step,
            loss: self.loss / self.micros.max(1) as f64,
            dpo_loss: mean(&self.dpo),
            nll: mean(&self.nll),
            reward_chosen: chosen,
            reward_rejected: rejected,
            reward_margin: chosen.zip(rejected).map(|(c, r)| c - r),
            reward_accuracy: mean(&self.accuracy),
            lr,
            tokens_per_s,
        }
    }
}

fn describe(m: &StepMetrics) -> String {
    let opt = |name: &str, v: Option<f64>| v.map(|v| format!(" {name} {v:.4}")).unwrap_or_default();
    format!(
        "loss {:.4}{}{}{}{}{} lr {:.2e} {:.0} tok/s",
        m.loss,
        opt("dpo", m.dpo_loss),
        opt("nll", m.nll),
        opt("acc", m.reward_accuracy),
        opt("margin", m.reward_margin),
        opt("r+", m.reward_chosen),
        m.lr,
        m.tokens_per_s
    )
}

fn bar(visible: bool, len: u64, what: &'static str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:24}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
