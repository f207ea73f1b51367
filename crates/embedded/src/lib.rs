//! The embedded backend: a llama-family GGUF (by default SmolLM2-135M-Instruct, Q4_1) run in
//! process on llama.cpp, with no server and no Python.
//!
//! - [`EmbeddedChat`] loads a GGUF and answers [`demorecon_llm::ChatModel`] requests;
//!   concurrent requests share one engine thread that decodes them together
//!   ([`scheduler`]: continuous batching, prompt-prefix reuse, determinism rules).
//! - [`backend`] is the seam to the inference engine; [`llama`] implements it on llama.cpp;
//!   [`threads`] picks each call's thread count by measurement.
//! - Prompts are rendered with the GGUF's chat template and tokenized by our own tokenizer
//!   ([`prompt`], over `demorecon-gguf`); tokens are drawn by a seeded sampler ([`sampler`]);
//!   JSON output is held to a schema by `llguidance` ([`constrain`]); stop strings and
//!   streaming are [`stop`]'s.
//!
//! A request's text is a function of the request alone (model, messages, sampling, seed),
//! not of what else is in the batch or in the prefix cache. Reading GGUFs and the model store
//! live in `demorecon-gguf`; training in `demorecon-train`.

pub mod backend;
pub mod chat;
pub mod constrain;
pub mod llama;
pub mod prompt;
pub mod sampler;
pub mod scheduler;
pub mod stop;
pub mod threads;

pub use chat::{EmbeddedChat, LoadOptions, identity_of};
pub use demorecon_gguf::store;
pub use demorecon_gguf::store::{FetchReport, StoreError, ensure_model, fetch};
