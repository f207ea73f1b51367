//! The [`Backend`] on llama.cpp (through the `llama-cpp-2` bindings): one `llama_context`
//! whose KV cache has one stream per slot. Only the scheduler thread touches it.
//!
//! Settings chosen for determinism, each measured or read off ggml's CPU kernels:
//!
//! - **Non-unified KV cache** (`kv_unified = false`): every slot has its own stream, so a
//!   sequence's cells sit at indices equal to their positions, whatever other sequences do.
//!   Copies between slots are whole-stream copies (llama.cpp supports no other kind across
//!   streams); [`Backend::truncate`] then cuts the copy to the prefix wanted.
//! - **No flash attention**: ggml's CPU flash attention splits a single query's KV range
//!   across threads only when one stream is in the batch, so a sequence decoded alone would
//!   round differently from the same sequence decoded in a batch. The plain path (KQ matmul,
//!   masked softmax, KQV matmul) only appends whole blocks of masked zeros when a batch pads
//!   the KV range further, which leaves every sum unchanged.
//! - **Batch-invariant matmuls**: llama.cpp is built with `GGML_LLAMAFILE=OFF` and
//!   `GGML_CPU_REPACK=OFF` (`.cargo/config.toml`), so each weight row is multiplied by the
//!   same dot-product kernel for a batch of 1 or 32.
//!
//! Not for text, sampling or scheduling: see [`crate::scheduler`].

use crate::backend::{Backend, BackendError, Row};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_void};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Names the kernels in backend identities (and so in cache keys): a different llama.cpp may
/// round differently, so it must not answer from another's cache.
pub const ENGINE_ID: &str = "llama.cpp-sys-0.1.161";

/// llama.cpp's process-wide state, initialised once.
fn backend() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            check_cpu()?;
            // SAFETY: `log_line` is a plain function that stays valid for the whole process and
            // ignores its user-data pointer, which is null.
            unsafe { llama_cpp_sys_2::llama_log_set(Some(log_line), std::ptr::null_mut()) };
            LlamaBackend::init().map_err(|e| format!("initialising llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(|e| BackendError(e.clone()))
}

/// llama.cpp's latest warnings and errors, so a failed load can say why.
static RECENT_PROBLEMS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const KEPT_PROBLEMS: usize = 8;

/// llama.cpp's log callback: every line goes to `tracing` at debug level (and to stderr when
/// `DEMORECON_LLAMA_LOG` is set); warnings and errors are also kept for error messages.
unsafe extern "C" fn log_line(level: u32, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for the duration of the call.
    let line = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let line = line.trim_end();
    tracing::debug!(target: "llama.cpp", "{line}");
    if std::env::var_os("DEMORECON_LLAMA_LOG").is_some() {
        eprintln!("llama.cpp: {line}");
    }
    let mut recent = RECENT_PROBLEMS.lock().unwrap_or_else(|p| p.into_inner());
    match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_WARN | llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => {
            if recent.len() == KEPT_PROBLEMS {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
        llama_cpp_sys_2::GGML_LOG_LEVEL_CONT => {
            if let Some(last) = recent.back_mut() {
                last.push_str(line);
            }
        }
        _ => {}
    }
}

/// Takes the warnings and errors llama.cpp logged since the last call, as one clause.
fn recent_problems() -> String {
    let mut recent = RECENT_PROBLEMS.lock().unwrap_or_else(|p| p.into_inner());
    let lines: Vec<String> = recent.drain(..).collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(" (llama.cpp: {})", lines.join("; "))
    }
}

/// llama.cpp is compiled for x86-64-v3 (see `.cargo/config.toml`); refuse older CPUs with an
/// error instead of dying on an illegal instruction.
pub fn check_cpu() -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("bmi2", std::arch::is_x86_feature_detected!("bmi2")),
        ];
        let missing: Vec<&str> = features
            .iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "this CPU lacks {}; the embedded model's llama.cpp is built for x86-64-v3 \
                 (AVX2, FMA, F16C, BMI2)",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

/// Loads the weights of the GGUF at `path`.
pub fn load_model(path: &Path) -> Result<LlamaModel, BackendError> {
    let backend = backend()?;
    LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map_err(|e| BackendError(format!("llama.cpp could not load {}: {e}", path.display())))
}

/// How to size the context.
#[derive(Debug, Clone, Copy)]
pub struct ContextSize {
    pub slots: usize,
    /// Tokens per slot; rounded up to a multiple of 256 (llama.cpp's KV padding).
    pub slot_context: usize,
    /// The most tokens one call carries: a prefill chunk or a decode batch.
    pub max_tokens_per_call: usize,
    pub threads: usize,
    /// Keep K and V in f32 instead of f16: for exactness checks against an f32 reference
    /// (twice the KV memory).
    pub kv_f32: bool,
}

/// One `llama_context` over a loaded model.
pub struct LlamaEngine<'m> {
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_vocab: usize,
    size: ContextSize,
}

impl<'m> LlamaEngine<'m> {
    pub fn new(model: &'m LlamaModel, size: ContextSize) -> Result<Self, BackendError> {
        let backend = backend()?;
        let slot_context = size.slot_context.max(1).div_ceil(256) * 256;
        let size = ContextSize {
            slots: size.slots.max(1),
            slot_context,
            max_tokens_per_call: size.max_tokens_per_call.max(1),
            threads: size.threads.max(1),
            kv_f32: size.kv_f32,
        };
        let total = u32::try_from(size.slots * slot_context)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| BackendError("the requested context is too large".into()))?;
        let per_call = u32::try_from(size.max_tokens_per_call)
            .map_err(|_| BackendError("the batch size is too large".into()))?;
        let threads = i32::try_from(size.threads).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(total))
            .with_n_batch(per_call)
            .with_n_ubatch(per_call)
            .with_n_seq_max(size.slots as u32)
            .with_kv_unified(false)
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_no_perf(true);
        let params = if size.kv_f32 {
            params
                .with_type_k(KvCacheType::F32)
                .with_type_v(KvCacheType::F32)
        } else {
            params
        };
        let context = model.new_context(backend, params).map_err(|e| {
            BackendError(format!(
                "creating the llama.cpp context: {e}{}",
                recent_problems()
            ))
        })?;
        let n_vocab = usize::try_from(model.n_vocab())
            .map_err(|_| BackendError("the model reports a negative vocabulary".into()))?;
        Ok(Self {
            context,
            batch: LlamaBatch::new(size.max_tokens_per_call, 1),
            n_vocab,
            size,
        })
    }

    fn seq(slot: usize) -> Result<i32, BackendError> {
        i32::try_from(slot).map_err(|_| BackendError(format!("slot {slot} out of range")))
    }

    fn pos(pos: usize) -> Result<i32, BackendError> {
        i32::try_from(pos).map_err(|_| BackendError(format!("position {pos} out of range")))
    }

    fn token(id: u32) -> Result<LlamaToken, BackendError> {
        i32::try_from(id)
            .map(LlamaToken)
            .map_err(|_| BackendError(format!("token {id} out of range")))
    }

    fn run(&mut self) -> Result<(), BackendError> {
        self.context
            .decode(&mut self.batch)
            .map_err(|e| BackendError(format!("llama.cpp decode: {e}")))
    }

    fn read_logits(&self, index: usize, out: &mut Vec<f32>) -> Result<(), BackendError> {
        let i = i32::try_from(index).map_err(|_| BackendError("batch index".into()))?;
        let row = self.context.get_logits_ith(i);
        out.clear();
        out.extend_from_slice(&row[..self.n_vocab.min(row.len())]);
        Ok(())
    }
}

impl Backend for LlamaEngine<'_> {
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    fn slots(&self) -> usize {
        self.size.slots
    }

    fn slot_context(&self) -> usize {
        self.size.slot_context
    }

    fn max_tokens_per_call(&self) -> usize {
        self.size.max_tokens_per_call
    }

    fn truncate(&mut self, slot: usize, from: usize) -> Result<(), BackendError> {
        let seq = u32::try_from(slot).map_err(|_| BackendError("slot".into()))?;
        let from = u32::try_from(from).map_err(|_| BackendError("position".into()))?;
        let removed = self
            .context
            .clear_kv_cache_seq(Some(seq), Some(from), None)
            .map_err(|e| BackendError(format!("clearing slot {slot}: {e}")))?;
        if removed {
            Ok(())
        } else {
            Err(BackendError(format!(
                "llama.cpp could not clear slot {slot}"
            )))
        }
    }

    fn copy(&mut self, src: usize, dst: usize) -> Result<(), BackendError> {
        let (src, dst) = (Self::seq(src)?, Self::seq(dst)?);
        self.context
            .copy_kv_cache_seq(src, dst, None, None)
            .map_err(|e| BackendError(format!("copying slot {src} to {dst}: {e}")))
    }

    fn prefill(
        &mut self,
        slot: usize,
        start: usize,
        tokens: &[u32],
        logits: Option<&mut Vec<f32>>,
    ) -> Result<(), BackendError> {
        if tokens.is_empty() || tokens.len() > self.size.max_tokens_per_call {
            return Err(BackendError(format!(
                "a prefill call takes 1 to {} tokens, not {}",
                self.size.max_tokens_per_call,
                tokens.len()
            )));
        }
        let seq = Self::seq(slot)?;
        self.batch.clear();
        let last = tokens.len() - 1;
        for (i, &id) in tokens.iter().enumerate() {
            self.batch
                .add(
                    Self::token(id)?,
                    Self::pos(start + i)?,
                    &[seq],
                    i == last && logits.is_some(),
                )
                .map_err(|e| BackendError(format!("building the batch: {e}")))?;
        }
        self.run()?;
        if let Some(out) = logits {
            self.read_logits(last, out)?;
        }
        Ok(())
    }

    fn decode(&mut self, rows: &[Row], logits: &mut [Vec<f32>]) -> Result<(), BackendError> {
        if rows.is_empty()
            || rows.len() > self.size.max_tokens_per_call
            || logits.len() < rows.len()
        {
            return Err(BackendError(format!(
                "a decode call takes 1 to {} rows, not {}",
                self.size.max_tokens_per_call,
                rows.len()
            )));
        }
        self.batch.clear();
        for row in rows {
            self.batch
                .add(
                    Self::token(row.token)?,
                    Self::pos(row.pos)?,
                    &[Self::seq(row.slot)?],
                    true,
                )
                .map_err(|e| BackendError(format!("building the batch: {e}")))?;
        }
        self.run()?;
        for (i, out) in logits.iter_mut().enumerate().take(rows.len()) {
            self.read_logits(i, out)?;
        }
        Ok(())
    }
}
