//! `demorecon train`: LoRA SFT + DPO (or KTO) on the embedded model family, in process on the
//! CPU. Parsing, finding a run folder's datasets, and reporting; the work is
//! `demorecon_train::run`.

use std::path::PathBuf;

use anyhow::Context as _;
use demorecon_train::loss::Mode;
use demorecon_train::model::{LoraSpec, parse_targets};
use demorecon_train::optim::AdamWConfig;
use demorecon_train::trainer::{EvalSplit, TrainConfig};
use demorecon_train::{RunOptions, RunReport};

use crate::context::Context;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Loss (sft+dpo): sigmoid DPO with --beta, plus --sft-weight × the mean NLL per token of the \
chosen responses (TRL's rpo_alpha), on assistant tokens only; SFT rows add plain NLL. \
KTO (kto, sft+kto): TRL's KTO loss on unpaired rows (--kto, or --dpo pairs unpaired), the reference point \
estimated on mismatched prompt/completion pairs, weighted by --desirable-weight / --undesirable-weight. \
`demorecon train RUN` trains on a pipeline run folder's datasets (--fgiv a, r or both). \
Outputs in --out: adapter/ (PEFT: adapter_config.json + adapter_model.safetensors), model.gguf (merged; \
`demorecon chat --model-path DIR/model.gguf`), metrics.jsonl, checkpoints/, train_config.json."
)]
pub struct TrainArgs {
    /// A finished `demorecon run` folder: train on its datasets (SFT rows for --mode sft,
    /// preference pairs otherwise), chosen with --fgiv.
    #[arg(value_name = "RUN", conflicts_with_all = ["dpo", "sft", "kto"])]
    pub run: Option<PathBuf>,
    /// Which of the run's datasets: a (FGIV-A, answered directly), r (FGIV-R, revised from
    /// the seed's response) or both.
    #[arg(
        long,
        default_value = "both",
        value_name = "a|r|both",
        requires = "run"
    )]
    pub fgiv: Fgiv,
    /// Preference pairs: TRL JSONL with `prompt`, `chosen`, `rejected` (message lists or strings).
    #[arg(long, value_name = "FILE")]
    pub dpo: Option<PathBuf>,
    /// SFT rows: JSONL with `messages` (or `prompt` + `completion`).
    #[arg(long, value_name = "FILE")]
    pub sft: Option<PathBuf>,
    /// KTO rows: TRL's unpaired JSONL with `prompt`, `completion` and a boolean `label`.
    #[arg(long, value_name = "FILE")]
    pub kto: Option<PathBuf>,
    /// The model to adapt: `embedded` (SmolLM2-135M-Instruct, or the global --model-path) or a
    /// llama-family GGUF.
    #[arg(long, default_value = "embedded", value_name = "embedded|PATH.gguf")]
    pub base: String,
    /// Output folder (adapter, merged model, metrics, checkpoints).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// sft, dpo, sft+dpo, kto or sft+kto.
    #[arg(long, default_value = "sft+dpo")]
    pub mode: Mode,
    /// DPO temperature β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Weight of the chosen-response NLL next to DPO (TRL's rpo_alpha) or KTO.
    #[arg(long, default_value_t = 1.0)]
    pub sft_weight: f64,
    /// KTO's weight on desirable rows.
    #[arg(long, default_value_t = 1.0)]
    pub desirable_weight: f64,
    /// KTO's weight on undesirable rows.
    #[arg(long, default_value_t = 1.0)]
    pub undesirable_weight: f64,
    #[arg(long, default_value_t = 16)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f32,
    /// Projections to adapt: any of q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o")]
    pub lora_targets: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 0, conflicts_with = "warmup_ratio")]
    pub warmup_steps: usize,
    /// Warm-up as a fraction of all optimiser steps (instead of --warmup-steps).
    #[arg(long, value_name = "FRACTION")]
    pub warmup_ratio: Option<f64>,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after this many optimiser steps (the schedule decays to it).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Hold out a slice for evaluation: a fraction in (0, 1) or a number of examples. Eval
    /// loss (and reward accuracy) go to metrics.jsonl.
    #[arg(long, value_name = "FRACTION|N")]
    pub eval_split: Option<EvalSplit>,
    /// Evaluate every N optimiser steps (default: once per epoch) and at the end.
    #[arg(long, value_name = "N", requires = "eval_split")]
    pub eval_steps: Option<usize>,
    /// Stop when the eval loss has not improved for N evaluations, keeping the best adapter.
    #[arg(long, value_name = "N", requires = "eval_split")]
    pub early_stop_patience: Option<usize>,
    /// Worker threads for the matrix work (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Pairs (or SFT rows) per micro-batch.
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Longest sequence in tokens; longer ones are cut from the end (and counted).
    #[arg(long, default_value_t = 1024)]
    pub max_length: usize,
    /// Seeds LoRA initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every N optimiser steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub save_steps: usize,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Reference log-prob cache (default: $DEMORECON_HOME/train/refcache.jsonl).
    #[arg(long, value_name = "FILE")]
    pub ref_cache: Option<PathBuf>,
    /// Keep reference log-probs in memory only.
    #[arg(long, conflicts_with = "ref_cache")]
    pub no_ref_cache: bool,
    /// Skip writing the merged GGUF (the adapter is always written).
    #[arg(long)]
    pub no_merged: bool,
    /// Also write the merged model as a Hugging Face folder (safetensors, config, tokenizer).
    #[arg(long, value_name = "DIR")]
    pub export_hf: Option<PathBuf>,
    /// Stop after this optimiser step as if interrupted (for testing --resume).
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<usize>,
    /// Print the run's summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which FGIV datasets of a run folder to train on.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fgiv {
    A,
    R,
    Both,
}

/// The datasets of the finished run folder `run` for `mode`: `(dpo files, sft files)`.
fn run_datasets(
    run: &std::path::Path,
    fgiv: Fgiv,
    mode: Mode,
) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let data = demorecon_export::run::read_run(run)?;
    if !data.unfinished.is_empty() {
        let u = &data.unfinished;
        let first: Vec<String> = u
            .pending
            .iter()
            .take(5)
            .map(|p| format!("{} {}", p.stage, p.unit))
            .collect();
        anyhow::bail!(
            "{} is not finished ({} unit(s) pending{}{}); rerun the pipeline on it first",
            run.display(),
            u.pending.len(),
            if first.is_empty() {
                String::new()
            } else {
                format!(", first: {}", first.join(", "))
            },
            u.shard
                .as_ref()
                .map(|s| format!("; it is shard {s}: merge the shards first"))
                .unwrap_or_default()
        );
    }
    let tags: &[&str] = match fgiv {
        Fgiv::A => &["fgiv_a"],
        Fgiv::R => &["fgiv_r"],
        Fgiv::Both => &["fgiv_a", "fgiv_r"],
    };
    let kind = if mode == Mode::Sft { "sft" } else { "dpo" };
    let files: Vec<PathBuf> = tags
        .iter()
        .map(|t| run.join("datasets").join(format!("{kind}_{t}.jsonl")))
        .collect();
    Ok(if mode == Mode::Sft {
        (Vec::new(), files)
    } else {
        (files, Vec::new())
    })
}

pub fn run(args: TrainArgs, ctx: &Context) -> anyhow::Result<()> {
    let home = demorecon_llm::home::data_home();
    let (dpo, sft) = match &args.run {
        Some(run) => run_datasets(run, args.fgiv, args.mode)?,
        None => (
            args.dpo.clone().into_iter().collect(),
            args.sft.clone().into_iter().collect(),
        ),
    };
    let base = if args.base == "embedded" {
        match &ctx.global.model_path {
            Some(path) => path.clone(),
            None => demorecon_gguf::ensure_model(&home).context("fetching the embedded model")?,
        }
    } else {
        PathBuf::from(args.base.strip_prefix("embedded:").unwrap_or(&args.base))
    };
    let ref_cache = if args.no_ref_cache {
        None
    } else {
        Some(
            args.ref_cache
                .clone()
                .unwrap_or_else(|| home.join("train").join("refcache.jsonl")),
        )
    };
    let opts = RunOptions {
        dpo,
        sft,
        kto: args.kto.into_iter().collect(),
        run: args.run,
        base,
        out: args.out,
        lora: LoraSpec {
            rank: args.lora_rank,
            alpha: args.lora_alpha,
            dropout: args.lora_dropout,
            targets: parse_targets(&args.lora_targets)?,
        },
        train: TrainConfig {
            mode: args.mode,
            beta: args.beta,
            sft_weight: args.sft_weight,
            desirable_weight: args.desirable_weight,
            undesirable_weight: args.undesirable_weight,
            lr: args.lr,
            warmup_steps: args.warmup_steps,
            warmup_ratio: args.warmup_ratio,
            epochs: args.epochs,
            max_steps: args.max_steps,
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            max_grad_norm: args.max_grad_norm,
            adamw: AdamWConfig {
                weight_decay: args.weight_decay,
                ..AdamWConfig::default()
            },
            seed: args.seed,
            eval_split: args.eval_split,
            eval_steps: args.eval_steps,
            early_stop_patience: args.early_stop_patience,
            save_steps: args.save_steps,
            keep_checkpoints: 2,
            stop_after: args.stop_after_steps,
            progress: !args.json,
        },
        max_length: args.max_length,
        resume: args.resume,
        ref_cache,
        merged_gguf: !args.no_merged,
        export_hf: args.export_hf,
    };
    if !(opts.lora.dropout >= 0.0 && opts.lora.dropout < 1.0) {
        anyhow::bail!("--lora-dropout must be in [0, 1)");
    }
    if opts.train.batch_size == 0 || opts.train.grad_accum == 0 || opts.train.epochs == 0 {
        anyhow::bail!("--batch-size, --grad-accum and --epochs must be at least 1");
    }
    if opts.train.max_steps == Some(0) || opts.train.eval_steps == Some(0) {
        anyhow::bail!("--max-steps and --eval-steps must be at least 1");
    }
    if let Some(r) = opts.train.warmup_ratio
        && !(0.0..1.0).contains(&r)
    {
        anyhow::bail!("--warmup-ratio must be in [0, 1), not {r}");
    }
    for (name, w) in [
        ("--desirable-weight", opts.train.desirable_weight),
        ("--undesirable-weight", opts.train.undesirable_weight),
    ] {
        if !(w.is_finite() && w >= 0.0) {
            anyhow::bail!("{name} must be a non-negative number, not {w}");
        }
    }
    let report = demorecon_train::run(&opts, &mut |line| eprintln!("{line}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary(&opts, &report))?
        );
    } else {
        print_summary(&opts, &report);
    }
    Ok(())
}

fn summary(opts: &RunOptions, report: &RunReport) -> serde_json::Value {
    let metrics = &report.outcome.metrics;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    serde_json::json!({
        "out": opts.out.display().to_string(),
        "pairs": report.pairs,
        "kto_rows": report.kto_rows,
        "sft_rows": report.sft_rows,
        "sequences_truncated": report.truncation.sequences_truncated,
        "tokens_truncated": report.truncation.tokens_cut,
        "rows_dropped": report.truncation.rows_dropped,
        "reference_reused": report.reference_reused,
        "reference_computed": report.reference_computed,
        "resumed_from_step": report.outcome.resumed_from,
        "steps": report.outcome.steps_done,
        "total_steps": report.outcome.total_steps,
        "finished": report.outcome.finished,
        "stopped_early_at_step": report.outcome.stopped_early,
        "best_step": report.outcome.best_step,
        "first": metrics.first(),
        "last": metrics.last(),
        "adapter": path(&report.adapter_dir),
        "merged_gguf": path(&report.merged_gguf),
        "hf": path(&report.hf_dir),
    })
}

fn print_summary(opts: &RunOptions, report: &RunReport) {
    let metrics = &report.outcome.metrics;
    if let (Some(first), Some(last)) = (metrics.first(), metrics.last()) {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        // With SFT rows mixed in, some steps have no DPO term: compare the first and last steps
        // that do.
        let dpo_steps = || metrics.iter().filter(|m| m.reward_accuracy.is_some());
        let (first_dpo, last_dpo) = (dpo_steps().next(), dpo_steps().next_back());
        eprintln!(
            "steps {}/{}: loss {:.4} → {:.4}, reward accuracy {} → {}, margin {} → {}",
            report.outcome.steps_done,
            report.outcome.total_steps,
            first.loss,
            last.loss,
            opt(first_dpo.and_then(|m| m.reward_accuracy)),
            opt(last_dpo.and_then(|m| m.reward_accuracy)),
            opt(first_dpo.and_then(|m| m.reward_margin)),
            opt(last_dpo.and_then(|m| m.reward_margin)),
        );
    }
    if let (Some(step), Some(best)) = (report.outcome.stopped_early, report.outcome.best_step) {
        eprintln!(
            "early stop after step {step}: the eval loss last improved at step {best}; kept that adapter"
        );
    }
    if let Some(last_eval) = metrics.iter().rev().find_map(|m| m.eval_loss) {
        eprintln!("eval loss (last evaluation): {last_eval:.4}");
    }
    if !report.outcome.finished {
        eprintln!(
            "stopped after step {}; continue with --resume (checkpoints in {})",
            report.outcome.steps_done,
            demorecon_train::checkpoint::checkpoints_dir(&opts.out).display()
        );
        return;
    }
    eprintln!("metrics: {}", opts.out.join("metrics.jsonl").display());
    if let Some(dir) = &report.adapter_dir {
        eprintln!("adapter (PEFT): {}", dir.display());
    }
    if let Some(path) = &report.merged_gguf {
        eprintln!(
            "merged model: {}  (try: demorecon chat --model-path {} \"…\")",
            path.display(),
            path.display()
        );
    }
    if let Some(dir) = &report.hf_dir {
        eprintln!("Hugging Face export: {}", dir.display());
    }
}
