//! Reading a llama-family GGUF without running it: its hyper-parameters ([`config`]), the
//! tokenizer it carries ([`tokenizer`]), its chat template ([`template`]), and the model
//! store that fetches and pins the default GGUF, SmolLM2-135M-Instruct Q4_1 ([`store`]).
//!
//! Shared by the inference engine (`demorecon-embedded`) and training (`demorecon-train`), so
//! both tokenize and template prompts identically. Nothing here computes with the weights.

pub mod config;
pub mod store;
pub mod template;
pub mod tokenizer;

pub use candle_core::quantized::gguf_file;
pub use config::{LlamaConfig, model_name};
pub use store::{FetchReport, StoreError, ensure_model, fetch};

/// Reads the header of the GGUF at `path`: its metadata and tensor table, not the weights.
pub fn read_metadata(path: &std::path::Path) -> anyhow::Result<gguf_file::Content> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("opening the model {}: {e}", path.display()))?;
    gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF: {e}", path.display()))
}
