//! The tokenizer carried inside a GGUF: a Hugging Face `tokenizers` BPE built from the GGUF's
//! vocabulary and merges, plus a per-token byte table for decoding and for the grammar engine.
//!
//! candle's `TokenizerFromGguf` builds the BPE, but for `tokenizer.ggml.pre` values it does not
//! know (SmolLM2's is `smollm`) it falls back to a GPT-2 pre-tokenizer that adds a prefix space
//! and does not split digits, which gives wrong ids. The pre-tokenizer is therefore replaced by
//! the one SmolLM2's `tokenizer.json` declares: `Digits(individual_digits)` then
//! `ByteLevel(add_prefix_space = false, trim_offsets, use_regex)`.
//!
//! Decoding does not go through `Tokenizer::decode`: every id maps to the raw bytes it stands
//! for (the inverse of the byte-level alphabet), so streaming can emit exactly the complete
//! UTF-8 characters produced so far, and the same table feeds `toktrie`.

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use std::collections::HashMap;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_UNKNOWN: u32 = 2;
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;
const TOKEN_TYPE_UNUSED: u32 = 5;

/// A GGUF's tokenizer with the byte table generation and constrained decoding need.
pub struct GgufTokenizer {
    inner: tokenizers::Tokenizer,
    /// What each id decodes to in generated text; empty for control tokens.
    text_bytes: Vec<Vec<u8>>,
    /// Which ids are control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
    special: Vec<bool>,
    /// Token strings as the GGUF lists them, for the grammar engine's special-token names.
    tokens: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Whether the GGUF asks for a BOS token in front of every prompt.
    pub add_bos: bool,
}

impl GgufTokenizer {
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_gguf(content)
            .map_err(|e| anyhow::anyhow!("building the tokenizer from the GGUF: {e}"))?;
        let pre = meta_str(content, "tokenizer.ggml.pre").unwrap_or("gpt2");
        // Pre-tokenizers candle reproduces faithfully keep candle's; the rest get SmolLM's,
        // which for plain GPT-2 style vocabularies differs only in splitting digits.
        if !matches!(pre, "qwen2" | "llama3" | "smaug-bpe" | "lfm2") {
            if pre != "smollm" && pre != "gpt2" {
                tracing::warn!(
                    pre,
                    "unknown tokenizer.ggml.pre; using SmolLM's pre-tokenizer"
                );
            }
            let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
            if pre == "smollm" {
                steps.push(Digits::new(true).into());
            }
            steps.push(ByteLevel::new(false, true, true).into());
            inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        }

        let tokens: Vec<String> = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(values)) => values
                .iter()
                .map(|v| v.to_string().map(|s| s.to_string()).unwrap_or_default())
                .collect(),
            _ => anyhow::bail!("the GGUF has no tokenizer.ggml.tokens"),
        };
        let types: Vec<u32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(gguf_file::Value::Array(values)) => {
                values.iter().map(|v| value_u32(v).unwrap_or(1)).collect()
            }
            _ => vec![1; tokens.len()],
        };
        let char_to_byte = byte_level_alphabet();
        let mut text_bytes = Vec::with_capacity(tokens.len());
        let mut special = Vec::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            let kind = types.get(id).copied().unwrap_or(1);
            let looks_special = token.starts_with('<') && token.ends_with('>');
            let is_special = matches!(
                kind,
                TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNUSED
            ) || (kind == TOKEN_TYPE_USER_DEFINED && looks_special);
            special.push(is_special);
            if is_special {
                text_bytes.push(Vec::new());
            } else if kind == TOKEN_TYPE_USER_DEFINED {
                // User-defined tokens are stored as plain text, not in the byte-level alphabet.
                text_bytes.push(token.as_bytes().to_vec());
            } else {
                let bytes: Option<Vec<u8>> = token
                    .chars()
                    .map(|c| char_to_byte.get(&c).copied())
                    .collect();
                text_bytes.push(bytes.unwrap_or_else(|| token.as_bytes().to_vec()));
            }
        }
        let bos_id = meta_u32(content, "tokenizer.ggml.bos_token_id");
        let eos_id = meta_u32(content, "tokenizer.ggml.eos_token_id");
        let add_bos = matches!(
            content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(gguf_file::Value::Bool(true))
        );
        Ok(Self {
            inner,
            text_bytes,
            special,
            tokens,
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// Token ids of `text`; control-token names in it (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The Hugging Face `tokenizer.json` text of this tokenizer (with the pre-tokenizer fix),
    /// for exporting a model that `transformers` can load.
    pub fn to_hf_json(&self) -> anyhow::Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The bytes `id` contributes to generated text (nothing for control tokens).
    pub fn token_text_bytes(&self, id: u32) -> &[u8] {
        self.text_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text the way generation does (control tokens dropped, invalid UTF-8
    /// replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_text_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The token string the GGUF lists for `id`.
    pub fn token_name(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id whose token string is exactly `name`.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == name).map(|i| i as u32)
    }
}

/// GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte.
fn byte_level_alphabet() -> HashMap<char, u8> {
    let self_mapped = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut next = 0x100u32;
    for byte in 0..=255u8 {
        if self_mapped(byte) {
            map.insert(byte as char, byte);
        } else {
            if let Some(c) = char::from_u32(next) {
                map.insert(c, byte);
            }
            next += 1;
        }
    }
    map
}

pub fn meta_str<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a str> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

pub fn meta_u32(content: &gguf_file::Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(value_u32)
}

fn value_u32(value: &gguf_file::Value) -> Option<u32> {
    use gguf_file::Value::*;
    match value {
        U8(v) => Some(u32::from(*v)),
        I8(v) => u32::try_from(*v).ok(),
        U16(v) => Some(u32::from(*v)),
        I16(v) => u32::try_from(*v).ok(),
        U32(v) => Some(*v),
        I32(v) => u32::try_from(*v).ok(),
        U64(v) => u32::try_from(*v).ok(),
        I64(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}
