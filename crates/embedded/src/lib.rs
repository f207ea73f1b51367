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
//! Measured with `scripts/bench-embedded.sh` / its `bench_embedded` example (98-token ChatML
//! prompt, greedy decode of 64 tokens after it, median of 3 runs, 2 threads) on the
//! project's 2-core Xeon (AVX-512, AVX512-VNNI), against llama.cpp (llama-cpp-python 0.3.36
//! built from source, AVX-512, no AMX) on the same GGUF, back to back. Other builds shared
//! the machine, so two conditions are shown: "quiet" (load average ~3.5, the best window
//! seen) and "loaded" (load average 5.5–7 from other processes):
//!
//! | weights in memory ([`WeightFormat`]) | prefill tok/s quiet | decode quiet | decode loaded | peak RSS |
//! |---|---|---|---|---|
//! | Q4_1 as stored (candle has no SIMD Q4_1 kernel) | 21 | 11–18 | 3 | 420 MiB |
//! | f32, dequantized at load (gemm) | 128–146 | 13–16 | 13–15 | 732 MiB |
//! | f16, dequantized at load | 110 | 19 | 16 | 587 MiB |
//! | **Q8_0, re-quantized at load (default)** | 107–114 | **31–43** | 5–6 | 495 MiB |
//! | Q8_0 with k padded to 768 | – | – | 11 | 676 MiB |
//! | llama.cpp, Q4_1 as stored | 240 | 90 | 1.6–2.5 | 207 MiB |
//!
//! Quiet, the default decodes at ~0.48× llama.cpp; loaded, every engine whose thread pool
//! spins (candle's quantized kernels, llama.cpp) collapses and f32 (gemm on rayon) is the
//! steadiest. `CANDLE_NUM_THREADS=1` makes Q8_0 degrade more gracefully under load (12.6
//! tok/s loaded) at the cost of quiet speed.
//!
//! Q8_0 wins decode because its weights (~143 MB with the Q8_0 tied embedding) are a quarter
//! of f32's (~540 MB, every byte read once per token) and candle has AVX2 dot products for
//! Q8_0 but only scalar code for Q4_1. Requantizing Q4_1 to Q8_0 moves each weight by at
//! most 1/254 of its block's largest magnitude; the tests' answers are unchanged.
//!
//! Where the time still goes: per token ~600 small candle ops (each allocates its output);
//! candle's Q8_0 kernel is AVX2-only for k = 576 (its AVX512-VNNI repacked kernels need
//! k % 256 == 0; `Q8_0Padded` pads k to 768 to reach them, inconclusive so far), and the
//! 49152×576 tied output projection alone is ~30 MB of Q8_0 per token, as much as 8 of the
//! 30 layers. Under contention every format becomes erratic (candle's thread pool spins);
//! llama.cpp is ~2× faster at decode here.

pub mod chat;
pub mod constrain;
pub mod engine;
pub mod model;
pub mod sampler;
pub mod store;
pub mod template;
pub mod tokenizer;

pub use chat::EmbeddedChat;
pub use engine::{EmbeddedModel, LoadOptions, identity_of};
pub use model::WeightFormat;
pub use store::{FetchReport, StoreError, ensure_model, fetch};
