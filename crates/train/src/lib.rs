//! `demorecon train`: SFT + DPO with LoRA on a llama-family GGUF, in Rust on candle's CPU
//! backend, with the loss, data formats and outputs of the larger trainers (TRL, PEFT,
//! LLaMA-Factory) so a run can move up to them unchanged.
//!
//! - [`data`] reads TRL's preference and SFT JSONL and tokenizes it through the model's chat
//!   template with assistant-token labels; `--max-length` cuts are counted.
//! - [`model`] is the trainable llama (frozen f32 base from the GGUF, LoRA `Var`s), built from
//!   the differentiable ops in [`ops`].
//! - [`loss`] is sigmoid DPO + `sft_weight` × NLL of the chosen response (TRL's `rpo_alpha`),
//!   or KTO (+ NLL of the desirable responses) on unpaired rows.
//! - [`refcache`] keeps the reference model's log-probabilities on disk across runs.
//! - [`optim`] (AdamW, warm-up + cosine, clipping, seeded order), [`checkpoint`] and
//!   [`trainer`] run the optimisation with exact resume.
//! - [`export`] writes the PEFT adapter, the merged GGUF and the Hugging Face folder, and
//!   applies a PEFT adapter to a GGUF (`serve --adapter`).
//!
//! [`run`] ties them together for the CLI.
//!
//! # Checked against the Hugging Face stack
//!
//! `scripts/check-hf-interop.sh` (torch 2.15, transformers 5.24, peft 0.21): on a 42-token
//! ChatML prompt, transformers loading the original GGUF agrees with our base forward to
//! 3.3e-6 (max |Δlogit| / max |logit|), transformers loading `--export-hf` agrees with our
//! merged GGUF to 4.1e-6, and peft's adapter on the base agrees with the merged export to
//! 2.6e-6 and with our forward with LoRA on to 3.6e-6 (tolerance 1e-4).
//!
//! # Speed on CPU
//!
//! The large products run on the system OpenBLAS when the build finds it (`ops/blas.rs`,
//! one thread per call, split over rayon's threads), else on the `gemm` crate; each
//! transformer layer is one recorded op when no dropout is drawn (`ops::layer`), so the
//! backward pass does not pay a barrier per element-wise op. `scripts/bench-train.sh` times a
//! step against PyTorch + peft; its figures are in the README's benchmark table.

pub mod checkpoint;
pub mod data;
pub mod export;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod refcache;
pub mod tiny;
pub mod trainer;

use anyhow::Context as _;
use candle_core::quantized::gguf_file;
use data::{ChatEncoder, Example, RawRow, TruncationReport};
use demorecon_gguf::LlamaConfig;
use demorecon_gguf::tokenizer::meta_str;
use loss::Mode;
use model::{LoraSpec, TrainLlama};
use refcache::{ModelKey, RefCache};
use std::path::{Path, PathBuf};
use trainer::{TrainConfig, TrainOutcome};

/// Everything `demorecon train` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Preference-pair files (TRL JSONL), read in order.
    pub dpo: Vec<PathBuf>,
    /// SFT files.
    pub sft: Vec<PathBuf>,
    /// KTO files (TRL's unpaired form).
    pub kto: Vec<PathBuf>,
    /// The pipeline run folder the files came from (`demorecon train RUN`), recorded in
    /// `train_config.json`.
    pub run: Option<PathBuf>,
    /// The base GGUF.
    pub base: PathBuf,
    pub out: PathBuf,
    pub lora: LoraSpec,
    pub train: TrainConfig,
    pub max_length: usize,
    pub resume: bool,
    /// The reference log-prob cache file (`None`: keep it in memory only).
    pub ref_cache: Option<PathBuf>,
    /// Write the merged model as GGUF to `out/model.gguf`.
    pub merged_gguf: bool,
    /// Write the merged model as a Hugging Face folder here.
    pub export_hf: Option<PathBuf>,
}

/// What a run did, for the CLI to print.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub pairs: usize,
    pub kto_rows: usize,
    pub sft_rows: usize,
    pub truncation: TruncationReport,
    pub reference_reused: usize,
    pub reference_computed: usize,
    pub outcome: TrainOutcome,
    pub adapter_dir: Option<PathBuf>,
    pub merged_gguf: Option<PathBuf>,
    pub hf_dir: Option<PathBuf>,
}

/// A loaded base model: its GGUF header, config, weights, tokenizer and cache identity.
pub struct Base {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    pub config: LlamaConfig,
    pub weights: model::BaseWeights,
    pub encoder: ChatEncoder,
    pub key: ModelKey,
}

impl Base {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{} is not a readable GGUF", path.display()))?;
        let arch = meta_str(&content, "general.architecture").unwrap_or("llama");
        if arch != "llama" {
            anyhow::bail!(
                "{} is a `{arch}` model; training supports llama-family GGUFs",
                path.display()
            );
        }
        let config = LlamaConfig::from_gguf(&content)?;
        let encoder = ChatEncoder::from_gguf(&content)?;
        let weights = model::read_base(&content, &mut file)?;
        let model_sha256 = demorecon_gguf::store::cached_sha256(path)
            .map_err(|e| anyhow::anyhow!("hashing {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            key: ModelKey {
                model_sha256,
                tokenizer_digest: tokenizer_digest(&content),
            },
            content,
            config,
            weights,
            encoder,
        })
    }

    /// A name for the base in exported configs: the GGUF's `general.name`, else its stem.
    pub fn name(&self) -> String {
        meta_str(&self.content, "general.name")
            .map(String::from)
            .unwrap_or_else(|| demorecon_gguf::model_name(&self.path))
    }
}

/// blake3 of the tokenizer metadata and chat template (what turns text into ids).
pub fn tokenizer_digest(content: &gguf_file::Content) -> String {
    let mut keys: Vec<&String> = content
        .metadata
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    keys.sort();
    let mut h = blake3::Hasher::new();
    for key in keys {
        h.update(key.as_bytes());
        h.update(format!("{:?}", content.metadata[key]).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Reads the data files `opts` names for its mode.
pub fn read_rows(opts: &RunOptions) -> anyhow::Result<Vec<RawRow>> {
    let mode = opts.train.mode;
    if opts.dpo.is_empty() && opts.sft.is_empty() && opts.kto.is_empty() {
        anyhow::bail!("give --dpo FILE, --kto FILE and/or --sft FILE (or a run folder)");
    }
    if !mode.uses_kto() && !opts.kto.is_empty() {
        anyhow::bail!(
            "--kto rows train with --mode kto or sft+kto, not {}",
            mode.as_str()
        );
    }
    if mode.uses_dpo() && opts.dpo.is_empty() {
        anyhow::bail!("--mode {} needs --dpo FILE", mode.as_str());
    }
    if mode.uses_kto() && opts.dpo.is_empty() && opts.kto.is_empty() {
        anyhow::bail!(
            "--mode {} needs --kto FILE or --dpo FILE (its pairs are unpaired)",
            mode.as_str()
        );
    }
    if matches!(mode, Mode::Dpo | Mode::Kto) && !opts.sft.is_empty() {
        anyhow::bail!(
            "--mode {0} trains on preference rows only; use --mode sft+{0} to add --sft rows",
            mode.as_str()
        );
    }
    let mut rows = Vec::new();
    for path in &opts.dpo {
        rows.extend(data::read_jsonl(path, data::parse_pair)?);
    }
    for path in &opts.kto {
        rows.extend(data::read_jsonl(path, data::parse_kto)?);
    }
    for path in &opts.sft {
        rows.extend(data::read_jsonl(path, data::parse_sft)?);
    }
    Ok(rows)
}

/// blake3 of everything that shapes the optimisation — the base, the LoRA spec, the whole
/// [`TrainConfig`] as serialised (its skipped fields say why they are not here), the length
/// cap — and of the tokenized data: a checkpoint only resumes a run with the same one.
pub fn fingerprint(
    key: &ModelKey,
    lora: &LoraSpec,
    cfg: &TrainConfig,
    max_length: usize,
    examples: &[Example],
) -> String {
    #[derive(serde::Serialize)]
    struct Identity<'a> {
        base: &'a ModelKey,
        lora: &'a LoraSpec,
        train: &'a TrainConfig,
        max_length: usize,
        examples: usize,
    }
    let identity = Identity {
        base: key,
        lora,
        train: cfg,
        max_length,
        examples: examples.len(),
    };
    let mut h = blake3::Hasher::new();
    h.update(&serde_json::to_vec(&identity).expect("training settings serialise"));
    for e in examples {
        h.update(format!("{e:?}").as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Loads, trains and exports, as `demorecon train` does. `log` receives progress lines.
pub fn run(opts: &RunOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<RunReport> {
    let rows = read_rows(opts)?;
    let base = Base::load(&opts.base)?;
    let mode = opts.train.mode;
    let (examples, truncation) = data::tokenize(&base.encoder, &rows, opts.max_length, mode)?;
    let pairs = examples
        .iter()
        .filter(|e| matches!(e, Example::Pair { .. }))
        .count();
    let kto_rows = examples
        .iter()
        .filter(|e| matches!(e, Example::Kto { .. }))
        .count();
    let sft_rows = examples.len() - pairs - kto_rows;
    let kto_note = if kto_rows > 0 {
        format!(", {kto_rows} KTO rows")
    } else {
        String::new()
    };
    log(&format!(
        "{} rows: {pairs} preference pairs{kto_note}, {sft_rows} SFT rows; --max-length {} cut {} \
         sequence(s), {} token(s) in all{}",
        rows.len(),
        opts.max_length,
        truncation.sequences_truncated,
        truncation.tokens_cut,
        if truncation.rows_dropped > 0 {
            format!(
                " and dropped {} rows with nothing left to train on",
                truncation.rows_dropped
            )
        } else {
            String::new()
        }
    ));
    if examples.is_empty() {
        anyhow::bail!("no trainable rows left");
    }
    let model = TrainLlama::new(
        base.config.clone(),
        &base.weights,
        opts.lora.clone(),
        opts.train.seed,
    )?;
    let mut cache = match &opts.ref_cache {
        Some(path) => RefCache::open(path)?,
        None => RefCache::in_memory(),
    };
    let before = cache.len();
    let references = if mode.uses_reference() {
        trainer::reference_logps(
            &model,
            &examples,
            &base.key,
            &mut cache,
            opts.train.progress,
        )?
    } else {
        vec![None; examples.len()]
    };
    let reference_computed = cache.len() - before;
    let reference_reused =
        2 * (pairs + kto_rows) * usize::from(mode.uses_reference()) - reference_computed;
    if mode.uses_reference() {
        log(&format!(
            "reference log-probs: {reference_reused} reused from the cache, {reference_computed} computed"
        ));
    }
    let fp = fingerprint(
        &base.key,
        &opts.lora,
        &opts.train,
        opts.max_length,
        &examples,
    );
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    write_run_config(opts, &base)?;
    let outcome = trainer::train(
        &model,
        &examples,
        &references,
        &opts.train,
        &opts.out,
        opts.resume,
        &fp,
    )?;
    if outcome.resumed_from > 0 {
        log(&format!("resumed after step {}", outcome.resumed_from));
    }
    let mut report = RunReport {
        pairs,
        kto_rows,
        sft_rows,
        truncation,
        reference_reused,
        reference_computed,
        outcome,
        adapter_dir: None,
        merged_gguf: None,
        hf_dir: None,
    };
    if !report.outcome.finished {
        return Ok(report);
    }
    let lora_pairs = export::model_pairs(&model);
    let adapter_dir = opts.out.join("adapter");
    export::write_peft_adapter(
        &adapter_dir,
        &base.config,
        &lora_pairs,
        opts.lora.rank,
        opts.lora.alpha,
        opts.lora.dropout,
        &base.name(),
    )?;
    report.adapter_dir = Some(adapter_dir);
    if opts.merged_gguf || opts.export_hf.is_some() {
        let merged = export::merged_matrices(&base.weights, &lora_pairs, opts.lora.scale())?;
        if opts.merged_gguf {
            let path = opts.out.join("model.gguf");
            export::write_merged_gguf(&base.path, &path, &merged, "-demorecon")?;
            report.merged_gguf = Some(path);
        }
        if let Some(dir) = &opts.export_hf {
            export::write_hf(
                dir,
                &base.content,
                &base.weights,
                &merged,
                &base.encoder.tokenizer.to_hf_json()?,
            )?;
            report.hf_dir = Some(dir.clone());
        }
    }
    Ok(report)
}

/// `train_config.json`: what was trained on (the run folder, each file with its blake3 and
/// row count) and with which settings (the same [`TrainConfig`] the fingerprint covers).
fn write_run_config(opts: &RunOptions, base: &Base) -> anyhow::Result<()> {
    let files = |paths: &[PathBuf]| -> anyhow::Result<Vec<serde_json::Value>> {
        paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let rows = bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count();
                Ok(serde_json::json!({
                    "path": p.display().to_string(),
                    "blake3": blake3::hash(&bytes).to_hex().to_string(),
                    "rows": rows,
                }))
            })
            .collect()
    };
    let value = serde_json::json!({
        "base": base.path.display().to_string(),
        "base_sha256": base.key.model_sha256,
        "run": opts.run.as_ref().map(|p| p.display().to_string()),
        "dpo": files(&opts.dpo)?,
        "sft": files(&opts.sft)?,
        "kto": files(&opts.kto)?,
        "train": &opts.train,
        "max_length": opts.max_length,
        "lora": &opts.lora,
        "lora_targets": opts.lora.targets.iter().map(|t| t.hf_name()).collect::<Vec<_>>(),
    });
    demorecon_io::write_json_pretty(&opts.out.join("train_config.json"), &value)?;
    Ok(())
}
