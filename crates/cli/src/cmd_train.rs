//! `demorecon train`: LoRA SFT + DPO on the embedded model family, in process on the CPU.
//! Parsing and reporting only; the work is `demorecon_train::run`.

use std::path::PathBuf;

use anyhow::Context as _;
use demorecon_train::loss::Mode;
use demorecon_train::model::{LoraSpec, parse_targets};
use demorecon_train::optim::AdamWConfig;
use demorecon_train::trainer::TrainConfig;
use demorecon_train::{RunOptions, RunReport};

use crate::context::Context;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Loss (sft+dpo): sigmoid DPO with --beta, plus --sft-weight × the mean NLL per token of the \
chosen responses (TRL's rpo_alpha), on assistant tokens only; SFT rows add plain NLL. \
Outputs in --out: adapter/ (PEFT: adapter_config.json + adapter_model.safetensors), model.gguf (merged; \
`demorecon chat --model-path DIR/model.gguf`), metrics.jsonl, checkpoints/, train_config.json."
)]
pub struct TrainArgs {
    /// Preference pairs: TRL JSONL with `prompt`, `chosen`, `rejected` (message lists or strings).
    #[arg(long, value_name = "FILE")]
    pub dpo: Option<PathBuf>,
    /// SFT rows: JSONL with `messages` (or `prompt` + `completion`).
    #[arg(long, value_name = "FILE")]
    pub sft: Option<PathBuf>,
    /// The model to adapt: `embedded` (SmolLM2-135M-Instruct, or the global --model-path) or a
    /// llama-family GGUF.
    #[arg(long, default_value = "embedded", value_name = "embedded|PATH.gguf")]
    pub base: String,
    /// Output folder (adapter, merged model, metrics, checkpoints).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// sft, dpo or sft+dpo.
    #[arg(long, default_value = "sft+dpo")]
    pub mode: Mode,
    /// DPO temperature β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Weight of the chosen-response NLL next to DPO (TRL's rpo_alpha).
    #[arg(long, default_value_t = 1.0)]
    pub sft_weight: f64,
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
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
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

pub fn run(args: TrainArgs, ctx: &Context) -> anyhow::Result<()> {
    let home = demorecon_llm::home::data_home();
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
        dpo: args.dpo,
        sft: args.sft,
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
            lr: args.lr,
            warmup_steps: args.warmup_steps,
            epochs: args.epochs,
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            max_grad_norm: args.max_grad_norm,
            adamw: AdamWConfig {
                weight_decay: args.weight_decay,
                ..AdamWConfig::default()
            },
            seed: args.seed,
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
