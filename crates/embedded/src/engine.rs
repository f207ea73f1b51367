//! [`EmbeddedModel`]: one loaded GGUF and the generation loop around it — prompt rendering,
//! prefill, sampling, grammar masks, stop tokens and stop strings, and streaming of complete
//! UTF-8 text.
//!
//! Streaming holds back any tail of the text that could still grow into a stop string, so
//! what was streamed is always a prefix of the final text and the deltas concatenate to it.

use crate::constrain::{GrammarFactory, apply_mask};
use crate::model::{Llama, WeightFormat};
use crate::sampler::Sampler;
use crate::store;
use crate::template::ChatTemplate;
use crate::tokenizer::{GgufTokenizer, meta_str};
use candle_core::Device;
use candle_core::quantized::gguf_file;
use demorecon_llm::{BackendIdentity, ChatRequest, ChatResponse, FinishReason, LlmError, Usage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names of end-of-turn tokens that stop generation besides the GGUF's EOS, for chat models
/// whose EOS is not what ends an assistant turn (Llama 3's `<|eot_id|>`, ChatML's `<|im_end|>`).
const END_OF_TURN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<end_of_turn>",
];

/// The model id of the GGUF at `path`: its file stem.
pub fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embedded".into())
}

fn identity_with(model: String, sha256: &str, weights: WeightFormat) -> BackendIdentity {
    BackendIdentity {
        kind: "embedded".into(),
        model,
        detail: format!("{sha256}:{}", weights.as_str()),
    }
}

/// The identity a model at `path` loaded with `weights` would have, without loading it (for
/// answering from the cache offline). Hashes the file unless its stamp is current.
pub fn identity_of(path: &Path, weights: WeightFormat) -> Result<BackendIdentity, LlmError> {
    let digest = store::cached_sha256(path).map_err(|e| LlmError::Model(e.to_string()))?;
    Ok(identity_with(model_name(path), &digest, weights))
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// In-memory format of the linear layers; the default is the fastest measured on CPU.
    pub weight_format: WeightFormat,
    /// Cap on the context length (default: what the GGUF declares).
    pub max_context: Option<usize>,
}

/// A loaded GGUF ready to answer chat requests, one at a time.
pub struct EmbeddedModel {
    llama: Llama,
    tokenizer: Arc<GgufTokenizer>,
    template: ChatTemplate,
    /// Ids that end generation; the GGUF's EOS first.
    stop_ids: Vec<u32>,
    grammar: Option<GrammarFactory>,
    name: String,
    path: PathBuf,
    sha256: Option<String>,
    weight_format: WeightFormat,
}

impl EmbeddedModel {
    /// Loads a llama-family GGUF that carries `tokenizer.chat_template`.
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<Self> {
        let device = default_device();
        let mut file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("opening the model {}: {e}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF: {e}", path.display()))?;
        let arch = meta_str(&content, "general.architecture").unwrap_or("llama");
        if arch != "llama" {
            anyhow::bail!(
                "{} is a `{arch}` model; only llama-family GGUFs are supported",
                path.display()
            );
        }
        let template_source = meta_str(&content, "tokenizer.chat_template").ok_or_else(|| {
            anyhow::anyhow!(
                "{} carries no tokenizer.chat_template; use a chat/instruct GGUF",
                path.display()
            )
        })?;
        let tokenizer = Arc::new(GgufTokenizer::from_gguf(&content)?);
        let token_str = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_name(id))
                .unwrap_or_default()
                .to_string()
        };
        let template = ChatTemplate::new(
            template_source,
            &token_str(tokenizer.bos_id),
            &token_str(tokenizer.eos_id),
        )?;
        let mut llama = Llama::load(&content, &mut file, options.weight_format, &device)?;
        if let Some(cap) = options.max_context {
            llama.config.context_length = llama.config.context_length.min(cap.max(1));
        }
        let mut stop_ids: Vec<u32> = tokenizer.eos_id.into_iter().collect();
        for name in END_OF_TURN_NAMES {
            if let Some(id) = tokenizer.id_of(name)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        if stop_ids.is_empty() {
            anyhow::bail!("{} names no EOS token", path.display());
        }
        let name = model_name(path);
        Ok(Self {
            llama,
            tokenizer,
            template,
            stop_ids,
            grammar: None,
            name,
            path: path.to_path_buf(),
            sha256: None,
            weight_format: options.weight_format,
        })
    }

    /// The model id: the GGUF's file stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn context_length(&self) -> usize {
        self.llama.config.context_length
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// sha256 of the GGUF file, computed once (and remembered across runs by a stamp file).
    pub fn sha256(&mut self) -> Result<String, LlmError> {
        if let Some(digest) = &self.sha256 {
            return Ok(digest.clone());
        }
        let digest =
            store::cached_sha256(&self.path).map_err(|e| LlmError::Model(e.to_string()))?;
        self.sha256 = Some(digest.clone());
        Ok(digest)
    }

    /// Who this backend is, for cache keys.
    pub fn identity(&mut self) -> Result<BackendIdentity, LlmError> {
        Ok(identity_with(
            self.name.clone(),
            &self.sha256()?,
            self.weight_format,
        ))
    }

    /// The prompt text the chat template makes of `req.messages`.
    pub fn render_prompt(&self, req: &ChatRequest) -> Result<String, LlmError> {
        self.template.render(&req.messages).map_err(|e| {
            LlmError::InvalidRequest(format!("the chat template rejected the messages: {e:#}"))
        })
    }

    /// Prompt token ids for `req` (BOS added when the GGUF asks for it and the template did not).
    pub fn prompt_tokens(&self, req: &ChatRequest) -> Result<Vec<u32>, LlmError> {
        let text = self.render_prompt(req)?;
        let mut ids = self
            .tokenizer
            .encode(&text)
            .map_err(|e| LlmError::Model(e.to_string()))?;
        if self.tokenizer.add_bos
            && let Some(bos) = self.tokenizer.bos_id
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Answers `req`, calling `on_text` with each new piece of text as it is produced (the
    /// pieces concatenate to the returned text).
    pub fn generate(
        &mut self,
        req: &ChatRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        let prompt = self.prompt_tokens(req)?;
        let context = self.context_length();
        if prompt.len() >= context {
            return Err(LlmError::InvalidRequest(format!(
                "the prompt is {} tokens but {} holds {context} tokens of context",
                prompt.len(),
                self.name
            )));
        }
        let budget = (req.sampling.max_tokens as usize).min(context - prompt.len());
        let mut matcher = match req.response_format {
            demorecon_llm::ResponseFormat::Text => None,
            ref format => self.grammar()?.matcher(format)?,
        };
        let mut sampler = Sampler::new(
            req.sampling.temperature,
            req.sampling.top_p,
            req.sampling.seed,
        );
        let mut text = StopScanner::new(&req.sampling.stop);
        let mut completion_tokens = 0usize;
        let mut finish = FinishReason::Length;

        self.llama.reset();
        if budget > 0 {
            let mut logits = self.llama.forward(&prompt).map_err(model_err)?;
            loop {
                if let Some(m) = matcher.as_mut() {
                    let mask = m
                        .compute_mask()
                        .map_err(|e| LlmError::Model(format!("grammar: {e}")))?;
                    apply_mask(&mut logits, &mask);
                }
                let Some(token) = sampler.sample(&logits) else {
                    return Err(LlmError::Model(
                        "every token was ruled out; the grammar cannot continue".into(),
                    ));
                };
                if self.stop_ids.contains(&token) {
                    finish = FinishReason::Stop;
                    break;
                }
                if let Some(m) = matcher.as_mut() {
                    m.consume_token(token)
                        .map_err(|e| LlmError::Model(format!("grammar: {e}")))?;
                }
                completion_tokens += 1;
                if text.push(self.tokenizer.token_text_bytes(token), on_text) {
                    finish = FinishReason::Stop;
                    break;
                }
                if matcher.as_ref().is_some_and(|m| m.is_stopped()) {
                    finish = FinishReason::Stop;
                    break;
                }
                if completion_tokens >= budget {
                    break;
                }
                logits = self.llama.forward(&[token]).map_err(model_err)?;
            }
        }
        let text = text.finish(on_text);
        Ok(ChatResponse {
            text,
            finish_reason: finish,
            usage: Usage {
                prompt_tokens: prompt.len() as u64,
                completion_tokens: completion_tokens as u64,
            },
            model: self.name.clone(),
            cached: false,
        })
    }

    fn grammar(&mut self) -> Result<&GrammarFactory, LlmError> {
        if self.grammar.is_none() {
            let factory = GrammarFactory::new(
                self.tokenizer.clone(),
                self.llama.config.vocab_size,
                &self.stop_ids,
            )
            .map_err(|e| LlmError::Model(format!("building the grammar engine: {e:#}")))?;
            self.grammar = Some(factory);
        }
        Ok(self.grammar.as_ref().expect("just set"))
    }

    /// Runs `tokens` through the model from an empty cache and returns the last logits: for
    /// benchmarks and tests.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        self.llama.reset();
        self.llama.forward(tokens).map_err(model_err)
    }

    /// Feeds one more token after [`prefill`](Self::prefill) and returns its logits.
    pub fn decode_step(&mut self, token: u32) -> Result<Vec<f32>, LlmError> {
        self.llama.forward(&[token]).map_err(model_err)
    }
}

fn model_err(e: candle_core::Error) -> LlmError {
    LlmError::Model(e.to_string())
}

fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(device) = Device::new_cuda(0) {
            return device;
        }
    }
    Device::Cpu
}

/// Generated bytes, the stop-string check over them, and how much has been streamed.
struct StopScanner<'a> {
    stops: Vec<&'a str>,
    bytes: Vec<u8>,
    /// Bytes already sent to the stream (always a char boundary of valid text).
    emitted: usize,
}

impl<'a> StopScanner<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops: stops
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            bytes: Vec::new(),
            emitted: 0,
        }
    }

    /// Appends a token's bytes and streams what is safe; true when a stop string appeared
    /// (the text is then cut where it begins).
    fn push(&mut self, piece: &[u8], on_text: &mut dyn FnMut(&str)) -> bool {
        let searched_to = self.valid_len();
        self.bytes.extend_from_slice(piece);
        let valid = self.valid_len();
        let text = std::str::from_utf8(&self.bytes[..valid]).unwrap_or_default();
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        // A new match must end past what was searched before, so it starts no earlier than this.
        let mut from = searched_to
            .saturating_sub(longest.saturating_sub(1))
            .max(self.emitted);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| text[from..].find(s).map(|i| from + i))
            .min();
        if let Some(at) = hit {
            self.bytes.truncate(at);
            return true;
        }
        // Hold back the longest tail that could still become a stop string.
        let mut safe = valid;
        for stop in &self.stops {
            for len in (1..stop.len()).rev() {
                if len <= valid - self.emitted
                    && stop.is_char_boundary(len)
                    && text.ends_with(&stop[..len])
                {
                    safe = safe.min(valid - len);
                    break;
                }
            }
        }
        if safe > self.emitted {
            on_text(&text[self.emitted..safe]);
            self.emitted = safe;
        }
        false
    }

    /// Length of the longest valid UTF-8 prefix.
    fn valid_len(&self) -> usize {
        match std::str::from_utf8(&self.bytes) {
            Ok(_) => self.bytes.len(),
            Err(e) => e.valid_up_to(),
        }
    }

    /// The final text; streams whatever was held back.
    fn finish(self, on_text: &mut dyn FnMut(&str)) -> String {
        let text = String::from_utf8_lossy(&self.bytes).into_owned();
        if text.len() > self.emitted {
            on_text(&text[self.emitted..]);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut scanner = StopScanner::new(&stops);
        let mut deltas = Vec::new();
        let mut stopped = false;
        for piece in pieces {
            if scanner.push(piece, &mut |t| deltas.push(t.to_string())) {
                stopped = true;
                break;
            }
        }
        let text = scanner.finish(&mut |t| deltas.push(t.to_string()));
        (text, deltas, stopped)
    }

    #[test]
    fn stop_string_split_across_tokens_is_cut_and_never_streamed() {
        let (text, deltas, stopped) = run(&["\n\n"], &[b"Hello", b" world\n", b"\nmore"]);
        assert!(stopped);
        assert_eq!(text, "Hello world");
        assert_eq!(deltas.concat(), text);
        assert!(deltas.iter().all(|d| !d.contains('\n')), "{deltas:?}");
    }

    #[test]
    fn multibyte_characters_are_streamed_whole() {
        let euro = "€".as_bytes();
        let (text, deltas, stopped) = run(&[], &[b"a", &euro[..1], &euro[1..], b"b"]);
        assert!(!stopped);
        assert_eq!(text, "a€b");
        assert_eq!(deltas, vec!["a", "€", "b"]);
    }

    #[test]
    fn a_false_start_of_a_stop_string_is_released() {
        let (text, deltas, stopped) = run(&["END"], &[b"the EN", b"D", b"x"]);
        assert!(stopped);
        assert_eq!(text, "the ");
        assert_eq!(deltas.concat(), text);
        let (text, deltas, _) = run(&["END"], &[b"the EN", b"Dx"]);
        assert_eq!(text, "the ");
        assert_eq!(deltas.concat(), "the ");
        let (text, deltas, stopped) = run(&["END"], &[b"the EN", b"ough"]);
        assert!(!stopped);
        assert_eq!(text, "the ENough");
        assert_eq!(deltas.concat(), text);
    }
}
