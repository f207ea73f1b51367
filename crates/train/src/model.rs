//! The trainable llama: frozen f32 base weights dequantized from a GGUF, LoRA adapters on
//! chosen projections as candle `Var`s, and a forward pass over a padded batch that returns the
//! log-probability of each labelled next token.
//!
//! The base is kept exactly as the GGUF stores it: q/k rows permuted for interleaved RoPE, so
//! LoRA `B` matrices of q/k live in that permuted row order too ([`crate::export`] converts them
//! to Hugging Face's layout). Running with the adapter off gives the frozen reference model
//! that DPO compares against; with `B = 0` at initialisation the two are bit-identical.

use crate::ops::{self, FrozenLinear, LmHeadLogProb};
use anyhow::Context as _;
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var};
use demorecon_gguf::LlamaConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::str::FromStr;

/// A projection LoRA can adapt, named as PEFT names it in Hugging Face's `LlamaForCausalLM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The PEFT `target_modules` name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module path inside a Hugging Face llama layer (`self_attn.q_proj`, `mlp.up_proj`).
    pub fn hf_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The GGUF tensor name's suffix inside `blk.N.` (`attn_q`, `ffn_up`, ...).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_suffix("_proj").unwrap_or(&s);
        Ok(match s {
            "q" => Target::Q,
            "k" => Target::K,
            "v" => Target::V,
            "o" => Target::O,
            "gate" => Target::Gate,
            "up" => Target::Up,
            "down" => Target::Down,
            other => {
                return Err(format!(
                    "unknown LoRA target `{other}` (q, k, v, o, gate, up, down)"
                ));
            }
        })
    }
}

/// Parses `q,k,v,o` into targets (sorted, deduplicated).
pub fn parse_targets(list: &str) -> anyhow::Result<Vec<Target>> {
    let mut targets = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse::<Target>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        anyhow::bail!("--lora-targets names no projection");
    }
    Ok(targets)
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub targets: Vec<Target>,
}

impl LoraSpec {
    /// `alpha / rank`, the factor on `B·A` (PEFT's default, not rsLoRA).
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The frozen weights by GGUF tensor name, as f32.
pub type BaseWeights = BTreeMap<String, Tensor>;

/// Reads every tensor of a GGUF, dequantized to f32.
pub fn read_base<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
) -> anyhow::Result<BaseWeights> {
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut weights = BaseWeights::new();
    for name in names {
        let q = content
            .tensor(reader, name, &device)
            .with_context(|| format!("reading tensor {name}"))?;
        weights.insert(name.clone(), q.dequantize(&device)?);
    }
    Ok(weights)
}

/// One adapted projection: `y = x·Wᵀ + scale · (drop(x)·Aᵀ)·Bᵀ`.
pub struct Lora {
    pub a: Var,
    pub b: Var,
}

/// A group of projections that read the same input (q/k/v, or gate/up), multiplied as one
/// stacked matrix — one larger GEMM instead of two or three — then split, each part with its
/// own optional LoRA.
struct FusedProjs {
    base: FrozenLinear,
    parts: Vec<(Target, usize, Option<Lora>)>,
    /// The base and every adapted part's branch as one op (`None`: no part is adapted).
    lora: Option<ops::LoraLinear>,
}

struct Block {
    qkv: FusedProjs,
    o: FusedProjs,
    gate_up: FusedProjs,
    down: FusedProjs,
    /// The MLP as one op, when none of its projections is adapted.
    frozen_mlp: Option<ops::FrozenMlp>,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

impl Block {
    fn groups(&self) -> [&FusedProjs; 4] {
        [&self.qkv, &self.o, &self.gate_up, &self.down]
    }
}

/// How a forward pass treats the adapter.
pub enum Adapter<'a> {
    /// The frozen base alone (the DPO reference).
    Off,
    /// Base + LoRA; dropout on the LoRA input drawn from the given generator when training.
    On(Option<&'a mut ChaCha8Rng>),
}

/// A padded batch of token sequences and the positions whose next token is scored.
#[derive(Debug, Clone, Default)]
pub struct TokenBatch {
    /// `rows × len` ids, row-major, right-padded.
    pub ids: Vec<u32>,
    pub rows: usize,
    pub len: usize,
    /// Flattened positions `row * len + t` whose output predicts a labelled token.
    pub positions: Vec<u32>,
    /// The labelled token each position predicts (the id at `t + 1`).
    pub targets: Vec<u32>,
    /// The row each scored position belongs to.
    pub row_of: Vec<u32>,
}

impl TokenBatch {
    /// Builds a batch from sequences and their label masks (`mask[t]`: token `t` is scored).
    pub fn new(seqs: &[(&[u32], &[bool])], pad_id: u32) -> Self {
        let rows = seqs.len();
        let len = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut batch = TokenBatch {
            ids: vec![pad_id; rows * len],
            rows,
            len,
            ..Default::default()
        };
        for (row, (ids, mask)) in seqs.iter().enumerate() {
            batch.ids[row * len..row * len + ids.len()].copy_from_slice(ids);
            for t in 1..ids.len() {
                if mask.get(t).copied().unwrap_or(false) {
                    batch.positions.push((row * len + t - 1) as u32);
                    batch.targets.push(ids[t]);
                    batch.row_of.push(row as u32);
                }
            }
        }
        batch
    }

    /// Tokens in the batch, padding excluded.
    pub fn real_tokens(&self, seq_lens: &[usize]) -> usize {
        seq_lens.iter().sum()
    }
}

/// The trainable model.
pub struct TrainLlama {
    pub config: LlamaConfig,
    pub lora: LoraSpec,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    head: LmHeadLogProb,
    cos: Tensor,
    sin: Tensor,
}

impl TrainLlama {
    /// Builds the model over `base` (GGUF tensor names) with fresh LoRA matrices: `A` uniform in
    /// ±1/√in (PEFT's Kaiming-uniform default), `B` zero, drawn from `seed`.
    pub fn new(
        config: LlamaConfig,
        base: &BaseWeights,
        lora: LoraSpec,
        seed: u64,
    ) -> anyhow::Result<Self> {
        if !config
            .head_count
            .is_multiple_of(config.head_count_kv.max(1))
            || !config.head_dim.is_multiple_of(2)
        {
            anyhow::bail!("unsupported attention shape: {config:?}");
        }
        if lora.rank == 0 {
            anyhow::bail!("--lora-rank must be at least 1");
        }
        let get = |name: &str| -> anyhow::Result<Tensor> {
            base.get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the model lacks tensor {name}"))?
                .to_dtype(DType::F32)
                .map_err(Into::into)
        };
        let embed = get("token_embd.weight")?.contiguous()?;
        let head_weight = match base.get("output.weight") {
            Some(w) => w.to_dtype(DType::F32)?.contiguous()?,
            None => embed.clone(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut blocks = Vec::with_capacity(config.block_count);
        for i in 0..config.block_count {
            let mut group = |targets: &[Target]| -> anyhow::Result<FusedProjs> {
                let mut weights = Vec::new();
                let mut parts = Vec::new();
                for &target in targets {
                    let weight = get(&format!("blk.{i}.{}.weight", target.gguf_name()))?;
                    let (out, inp) = weight.dims2()?;
                    let adapter = if lora.targets.contains(&target) {
                        let bound = 1.0 / (inp as f32).sqrt();
                        let a: Vec<f32> = (0..lora.rank * inp)
                            .map(|_| rng.random_range(-bound..bound))
                            .collect();
                        let a = Tensor::from_vec(a, (lora.rank, inp), &Device::Cpu)?;
                        Some(Lora {
                            a: Var::from_tensor(&a)?,
                            b: Var::zeros((out, lora.rank), DType::F32, &Device::Cpu)?,
                        })
                    } else {
                        None
                    };
                    parts.push((target, out, adapter));
                    weights.push(weight);
                }
                let base = FrozenLinear::new(Tensor::cat(&weights, 0)?)?;
                let mut offset = 0;
                let mut adapted = Vec::new();
                for (_, width, adapter) in &parts {
                    if adapter.is_some() {
                        adapted.push((offset, *width));
                    }
                    offset += width;
                }
                let fused = (!adapted.is_empty()).then(|| ops::LoraLinear {
                    weight: base.weight.clone(),
                    parts: adapted,
                    rank: lora.rank,
                    scale: lora.scale() as f32,
                });
                Ok(FusedProjs {
                    base,
                    parts,
                    lora: fused,
                })
            };
            // Drawn in the order q, k, v, o, gate, up, down.
            let qkv = group(&[Target::Q, Target::K, Target::V])?;
            let o = group(&[Target::O])?;
            let gate_up = group(&[Target::Gate, Target::Up])?;
            let down = group(&[Target::Down])?;
            let frozen_mlp = [&gate_up, &down]
                .iter()
                .all(|g| g.parts.iter().all(|(_, _, l)| l.is_none()))
                .then(|| ops::FrozenMlp {
                    gate_up: gate_up.base.weight.clone(),
                    down: down.base.weight.clone(),
                });
            blocks.push(Block {
                qkv,
                o,
                gate_up,
                down,
                frozen_mlp,
                attn_norm: get(&format!("blk.{i}.attn_norm.weight"))?,
                ffn_norm: get(&format!("blk.{i}.ffn_norm.weight"))?,
            });
        }
        let (cos, sin) = rope_tables(&config, &Device::Cpu)?;
        let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
        Ok(Self {
            norm: get("output_norm.weight")?,
            head: LmHeadLogProb {
                weight: head_weight,
            },
            config,
            lora,
            embed,
            blocks,
            cos,
            sin,
        })
    }

    /// The LoRA tensors in a fixed order, named by their Hugging Face module path
    /// (`model.layers.3.self_attn.q_proj.lora_A`), `B` of q/k in GGUF row order.
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        let mut vars = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let mut parts: Vec<(&Target, &Lora)> = block
                .groups()
                .into_iter()
                .flat_map(|g| g.parts.iter())
                .filter_map(|(t, _, l)| l.as_ref().map(|l| (t, l)))
                .collect();
            parts.sort_by_key(|(t, _)| **t);
            for (target, lora) in parts {
                let path = format!("model.layers.{i}.{}", target.hf_path());
                vars.push((format!("{path}.lora_A"), lora.a.clone()));
                vars.push((format!("{path}.lora_B"), lora.b.clone()));
            }
        }
        vars
    }

    /// The final-norm hidden states `(rows * len, d)` of a batch.
    pub fn hidden(&self, batch: &TokenBatch, adapter: &mut Adapter) -> candle_core::Result<Tensor> {
        let cfg = &self.config;
        let (rows, len) = (batch.rows, batch.len);
        if len > self.cos.dim(0)? {
            candle_core::bail!(
                "sequence of {len} tokens exceeds the context length {}",
                self.cos.dim(0)?
            );
        }
        let (n_head, n_kv, hd) = (cfg.head_count, cfg.head_count_kv, cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let ids = Tensor::new(batch.ids.as_slice(), &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, 0, len)?.contiguous()?;
        let sin = self.sin.narrow(0, 0, len)?.contiguous()?;
        let attention = ops::Attention {
            rows,
            len,
            heads: n_head,
            kv_heads: n_kv,
            head_dim: hd,
            cos,
            sin,
        };
        // With dropout drawn the LoRA branches are recorded op by op (below); otherwise each
        // layer is one op.
        let dropout = matches!(adapter, Adapter::On(Some(_))) && self.lora.dropout > 0.0;
        if !dropout {
            let on = matches!(adapter, Adapter::On(_));
            for block in &self.blocks {
                x = self.layer(block, &x, on, &attention)?;
            }
            return ops::rms_norm(&x, &self.norm, eps);
        }
        for block in &self.blocks {
            let h = ops::rms_norm(&x, &block.attn_norm, eps)?;
            let qkv = self.project(&block.qkv, &h, adapter)?;
            let y = attention.forward(&qkv)?;
            x = (self.project(&block.o, &y, adapter)? + x)?;
            let h = ops::rms_norm(&x, &block.ffn_norm, eps)?;
            if let Some(mlp) = &block.frozen_mlp {
                x = (mlp.forward(&h)? + x)?;
                continue;
            }
            let gate_up = self.project(&block.gate_up, &h, adapter)?;
            let act = ops::swiglu(&gate_up)?;
            x = (self.project(&block.down, &act, adapter)? + x)?;
        }
        ops::rms_norm(&x, &self.norm, eps)
    }

    /// The log-probability of every labelled token of the batch, `(positions,)`.
    pub fn log_probs(
        &self,
        batch: &TokenBatch,
        adapter: &mut Adapter,
    ) -> candle_core::Result<Tensor> {
        let hidden = self.hidden_at(batch, adapter)?;
        self.head.forward(&hidden, &batch.targets)
    }

    /// Logits `(rows * len, vocab)` of every position, without gradients.
    pub fn logits(&self, batch: &TokenBatch, adapter: &mut Adapter) -> candle_core::Result<Tensor> {
        self.head.logits(&self.hidden(batch, adapter)?.detach())
    }

    fn hidden_at(&self, batch: &TokenBatch, adapter: &mut Adapter) -> candle_core::Result<Tensor> {
        // Only the scored positions go through the 49k-wide output projection.
        let hidden = self.hidden(batch, adapter)?;
        let positions = Tensor::new(batch.positions.as_slice(), &Device::Cpu)?;
        hidden.index_select(&positions, 0)
    }

    /// One layer as one op ([`ops::layer`]), with the LoRA branches when `on`.
    fn layer<'b>(
        &self,
        block: &'b Block,
        x: &Tensor,
        on: bool,
        attention: &ops::Attention,
    ) -> candle_core::Result<Tensor> {
        let mut lora = Vec::new();
        let mut spec = |group: &'b FusedProjs| -> candle_core::Result<ops::ProjSpec<'b>> {
            match (&group.lora, on) {
                (Some(fused), true) => {
                    for pick in [|l: &Lora| l.a.clone(), |l: &Lora| l.b.clone()] {
                        for (_, _, l) in &group.parts {
                            if let Some(l) = l {
                                lora.push(pick(l).as_tensor().flatten_all()?);
                            }
                        }
                    }
                    Ok(ops::ProjSpec::Lora(fused))
                }
                _ => Ok(ops::ProjSpec::Frozen(&group.base)),
            }
        };
        let qkv = spec(&block.qkv)?;
        let o = spec(&block.o)?;
        let mlp = match &block.frozen_mlp {
            Some(mlp) => ops::MlpSpec::Frozen(mlp),
            None => ops::MlpSpec::Split {
                gate_up: spec(&block.gate_up)?,
                down: spec(&block.down)?,
            },
        };
        let layer = ops::LayerSpec {
            attn_norm: &block.attn_norm,
            ffn_norm: &block.ffn_norm,
            eps: self.config.rms_norm_eps as f32,
            qkv,
            o,
            mlp,
            attention,
        };
        let lora = match lora.len() {
            0 => None,
            _ => Some(Tensor::cat(&lora, 0)?),
        };
        ops::layer(&layer, x, lora.as_ref())
    }

    /// The output of a fused group's projections (`n × Σ widths`), each part with its LoRA
    /// delta when the adapter is on: one [`ops::LoraLinear`] op for the whole group, or, with
    /// dropout drawn, the base product plus one recorded branch per part.
    fn project(
        &self,
        group: &FusedProjs,
        x: &Tensor,
        adapter: &mut Adapter,
    ) -> candle_core::Result<Tensor> {
        let Adapter::On(rng) = adapter else {
            return group.base.forward(x);
        };
        let Some(fused) = &group.lora else {
            return group.base.forward(x);
        };
        if rng.is_none() || self.lora.dropout <= 0.0 {
            let stack = |pick: fn(&Lora) -> &Var| -> candle_core::Result<Tensor> {
                let parts: Vec<&Tensor> = group
                    .parts
                    .iter()
                    .filter_map(|(_, _, l)| l.as_ref().map(|l| pick(l).as_tensor()))
                    .collect();
                match parts.as_slice() {
                    [one] => Ok((*one).clone()),
                    _ => Tensor::cat(&parts, 0),
                }
            };
            return fused.forward(x, &stack(|l| &l.a)?, &stack(|l| &l.b)?);
        }
        let base = group.base.forward(x)?;
        let mut outputs = Vec::with_capacity(group.parts.len());
        let mut offset = 0;
        for (_, width, lora) in &group.parts {
            let part = base.narrow(1, offset, *width)?;
            offset += width;
            outputs.push(match lora {
                Some(lora) => (part + self.lora_delta(lora, x, rng)?)?,
                None => part,
            });
        }
        match outputs.as_slice() {
            [one] => Ok(one.clone()),
            _ => Tensor::cat(&outputs, 1),
        }
    }

    /// `scale · (drop(x)·Aᵀ)·Bᵀ`.
    fn lora_delta(
        &self,
        lora: &Lora,
        x: &Tensor,
        rng: &mut Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<Tensor> {
        let input = match rng {
            Some(rng) if self.lora.dropout > 0.0 => {
                let p = self.lora.dropout;
                let keep = 1.0 / (1.0 - p);
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                    .collect();
                (x * Tensor::from_vec(mask, x.shape(), &Device::Cpu)?)?
            }
            _ => x.clone(),
        };
        let low = input.matmul(&lora.a.as_tensor().t()?)?;
        low.matmul(&lora.b.as_tensor().t()?)? * self.lora.scale()
    }
}

/// Random base weights for a small llama config, for tests and benchmarks that need no real
/// model: normal-ish values scaled like a trained network's (unit norms, ~1/√d projections).
pub fn random_base(cfg: &LlamaConfig, ffn: usize, seed: u64) -> anyhow::Result<BaseWeights> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = cfg.embedding_length;
    let kv = cfg.head_count_kv * cfg.head_dim;
    let mut weights = BaseWeights::new();
    let matrix = |rows: usize, cols: usize, rng: &mut ChaCha8Rng| -> anyhow::Result<Tensor> {
        let bound = (3.0 / cols as f32).sqrt();
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Ok(Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)
    };
    weights.insert(
        "token_embd.weight".into(),
        matrix(cfg.vocab_size, d, &mut rng)?,
    );
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu);
    weights.insert("output_norm.weight".into(), ones(d)?);
    for i in 0..cfg.block_count {
        let shapes = [
            (Target::Q, d, d),
            (Target::K, kv, d),
            (Target::V, kv, d),
            (Target::O, d, d),
            (Target::Gate, ffn, d),
            (Target::Up, ffn, d),
            (Target::Down, d, ffn),
        ];
        for (target, rows, cols) in shapes {
            weights.insert(
                format!("blk.{i}.{}.weight", target.gguf_name()),
                matrix(rows, cols, &mut rng)?,
            );
        }
        weights.insert(format!("blk.{i}.attn_norm.weight"), ones(d)?);
        weights.insert(format!("blk.{i}.ffn_norm.weight"), ones(d)?);
    }
    Ok(weights)
}

/// A small llama shape for tests: 2 layers, hidden 64, 4 query and 2 KV heads, vocab 256.
pub fn tiny_config(vocab_size: usize) -> LlamaConfig {
    LlamaConfig {
        block_count: 2,
        embedding_length: 64,
        head_count: 4,
        head_count_kv: 2,
        head_dim: 16,
        rope_dim: 16,
        rope_freq_base: 10_000.0,
        rms_norm_eps: 1e-5,
        context_length: 256,
        vocab_size,
    }
}

/// cos/sin tables for interleaved RoPE over the whole context: `(context, head_dim / 2)`.
/// Interleaved (adjacent pairs), the rotation llama.cpp applies to GGUF's permuted q/k rows.
pub fn rope_tables(cfg: &LlamaConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let rope_dim = cfg.rope_dim.min(cfg.head_dim);
    // Dimensions past rope_dim (partial rotary) get angle 0: cos 1, sin 0, i.e. unrotated.
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            if 2 * i < rope_dim {
                1.0 / cfg.rope_freq_base.powf(2.0 * i as f32 / rope_dim as f32)
            } else {
                0.0
            }
        })
        .collect();
    let positions =
        Tensor::arange(0u32, cfg.context_length as u32, device)?.to_dtype(DType::F32)?;
    let inv_freq = Tensor::new(inv_freq.as_slice(), device)?;
    let angles = positions
        .unsqueeze(1)?
        .broadcast_mul(&inv_freq.unsqueeze(0)?)?;
    Ok((angles.cos()?, angles.sin()?))
}
