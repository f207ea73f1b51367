//! A llama-family decoder for inference, loaded from a GGUF, with a KV cache.
//!
//! This is candle-transformers' `quantized_llama` trimmed to what inference on a small model
//! needs, written here so the weights' in-memory format can be chosen at load
//! ([`WeightFormat`]) and the KV cache is preallocated instead of re-concatenated every step.
//! GGUF stores q/k rows permuted for interleaved RoPE, hence `rope_i`. `forward` returns the
//! logits of the last position only; training uses its own model.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::kv_cache::KvCache;
use std::io::{Read, Seek};
use std::str::FromStr;
use std::sync::Arc;

/// How the linear layers' weights are held in memory. See the crate docs for measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the GGUF, multiplied by candle's quantized kernels.
    Quantized,
    /// Dequantized to f32 at load; multiplied by `gemm`.
    F32,
    /// Dequantized to f16 at load.
    F16,
    /// Re-quantized to Q8_0 at load (candle has SIMD kernels for Q8_0 but not for Q4_1).
    /// The fastest measured; each weight moves by at most 1/254 of its block's largest magnitude.
    #[default]
    Q8_0,
    /// Q8_0 with the input dimension zero-padded to a multiple of 256, which is what candle's
    /// AVX512-VNNI repacked kernels require (SmolLM2's 576 is not).
    Q8_0Padded,
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "quantized" | "gguf" | "q" => Ok(Self::Quantized),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q8_0_padded" | "q8p" => Ok(Self::Q8_0Padded),
            other => Err(format!(
                "unknown weight format `{other}` (quantized, f32, f16, q8_0, q8_0_padded)"
            )),
        }
    }
}

impl WeightFormat {
    /// The canonical name, as `FromStr` accepts it; part of the cache identity, because
    /// different formats give (slightly) different logits.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quantized => "quantized",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q8_0Padded => "q8_0_padded",
        }
    }
}

/// The hyper-parameters read from `<arch>.*` GGUF keys.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub block_count: usize,
    pub embedding_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f64,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl LlamaConfig {
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let arch = crate::tokenizer::meta_str(content, "general.architecture")
            .unwrap_or("llama")
            .to_string();
        let get = |key: &str| -> anyhow::Result<&gguf_file::Value> {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .ok_or_else(|| anyhow::anyhow!("the GGUF lacks {arch}.{key}"))
        };
        let int = |key: &str| -> anyhow::Result<usize> {
            let value = get(key)?;
            value
                .to_u32()
                .map(|v| v as usize)
                .or_else(|_| value.to_u64().map(|v| v as usize))
                .map_err(|e| anyhow::anyhow!("{arch}.{key}: {e}"))
        };
        let embedding_length = int("embedding_length")?;
        let head_count = int("attention.head_count")?;
        let head_count_kv = int("attention.head_count_kv").unwrap_or(head_count);
        let head_dim = embedding_length / head_count.max(1);
        let vocab_size = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(tokens)) => tokens.len(),
            _ => int("vocab_size")?,
        };
        Ok(Self {
            block_count: int("block_count")?,
            embedding_length,
            head_count,
            head_count_kv,
            head_dim,
            rope_dim: int("rope.dimension_count").unwrap_or(head_dim),
            rope_freq_base: get("rope.freq_base")
                .and_then(|v| Ok(v.to_f32()?))
                .unwrap_or(10_000.0),
            rms_norm_eps: get("attention.layer_norm_rms_epsilon")
                .and_then(|v| Ok(v.to_f32()?))
                .unwrap_or(1e-5) as f64,
            context_length: int("context_length").unwrap_or(4096),
            vocab_size,
        })
    }
}

/// One decoder block. q/k/v and gate/up are each stored as one matrix (their rows stacked)
/// so a step runs two matmuls where it would run five: fewer dispatches, and larger ones that
/// split better across threads.
struct Layer {
    wqkv: Linear,
    wo: Linear,
    w_gate_up: Linear,
    w_down: Linear,
    ffn_len: usize,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    kv: KvCache,
}

/// The decoder and its KV cache.
pub struct Llama {
    pub config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    /// How many positions the KV cache holds.
    pos: usize,
    device: Device,
}

/// The KV cache grows in chunks of this many positions.
const KV_CHUNK: usize = 512;

impl Llama {
    /// Reads every tensor of a llama-family GGUF onto `device`, in the given format.
    pub fn load<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        format: WeightFormat,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let config = LlamaConfig::from_gguf(content)?;
        if config.head_count % config.head_count_kv.max(1) != 0 || config.head_dim % 2 != 0 {
            anyhow::bail!("unsupported attention shape: {config:?}");
        }
        let mut tensor = |name: &str| -> anyhow::Result<QTensor> {
            content
                .tensor(reader, name, device)
                .map_err(|e| anyhow::anyhow!("reading tensor {name}: {e}"))
        };
        let embed_q = tensor("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let output = match tensor("output.weight") {
            Ok(q) => linear(q, format)?,
            // Tied embeddings: reuse the f32 copy when the layers are f32 anyway.
            Err(_) if format == WeightFormat::F32 => Linear {
                inner: QMatMul::Tensor(embed.clone()),
                pad: 0,
            },
            Err(_) => linear(embed_q, format)?,
        };
        let mut layers = Vec::with_capacity(config.block_count);
        for i in 0..config.block_count {
            let p = format!("blk.{i}");
            let q = tensor(&format!("{p}.attn_q.weight"))?;
            let k = tensor(&format!("{p}.attn_k.weight"))?;
            let v = tensor(&format!("{p}.attn_v.weight"))?;
            let gate = tensor(&format!("{p}.ffn_gate.weight"))?;
            let up = tensor(&format!("{p}.ffn_up.weight"))?;
            let ffn_len = gate.shape().dims2()?.0;
            layers.push(Layer {
                wqkv: linear(stack_rows(&[q, k, v])?, format)?,
                wo: linear(tensor(&format!("{p}.attn_output.weight"))?, format)?,
                w_gate_up: linear(stack_rows(&[gate, up])?, format)?,
                w_down: linear(tensor(&format!("{p}.ffn_down.weight"))?, format)?,
                ffn_len,
                attn_norm: tensor(&format!("{p}.attn_norm.weight"))?.dequantize(device)?,
                ffn_norm: tensor(&format!("{p}.ffn_norm.weight"))?.dequantize(device)?,
                kv: KvCache::new(2, KV_CHUNK),
            });
        }
        let (cos, sin) = rope_tables(&config, device)?;
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            pos: 0,
            device: device.clone(),
        })
    }

    /// Forgets the KV cache; the next `forward` starts a new sequence at position 0.
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.kv.reset();
        }
        self.pos = 0;
    }

    /// Positions already in the KV cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Runs `tokens` (appended after the cached positions) and returns the logits of the last
    /// one as a `vocab_size` vector.
    pub fn forward(&mut self, tokens: &[u32]) -> candle_core::Result<Vec<f32>> {
        let seq_len = tokens.len();
        if seq_len == 0 {
            candle_core::bail!("forward needs at least one token");
        }
        if self.pos + seq_len > self.cos.dim(0)? {
            candle_core::bail!(
                "sequence of {} positions exceeds the context length {}",
                self.pos + seq_len,
                self.cos.dim(0)?
            );
        }
        let cfg = &self.config;
        let (n_head, n_kv, hd) = (cfg.head_count, cfg.head_count_kv, cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let cos = self.cos.narrow(0, self.pos, seq_len)?;
        let sin = self.sin.narrow(0, self.pos, seq_len)?;
        let n_rep = n_head / n_kv;
        let mask = if seq_len > 1 {
            Some(causal_mask(seq_len, self.pos, n_rep, &self.device)?)
        } else {
            None
        };
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &mut self.layers {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let qkv = layer.wqkv.forward(&h)?;
            let heads = |start: usize, n: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, start * hd, n * hd)?
                    .reshape((1, seq_len, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(0, n_head)?;
            let k = heads(n_head, n_kv)?;
            let v = heads(n_head + n_kv, n_kv)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = layer.kv.append(&k, &v)?;
            // Grouped-query attention without copying the cache per head: the n_rep query
            // heads that share a KV head become n_rep * seq_len query rows against it.
            let q = q.reshape((1, n_kv, n_rep * seq_len, hd))?;
            let mut att = (q.matmul(&k.t()?)? * scale)?;
            if let Some(mask) = &mask {
                att = att.broadcast_add(mask)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v)?
                .reshape((1, n_head, seq_len, hd))?
                .transpose(1, 2)?
                .reshape((1, seq_len, cfg.embedding_length))?;
            x = (layer.wo.forward(&y)? + x)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate_up = layer.w_gate_up.forward(&h)?;
            let gate = candle_nn::ops::silu(&gate_up.narrow(2, 0, layer.ffn_len)?)?;
            let up = gate_up.narrow(2, layer.ffn_len, layer.ffn_len)?;
            x = (layer.w_down.forward(&(gate * up)?)? + x)?;
        }
        self.pos += seq_len;
        let last = x.i((.., seq_len - 1, ..))?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self.output.forward(&last)?;
        logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()
    }
}

/// A weight matrix and how many zero columns were appended to it (the input is padded to
/// match before the product).
struct Linear {
    inner: QMatMul,
    pad: usize,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.pad == 0 {
            self.inner.forward(x)
        } else {
            self.inner
                .forward(&x.pad_with_zeros(candle_core::D::Minus1, 0, self.pad)?)
        }
    }
}

fn linear(q: QTensor, format: WeightFormat) -> anyhow::Result<Linear> {
    let device = q.device();
    let plain = |inner| Ok(Linear { inner, pad: 0 });
    if matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
        return plain(QMatMul::Tensor(q.dequantize(&device)?));
    }
    match format {
        WeightFormat::Quantized => plain(QMatMul::QTensor(Arc::new(q))),
        WeightFormat::F32 => plain(QMatMul::Tensor(q.dequantize(&device)?)),
        WeightFormat::F16 => plain(QMatMul::TensorF16(q.dequantize_f16(&device)?)),
        WeightFormat::Q8_0 if q.dtype() == GgmlDType::Q8_0 => plain(QMatMul::QTensor(Arc::new(q))),
        WeightFormat::Q8_0 => {
            let f = q.dequantize(&device)?;
            plain(QMatMul::QTensor(Arc::new(QTensor::quantize(
                &f,
                GgmlDType::Q8_0,
            )?)))
        }
        WeightFormat::Q8_0Padded => {
            let f = q.dequantize(&device)?;
            let k = f.dim(1)?;
            let pad = k.next_multiple_of(256) - k;
            let f = if pad > 0 {
                f.pad_with_zeros(1, 0, pad)?
            } else {
                f
            };
            let inner = QMatMul::QTensor(Arc::new(QTensor::quantize(&f, GgmlDType::Q8_0)?));
            Ok(Linear { inner, pad })
        }
    }
}

/// Stacks 2-D quantized matrices with equal row length on top of each other. Quantized rows
/// are whole blocks, so the raw bytes simply concatenate: exact for every GGML type.
fn stack_rows(parts: &[QTensor]) -> anyhow::Result<QTensor> {
    let dtype = parts[0].dtype();
    let cols = parts[0].shape().dims2()?.1;
    let mut rows = 0;
    let mut bytes = Vec::new();
    for part in parts {
        let (r, c) = part.shape().dims2()?;
        if c != cols || part.dtype() != dtype {
            anyhow::bail!(
                "cannot stack {:?} {:?} under {dtype:?} with {cols} columns",
                part.dtype(),
                part.shape()
            );
        }
        rows += r;
        bytes.extend_from_slice(&part.data()?);
    }
    let device = parts[0].device();
    let storage = candle_core::quantized::QStorage::from_data(
        std::borrow::Cow::Owned(bytes),
        &device,
        dtype,
    )?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// cos/sin tables for interleaved RoPE over the whole context: `(context, head_dim / 2)`.
/// Shared with the trainable model, which must rotate exactly as inference does.
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

/// Additive mask `(n_rep * seq_len, offset + seq_len)`: 0 where a query may look, -inf ahead
/// of it; the `seq_len` rows repeat once per query head sharing a KV head.
fn causal_mask(
    seq_len: usize,
    offset: usize,
    n_rep: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let total = offset + seq_len;
    let mask: Vec<f32> = (0..n_rep * seq_len)
        .flat_map(|row| {
            let i = row % seq_len;
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n_rep * seq_len, total), device)
}
