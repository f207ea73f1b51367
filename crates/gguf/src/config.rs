//! What a GGUF says about the model it holds, without loading any weights: the llama
//! hyper-parameters ([`LlamaConfig`], from the `<arch>.*` keys) and the model's name.
//! Running the model is the inference engine's job (`demorecon-embedded`), training it
//! `demorecon-train`'s.

use candle_core::quantized::gguf_file;
use std::path::Path;

/// The model id of the GGUF at `path`: its file stem.
pub fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embedded".into())
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
