//! The text side of a request: the GGUF's chat template and tokenizer turn messages into
//! prompt ids; generated ids turn back into bytes; end-of-turn ids end generation; and JSON
//! response formats get a grammar matcher. This is what [`crate::EmbeddedChat`] does before a
//! request reaches the engine and after each token leaves it. Nothing here runs the model.
//!
//! Prompts are tokenized by our own tokenizer ([`demorecon_gguf::tokenizer`]), not by
//! llama.cpp's, so they tokenize exactly as training (`demorecon-train`) tokenizes them.

use crate::constrain::GrammarFactory;
use demorecon_gguf::template::ChatTemplate;
use demorecon_gguf::tokenizer::{GgufTokenizer, meta_str};
use demorecon_llm::{ChatRequest, LlmError, ResponseFormat};
use llguidance::Matcher;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Names of end-of-turn tokens that stop generation besides the GGUF's EOS, for chat models
/// whose EOS is not what ends an assistant turn (Llama 3's `<|eot_id|>`, ChatML's `<|im_end|>`).
const END_OF_TURN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<end_of_turn>",
];

/// A GGUF's tokenizer, chat template and stop ids.
pub struct Prompter {
    tokenizer: Arc<GgufTokenizer>,
    template: ChatTemplate,
    /// Ids that end generation; the GGUF's EOS first.
    stop_ids: Vec<u32>,
    /// Rows of the model's logits (may exceed the tokenizer's vocabulary).
    vocab_size: usize,
    grammar: OnceLock<Result<GrammarFactory, String>>,
}

impl Prompter {
    /// Reads the tokenizer and the chat template of the llama-family GGUF at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let content = demorecon_gguf::read_metadata(path)?;
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
        let config = demorecon_gguf::LlamaConfig::from_gguf(&content)?;
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
        Ok(Self {
            tokenizer,
            template,
            stop_ids,
            vocab_size: config.vocab_size,
            grammar: OnceLock::new(),
        })
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// Whether `id` ends the assistant's turn.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    /// The bytes `id` stands for in generated text (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.tokenizer.token_text_bytes(id)
    }

    /// The prompt text the chat template makes of `req.messages`.
    pub fn render(&self, req: &ChatRequest) -> Result<String, LlmError> {
        self.template.render(&req.messages).map_err(|e| {
            LlmError::InvalidRequest(format!("the chat template rejected the messages: {e:#}"))
        })
    }

    /// Prompt token ids for `req` (BOS added when the GGUF asks for it and the template did not).
    pub fn tokens(&self, req: &ChatRequest) -> Result<Vec<u32>, LlmError> {
        let text = self.render(req)?;
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

    /// A grammar matcher for `format`, or `None` for plain text. The grammar engine over the
    /// vocabulary is built on first use.
    pub fn matcher(&self, format: &ResponseFormat) -> Result<Option<Matcher>, LlmError> {
        if matches!(format, ResponseFormat::Text) {
            return Ok(None);
        }
        let factory = self.grammar.get_or_init(|| {
            GrammarFactory::new(self.tokenizer.clone(), self.vocab_size, &self.stop_ids)
                .map_err(|e| format!("building the grammar engine: {e:#}"))
        });
        match factory {
            Ok(factory) => factory.matcher(format),
            Err(e) => Err(LlmError::Model(e.clone())),
        }
    }
}
