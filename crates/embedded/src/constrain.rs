//! Constrained decoding: holds generation to a JSON schema (or to any JSON object) with
//! `llguidance`, which turns the schema into a grammar and, at every step, the grammar into a
//! mask over the vocabulary.
//!
//! llguidance needs a `toktrie::TokTrie` of every token's bytes. The ready-made adapter
//! (`toktrie_hf_tokenizers`) is pinned to an older `tokenizers` than candle's, so the trie is
//! built here from the same byte table generation decodes with; control tokens get toktrie's
//! special-token marker in front of their names, as that adapter does.
//!
//! Whitespace inside the JSON is fixed (`", "` and `": "`, no newlines): a small model given
//! free whitespace tends to spend its budget on it.

use demorecon_gguf::tokenizer::GgufTokenizer;
use demorecon_llm::{LlmError, ResponseFormat};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{self, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// The vocabulary as llguidance sees it.
struct VocabEnv {
    tokenizer: Arc<GgufTokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer.encode(text).unwrap_or_default()
        })
    }
}

/// Builds grammar matchers for one model's vocabulary.
pub struct GrammarFactory {
    factory: ParserFactory,
}

impl GrammarFactory {
    /// `vocab_size` is the model's (logits) vocabulary; `stop_ids` the ids that end a turn,
    /// the first being the GGUF's EOS.
    pub fn new(
        tokenizer: Arc<GgufTokenizer>,
        vocab_size: usize,
        stop_ids: &[u32],
    ) -> anyhow::Result<Self> {
        let eos = stop_ids.first().copied().unwrap_or(0);
        let mut info = TokRxInfo::new(vocab_size as u32, eos);
        info.tok_bos = tokenizer.bos_id;
        let mut words: Vec<Vec<u8>> = Vec::with_capacity(vocab_size);
        for id in 0..vocab_size as u32 {
            let bytes = if id as usize >= tokenizer.vocab_size() {
                // Padding rows some GGUFs have past the tokenizer's vocabulary.
                special_word(&format!("<[{id}]>"))
            } else if tokenizer.is_special(id) {
                special_word(tokenizer.token_name(id).unwrap_or_default())
            } else {
                tokenizer.token_text_bytes(id).to_vec()
            };
            words.push(bytes);
        }
        let mut trie = TokTrie::from(&info, &words);
        if stop_ids.len() > 1 {
            trie = trie.with_eos_tokens(stop_ids);
        }
        let env: TokEnv = Arc::new(VocabEnv { tokenizer, trie });
        let mut factory = ParserFactory::new_simple(&env)?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// A fresh matcher for `format`, or `None` for plain text.
    pub fn matcher(&self, format: &ResponseFormat) -> Result<Option<Matcher>, LlmError> {
        let schema = match format {
            ResponseFormat::Text => return Ok(None),
            ResponseFormat::JsonObject => serde_json::json!({ "type": "object" }),
            ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
        };
        match self.parser_for(&schema, false) {
            Ok(matcher) => Ok(Some(matcher)),
            Err(strict) => {
                // A schema using keywords llguidance does not support still gets the
                // structure it can enforce; the caller's strict parser checks the rest.
                tracing::warn!(error = %strict, "JSON schema not fully supported; constraining leniently");
                self.parser_for(&schema, true).map(Some).map_err(|e| {
                    LlmError::InvalidRequest(format!("unsupported JSON schema: {strict}; {e}"))
                })
            }
        }
    }

    fn parser_for(&self, schema: &serde_json::Value, lenient: bool) -> anyhow::Result<Matcher> {
        let mut schema = schema.clone();
        let is_boolean = schema.is_boolean();
        match schema.as_object_mut() {
            Some(object) => {
                object.entry("x-guidance").or_insert_with(|| {
                    serde_json::json!({
                        "whitespace_flexible": false,
                        "item_separator": ", ",
                        "key_separator": ": ",
                        "lenient": lenient,
                    })
                });
            }
            None if is_boolean => {}
            None => anyhow::bail!("a JSON schema must be an object"),
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self.factory.create_parser(grammar)?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            anyhow::bail!("{error}");
        }
        Ok(matcher)
    }
}

fn special_word(name: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(TokTrie::SPECIAL_TOKEN_MARKER);
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

/// Sets every logit the mask forbids to `-inf`.
pub fn apply_mask(logits: &mut [f32], mask: &SimpleVob) {
    for (id, logit) in logits.iter_mut().enumerate() {
        if !mask.is_allowed(id as toktrie::TokenId) {
            *logit = f32::NEG_INFINITY;
        }
    }
}
