//! The training loop: reference log-probabilities, micro-batches, gradient accumulation,
//! clipping, AdamW, metrics, checkpoints and resume.
//!
//! Every random choice is a function of the seed and the optimiser step (data order per
//! epoch, LoRA dropout per step, the held-out slice), and checkpoints hold the adapter and
//! AdamW's moments bit for bit, so a run stopped after any checkpoint and resumed ends with
//! the same adapter as one that ran straight through.
//!
//! With `--eval-split`, held-out examples are scored (loss and reward accuracy, no dropout)
//! every `eval_steps` and at the end; with early stopping, the run ends once the eval loss
//! has not improved for `patience` evaluations and keeps the adapter of the best one (saved
//! as `best-adapter.safetensors`, so a resumed run keeps it too).

use crate::checkpoint::{self, CheckpointState};
use crate::data::{Example, Sequence};
use crate::loss::{KtoInputs, Mode, combined_loss, kto_loss};
use crate::model::{Adapter, TokenBatch, TrainLlama};
use crate::optim::{self, AdamW, AdamWConfig};
use crate::refcache::{ModelKey, RefCache};
use anyhow::Context as _;
use candle_core::{Device, Var};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// How much of the data `--eval-split` holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalSplit {
    /// A fraction of the examples, in (0, 1).
    Fraction(f64),
    /// This many examples.
    Count(usize),
}

impl EvalSplit {
    /// Examples held out of `n` (at least one for a positive fraction).
    pub fn count(self, n: usize) -> usize {
        match self {
            EvalSplit::Fraction(f) => ((f * n as f64).round() as usize).max(1),
            EvalSplit::Count(c) => c,
        }
    }
}

impl std::str::FromStr for EvalSplit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(count) = s.parse::<usize>() {
            if count == 0 {
                return Err("--eval-split 0 holds nothing out; leave the flag off".into());
            }
            return Ok(EvalSplit::Count(count));
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(EvalSplit::Fraction(f)),
            _ => Err(format!(
                "`{s}` is neither a fraction in (0, 1) nor a number of examples"
            )),
        }
    }
}

impl serde::Serialize for EvalSplit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EvalSplit::Fraction(f) => s.serialize_f64(*f),
            EvalSplit::Count(c) => s.serialize_u64(*c as u64),
        }
    }
}

/// Settings of the optimisation. Serialised whole into the run's fingerprint (see
/// [`crate::fingerprint`]): a field that must not keep a checkpoint from resuming is marked
/// `#[serde(skip)]` here, with the reason, so a new setting cannot be forgotten.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    pub mode: Mode,
    pub beta: f64,
    pub sft_weight: f64,
    /// KTO's weight on desirable rows (TRL's `desirable_weight`).
    pub desirable_weight: f64,
    /// KTO's weight on undesirable rows (TRL's `undesirable_weight`).
    pub undesirable_weight: f64,
    pub lr: f64,
    /// Warm-up steps (linear from 0 to `lr`).
    pub warmup_steps: usize,
    /// Warm-up as a fraction of the run's optimiser steps; replaces `warmup_steps` when set.
    pub warmup_ratio: Option<f64>,
    pub epochs: usize,
    /// Cap on optimiser steps; the schedule ends (and the cosine reaches 0) there.
    pub max_steps: Option<usize>,
    /// Examples (pairs, KTO rows or SFT rows) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Global gradient-norm cap (0: none).
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    pub seed: u64,
    /// Examples held out for evaluation (drawn from the seed).
    pub eval_split: Option<EvalSplit>,
    /// Evaluate every this many optimiser steps (default: once per epoch) and at the end.
    pub eval_steps: Option<usize>,
    /// Stop when the eval loss has not improved for this many evaluations.
    pub early_stop_patience: Option<usize>,
    /// Checkpoint every this many optimiser steps (0: only at the end). Skipped: when
    /// checkpoints are written does not change what they hold.
    #[serde(skip)]
    pub save_steps: usize,
    /// Skipped: how many old checkpoints are kept does not change the run.
    #[serde(skip)]
    pub keep_checkpoints: usize,
    /// Stop (as if interrupted) after this optimiser step; the schedule is unchanged.
    /// Skipped: it exists to interrupt a run that is then resumed.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Skipped: drawing progress bars changes nothing.
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            mode: Mode::SftDpo,
            beta: 0.1,
            sft_weight: 1.0,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
            lr: 2e-4,
            warmup_steps: 0,
            warmup_ratio: None,
            epochs: 3,
            max_steps: None,
            batch_size: 2,
            grad_accum: 1,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            seed: 0,
            eval_split: None,
            eval_steps: None,
            early_stop_patience: None,
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

    /// Optimiser steps over `examples` training examples (after any held-out slice).
    pub fn total_steps(&self, examples: usize) -> usize {
        let all = self.epochs * self.steps_per_epoch(examples);
        self.max_steps.map_or(all, |cap| all.min(cap))
    }

    /// Warm-up steps of a run of `total` steps.
    pub fn warmup(&self, total: usize) -> usize {
        self.warmup_ratio
            .map_or(self.warmup_steps, |r| (r * total as f64).ceil() as usize)
    }

    /// The examples held out of `n` for evaluation, in input order.
    pub fn held_out(&self, n: usize) -> Vec<usize> {
        self.eval_split
            .map(|split| optim::held_out(n, split.count(n), self.seed))
            .unwrap_or_default()
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
    /// KTO's term and its reference point (KTO modes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kto_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    pub lr: f64,
    pub tokens_per_s: f64,
    /// On evaluation steps: the held-out loss (no dropout) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// … and the held-out reward accuracy (DPO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_reward_accuracy: Option<f64>,
}

/// The reference log-probability sums of each example's two reference sequences — a pair's
/// chosen and rejected, a KTO row's own and mismatched sequence — (`None` for SFT rows).
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
        .filter_map(Example::reference_sequences)
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
        .map(|e| match e.reference_sequences() {
            Some([a, b]) => Ok(Some((lookup(a)?, lookup(b)?))),
            None => Ok(None),
        })
        .collect()
}

/// The frozen base's summed log-probability of `seq`'s labelled tokens.
pub fn sequence_logp(model: &TrainLlama, seq: &Sequence) -> anyhow::Result<f32> {
    let batch = TokenBatch::new(&[(&seq.ids, &seq.labels)], 0);
    let logp = model.log_probs(&batch, &mut Adapter::Off)?;
    Ok(logp.sum_all()?.to_scalar::<f32>()?)
}

/// A micro-batch laid out for [`combined_loss`] — pairs' chosen rows, their rejected rows,
/// then SFT rows — or for [`kto_loss`] — KTO rows, then SFT rows; with the reference values
/// and the real token count.
pub struct MicroBatch {
    pub batch: TokenBatch,
    pub pairs: usize,
    pub reference: Vec<f32>,
    pub tokens: usize,
    /// Each row's span in the batch's scored positions.
    pub spans: Vec<(usize, usize)>,
    /// The KTO rows' labels and reference-point batch (KTO modes only).
    pub kto: Option<KtoBatch>,
}

/// What a KTO micro-batch adds: which rows are desirable, and the mismatched sequences its
/// reference point is estimated on, with their reference values.
pub struct KtoBatch {
    pub desirable: Vec<bool>,
    pub kl_batch: TokenBatch,
    pub kl_spans: Vec<(usize, usize)>,
    pub kl_reference: Vec<f32>,
}

/// Each of `rows` rows' `(start, count)` in `batch`'s scored positions.
fn row_spans(batch: &TokenBatch, rows: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::with_capacity(rows);
    let mut start = 0;
    for row in 0..rows {
        let count = batch.row_of[start..]
            .iter()
            .take_while(|&&r| r as usize == row)
            .count();
        spans.push((start, count));
        start += count;
    }
    spans
}

fn token_batch(rows: &[&Sequence]) -> TokenBatch {
    let seqs: Vec<(&[u32], &[bool])> = rows
        .iter()
        .map(|s| (s.ids.as_slice(), s.labels.as_slice()))
        .collect();
    TokenBatch::new(&seqs, 0)
}

impl MicroBatch {
    pub fn new(examples: &[&Example], references: &[Option<(f32, f32)>]) -> anyhow::Result<Self> {
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        let mut sft = Vec::new();
        let mut ref_c = Vec::new();
        let mut ref_r = Vec::new();
        let mut kto = Vec::new();
        let mut kl = Vec::new();
        let mut desirable = Vec::new();
        let mut ref_kto = Vec::new();
        let mut ref_kl = Vec::new();
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
                Example::Kto {
                    seq,
                    kl: mismatched,
                    desirable: d,
                } => {
                    kto.push(seq);
                    kl.push(mismatched);
                    desirable.push(*d);
                    if let Some((rs, rk)) = reference {
                        ref_kto.push(*rs);
                        ref_kl.push(*rk);
                    }
                }
                Example::Sft(s) => sft.push(s),
            }
        }
        if !chosen.is_empty() && !kto.is_empty() {
            anyhow::bail!("a micro-batch mixes preference pairs and KTO rows");
        }
        let pairs = chosen.len();
        let kto_batch = (!kto.is_empty()).then(|| {
            let kl_batch = token_batch(&kl);
            KtoBatch {
                desirable,
                kl_spans: row_spans(&kl_batch, kl.len()),
                kl_batch,
                kl_reference: ref_kl,
            }
        });
        let rows: Vec<&Sequence> = chosen
            .into_iter()
            .chain(rejected)
            .chain(kto)
            .chain(sft)
            .collect();
        let batch = token_batch(&rows);
        Ok(Self {
            tokens: rows.iter().map(|s| s.ids.len()).sum(),
            reference: [ref_c, ref_r, ref_kto].concat(),
            spans: row_spans(&batch, rows.len()),
            batch,
            pairs,
            kto: kto_batch,
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
    /// The step at which early stopping ended the run, if it did.
    pub stopped_early: Option<usize>,
    /// The evaluation step whose adapter was kept (early stopping only).
    pub best_step: Option<usize>,
}

/// Runs (or resumes, from the latest checkpoint under `out`) the optimisation of `model`'s
/// LoRA tensors on `examples` (less the held-out slice, see [`TrainConfig::held_out`]).
/// `fingerprint` identifies the settings and data; a checkpoint with another one is refused.
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
    if cfg.mode.uses_reference()
        && references
            .iter()
            .zip(examples)
            .any(|(r, e)| e.reference_sequences().is_some() && r.is_none())
    {
        anyhow::bail!("reference log-probs missing for some examples");
    }
    let eval_idx = cfg.held_out(examples.len());
    let train_idx: Vec<usize> = (0..examples.len())
        .filter(|i| eval_idx.binary_search(i).is_err())
        .collect();
    if train_idx.is_empty() {
        anyhow::bail!(
            "--eval-split holds out all {} examples; nothing is left to train on",
            examples.len()
        );
    }
    if cfg.early_stop_patience.is_some() && eval_idx.is_empty() {
        anyhow::bail!("early stopping watches the eval loss: give --eval-split too");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let named = model.lora_vars();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let mut optimizer = AdamW::new(cfg.adamw, &sizes);
    let n = train_idx.len();
    let bs = cfg.batch_size.max(1);
    let accum = cfg.grad_accum.max(1);
    let micro_per_epoch = cfg.micro_batches_per_epoch(n);
    let steps_per_epoch = cfg.steps_per_epoch(n);
    let total = cfg.total_steps(n);
    let warmup = cfg.warmup(total);
    let eval_every = cfg.eval_steps.unwrap_or(steps_per_epoch).max(1);

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
    let best_path = out.join("best-adapter.safetensors");
    let mut watch = EarlyStop::replay(cfg.early_stop_patience, &metrics);
    if watch.should_stop() {
        // The run had already stopped early before it was interrupted.
        restore(&best_path, &named)?;
        return Ok(TrainOutcome {
            resumed_from: start,
            steps_done: start,
            total_steps: total,
            metrics,
            finished: true,
            stopped_early: Some(start),
            best_step: watch.best_step,
        });
    }

    let progress = bar(cfg.progress, total as u64, "training");
    progress.set_position(start as u64);
    let mut order_epoch = usize::MAX;
    let mut order = Vec::new();
    let mut finished = true;
    let mut stopped_early = None;
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
            let picked: Vec<usize> = order[micro * bs..((micro + 1) * bs).min(n)]
                .iter()
                .map(|&i| train_idx[i])
                .collect();
            let mb = micro_batch(examples, references, &picked)?;
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
        let lr = optim::learning_rate(cfg.lr, step, total, warmup);
        optimizer.step(&vars, &grads, lr)?;
        let mut line = sums.metrics(step, lr, tokens as f64 / started.elapsed().as_secs_f64());
        if !eval_idx.is_empty() && (step % eval_every == 0 || step == total) {
            let (loss, accuracy) = evaluate(model, examples, references, &eval_idx, cfg)?;
            line.eval_loss = Some(loss);
            line.eval_reward_accuracy = accuracy;
            if watch.observe(step, loss) {
                save_adapter(&best_path, &named)?;
            }
        }
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
        let stop_now = watch.should_stop();
        if (cfg.save_steps > 0 && step % cfg.save_steps == 0) || step == total || stop_now {
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
        if stop_now {
            restore(&best_path, &named)?;
            stopped_early = Some(step);
            break;
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
        stopped_early,
        best_step: watch
            .best_step
            .filter(|_| cfg.early_stop_patience.is_some()),
    })
}

fn micro_batch(
    examples: &[Example],
    references: &References,
    picked: &[usize],
) -> anyhow::Result<MicroBatch> {
    let batch_examples: Vec<&Example> = picked.iter().map(|&i| &examples[i]).collect();
    let batch_refs: Vec<Option<(f32, f32)>> = picked.iter().map(|&i| references[i]).collect();
    MicroBatch::new(&batch_examples, &batch_refs)
}

/// The held-out loss (mean over micro-batches, no dropout) and reward accuracy (DPO: mean
/// over pairs).
fn evaluate(
    model: &TrainLlama,
    examples: &[Example],
    references: &References,
    eval_idx: &[usize],
    cfg: &TrainConfig,
) -> anyhow::Result<(f64, Option<f64>)> {
    let mut losses = Vec::new();
    let mut correct = 0.0;
    let mut pairs = 0;
    for chunk in eval_idx.chunks(cfg.batch_size.max(1)) {
        let mb = micro_batch(examples, references, chunk)?;
        let parts = micro_loss(model, &mb, cfg, None)?;
        losses.push(parts.loss.to_scalar::<f32>()? as f64);
        if let Some(acc) = parts.reward_accuracy {
            correct += acc * parts.pairs as f64;
            pairs += parts.pairs;
        }
    }
    let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
    Ok((loss, (pairs > 0).then(|| correct / pairs as f64)))
}

/// Early stopping's bookkeeping: the best eval loss so far and evaluations since.
struct EarlyStop {
    patience: Option<usize>,
    best: f64,
    best_step: Option<usize>,
    since_best: usize,
}

impl EarlyStop {
    /// The state after the evaluations recorded in `metrics` (a resumed run's past).
    fn replay(patience: Option<usize>, metrics: &[StepMetrics]) -> Self {
        let mut watch = Self {
            patience,
            best: f64::INFINITY,
            best_step: None,
            since_best: 0,
        };
        for m in metrics {
            if let Some(loss) = m.eval_loss {
                watch.observe(m.step, loss);
            }
        }
        watch
    }

    /// Records an evaluation; true when it is the best so far.
    fn observe(&mut self, step: usize, loss: f64) -> bool {
        if loss < self.best {
            self.best = loss;
            self.best_step = Some(step);
            self.since_best = 0;
            true
        } else {
            self.since_best += 1;
            false
        }
    }

    fn should_stop(&self) -> bool {
        self.patience.is_some_and(|p| self.since_best >= p.max(1))
    }
}

fn save_adapter(path: &Path, vars: &[(String, Var)]) -> anyhow::Result<()> {
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Puts the adapter saved at `path` back into `vars`.
fn restore(path: &Path, vars: &[(String, Var)]) -> anyhow::Result<()> {
    let saved = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading the best adapter {}", path.display()))?;
    for (name, var) in vars {
        let tensor = saved
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{} lacks {name}", path.display()))?;
        var.set(tensor)?;
    }
    Ok(())
}

/// The loss of one micro-batch under the adapter (dropout drawn from `rng` when given).
pub fn micro_loss(
    model: &TrainLlama,
    mb: &MicroBatch,
    cfg: &TrainConfig,
    rng: Option<&mut rand_chacha::ChaCha8Rng>,
) -> candle_core::Result<crate::loss::LossParts> {
    let logp = model.log_probs(&mb.batch, &mut Adapter::On(rng))?;
    let Some(kto) = &mb.kto else {
        return combined_loss(
            &logp,
            &mb.spans,
            mb.pairs,
            &mb.reference,
            cfg.mode,
            cfg.beta,
            cfg.sft_weight,
        );
    };
    let inputs = KtoInputs {
        desirable: &kto.desirable,
        reference: &mb.reference,
        kl: reference_point(model, kto)?,
        desirable_weight: cfg.desirable_weight,
        undesirable_weight: cfg.undesirable_weight,
    };
    kto_loss(
        &logp,
        &mb.spans,
        &inputs,
        cfg.mode,
        cfg.beta,
        cfg.sft_weight,
    )
}

/// KTO's reference point: the mean log-ratio of policy to reference on the mismatched
/// sequences (adapter on, no dropout, not differentiated), clamped at 0 as TRL does.
pub fn reference_point(model: &TrainLlama, kto: &KtoBatch) -> candle_core::Result<f64> {
    let logp = model
        .log_probs(&kto.kl_batch, &mut Adapter::On(None))?
        .detach();
    let mut sum = 0.0;
    for (&(start, count), reference) in kto.kl_spans.iter().zip(&kto.kl_reference) {
        let policy = if count == 0 {
            0.0
        } else {
            logp.narrow(0, start, count)?
                .sum_all()?
                .to_scalar::<f32>()?
        };
        sum += (policy - reference) as f64;
    }
    Ok((sum / kto.kl_spans.len().max(1) as f64).max(0.0))
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
    kto: Vec<f64>,
    kl: Vec<f64>,
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
        self.kto.extend(parts.kto_loss);
        self.kl.extend(parts.kl);
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
            kto_loss: mean(&self.kto),
            kl: mean(&self.kl),
            lr,
            tokens_per_s,
            eval_loss: None,
            eval_reward_accuracy: None,
        }
    }
}

fn describe(m: &StepMetrics) -> String {
    let opt = |name: &str, v: Option<f64>| v.map(|v| format!(" {name} {v:.4}")).unwrap_or_default();
    format!(
        "loss {:.4}{}{}{}{}{}{}{} lr {:.2e} {:.0} tok/s",
        m.loss,
        opt("eval", m.eval_loss),
        opt("dpo", m.dpo_loss),
        opt("kto", m.kto_loss),
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
