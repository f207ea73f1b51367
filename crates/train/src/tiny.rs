//! A tiny random llama written as a real GGUF — byte-level vocabulary, ChatML template,
//! random f32 weights — so tests and examples can run the whole path (tokenize, train,
//! export, load in the embedded backend) in seconds without the real model.

use crate::model::{Target, random_base, tiny_config};
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use std::path::Path;

/// ChatML, as SmolLM2 writes it (without its default system prompt).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Special tokens first (`<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2), then one token
/// per byte in GPT-2's byte-level alphabet, then [`MERGED`].
pub fn vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .into_iter()
        .map(String::from)
        .collect();
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    for byte in 0..=255u8 {
        let c = if printable(byte) {
            byte as char
        } else {
            let c = char::from_u32(next).unwrap_or('?');
            next += 1;
            c
        };
        tokens.push(c.to_string());
    }
    tokens.push(MERGED.into());
    tokens
}

/// The one merge (two NUL bytes, which no test text holds) and the token it makes. llama.cpp
/// rejects an empty merge list: candle writes an empty GGUF array with a u32 element type,
/// and llama.cpp wants strings.
pub const MERGE: &str = "Ā Ā";
pub const MERGED: &str = "ĀĀ";

/// Writes the tiny model to `path` (weights drawn from `seed`).
pub fn write_tiny_gguf(path: &Path, seed: u64) -> anyhow::Result<()> {
    use gguf_file::Value;
    let tokens = vocabulary();
    let cfg = tiny_config(tokens.len());
    let ffn = 128;
    let base = random_base(&cfg, ffn, seed)?;
    let u32v = |v: usize| Value::U32(v as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("tiny-random-llama".into())),
        ("general.alignment", Value::U32(32)),
        ("llama.block_count", u32v(cfg.block_count)),
        ("llama.embedding_length", u32v(cfg.embedding_length)),
        ("llama.feed_forward_length", u32v(ffn)),
        ("llama.attention.head_count", u32v(cfg.head_count)),
        ("llama.attention.head_count_kv", u32v(cfg.head_count_kv)),
        ("llama.rope.dimension_count", u32v(cfg.rope_dim)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_freq_base)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.context_length", u32v(cfg.context_length)),
        ("llama.vocab_size", u32v(tokens.len())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(
                (0..tokens.len())
                    .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String(MERGE.into())]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        ("tokenizer.chat_template", Value::String(CHATML.into())),
    ];
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut push = |name: String| -> anyhow::Result<()> {
        let t = base
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("tiny model lacks {name}"))?;
        tensors.push((name, QTensor::quantize(t, GgmlDType::F32)?));
        Ok(())
    };
    push("token_embd.weight".into())?;
    for i in 0..cfg.block_count {
        push(format!("blk.{i}.attn_norm.weight"))?;
        for target in Target::ALL {
            push(format!("blk.{i}.{}.weight", target.gguf_name()))?;
        }
        push(format!("blk.{i}.ffn_norm.weight"))?;
    }
    push("output_norm.weight".into())?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta, &refs)?;
    use std::io::Write;
    file.flush()?;
    Ok(())
}
