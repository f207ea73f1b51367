//! The embedded backend: a llama-family GGUF (by default SmolLM2-135M-Instruct, Q4_1) run in
//! process on candle, with no server and no Python.
//!
//! - [`store`] fetches and pins the default GGUF ([`ensure_model`], [`fetch`]).
//! - [`EmbeddedModel`] loads a GGUF and generates synchronously; [`EmbeddedChat`] puts it
//!   behind the async [`demorecon_llm::ChatModel`] trait.
//! - The tokenizer and the chat template come from the GGUF itself ([`tokenizer`],
//!   [`template`]); JSON output is held to a schema by `llguidance` ([`constrain`]).
//!
//! # Speed on CPU
//!
//! Measured on the project's 2-core machine (see `scripts/bench-embedded.sh`); the default
//! [`WeightFormat`] is the fastest stable one. Figures are filled in by the benchmark.

pub mod chat;
pub mod constrain;
pub mod engine;
pub mod model;
pub mod sampler;
pub mod store;
pub mod template;
pub mod tokenizer;

pub use chat::EmbeddedChat;
pub use engine::{EmbeddedModel, LoadOptions};
pub use model::WeightFormat;
pub use store::{FetchReport, StoreError, ensure_model, fetch};
