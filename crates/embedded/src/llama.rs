//! The [`Backend`] on llama.cpp (through the `llama-cpp-sys-2` bindings): one `llama_context`
//! whose KV cache has one stream per slot. Only the scheduler thread touches it.
//!
//! The raw bindings rather than `llama-cpp-2`'s safe wrapper, because the engine changes its
//! thread count between calls (`llama_set_n_threads`, see [`crate::threads`]) and the wrapper
//! has no way to; the unsafe surface is the handful of calls below, each behind an owning
//! type ([`LlamaModel`], [`LlamaEngine`], `Batch`) that frees what it holds.
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
use llama_cpp_sys_2 as sys;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_void};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

/// Names the kernels in backend identities (and so in cache keys): a different llama.cpp may
/// round differently, so it must not answer from another's cache.
pub const ENGINE_ID: &str = "llama.cpp-sys-0.1.161";

/// llama.cpp's process-wide state, initialised once (and never freed: it lives as long as
/// the process).
fn backend() -> Result<(), BackendError> {
    static BACKEND: OnceLock<Result<(), String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            check_cpu()?;
            // SAFETY: `log_line` is a plain function that stays valid for the whole process and
            // ignores its user-data pointer, which is null. `llama_backend_init` runs once.
            unsafe {
                sys::llama_log_set(Some(log_line), std::ptr::null_mut());
                sys::llama_backend_init();
            }
            Ok(())
        })
        .clone()
        .map_err(BackendError)
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
        sys::GGML_LOG_LEVEL_WARN | sys::GGML_LOG_LEVEL_ERROR => {
            if recent.len() == KEPT_PROBLEMS {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
        sys::GGML_LOG_LEVEL_CONT => {
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

/// A model's weights, loaded by llama.cpp.
pub struct LlamaModel {
    raw: NonNull<sys::llama_model>,
}

// SAFETY: llama.cpp's model is read-only after loading; contexts made from it (each used by
// one thread) only read it.
unsafe impl Send for LlamaModel {}
unsafe impl Sync for LlamaModel {}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `llama_model_load_from_file` and is freed once; every
        // context borrowing it has been dropped (the borrow checker sees to that).
        unsafe { sys::llama_model_free(self.raw.as_ptr()) }
    }
}

impl LlamaModel {
    /// Logits per token.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: `raw` is a live model; its vocabulary lives as long as it does.
        let n = unsafe { sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(self.raw.as_ptr())) };
        usize::try_from(n).unwrap_or(0)
    }
}

/// Loads the weights of the GGUF at `path`.
pub fn load_model(path: &Path) -> Result<LlamaModel, BackendError> {
    backend()?;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| BackendError(format!("{} has a NUL byte in its path", path.display())))?;
    // SAFETY: the path is NUL-terminated and outlives the call; default parameters hold no
    // pointers of ours. A null result is handled.
    let raw = unsafe {
        sys::llama_model_load_from_file(c_path.as_ptr(), sys::llama_model_default_params())
    };
    NonNull::new(raw)
        .map(|raw| LlamaModel { raw })
        .ok_or_else(|| {
            BackendError(format!(
                "llama.cpp could not load {}{}",
                path.display(),
                recent_problems()
            ))
        })
}

/// How to size the context.
#[derive(Debug, Clone, Copy)]
pub struct ContextSize {
    pub slots: usize,
    /// Tokens per slot; rounded up to a multiple of 256 (llama.cpp's KV padding).
    pub slot_context: usize,
    /// The most tokens one call carries: a prefill chunk or a decode batch.
    pub max_tokens_per_call: usize,
    /// Threads the context starts with ([`Backend::set_threads`] changes them).
    pub threads: usize,
    /// Keep K and V in f32 instead of f16: for exactness checks against an f32 reference
    /// (twice the KV memory).
    pub kv_f32: bool,
}

/// A `llama_batch` of up to `capacity` tokens, one sequence each.
struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Batch {
    fn new(capacity: usize) -> Result<Self, BackendError> {
        let n =
            i32::try_from(capacity).map_err(|_| BackendError("the batch is too large".into()))?;
        // SAFETY: allocates arrays for `n` tokens with one sequence id each; freed in Drop.
        let raw = unsafe { sys::llama_batch_init(n, 0, 1) };
        if raw.token.is_null() {
            return Err(BackendError("llama.cpp could not allocate a batch".into()));
        }
        Ok(Self { raw, capacity })
    }

    fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    fn push(
        &mut self,
        token: u32,
        pos: usize,
        seq: usize,
        logits: bool,
    ) -> Result<(), BackendError> {
        let i = usize::try_from(self.raw.n_tokens).unwrap_or(usize::MAX);
        if i >= self.capacity {
            return Err(BackendError(format!(
                "the batch holds at most {} tokens",
                self.capacity
            )));
        }
        let token = i32::try_from(token)
            .map_err(|_| BackendError(format!("token {token} out of range")))?;
        let pos =
            i32::try_from(pos).map_err(|_| BackendError(format!("position {pos} out of range")))?;
        let seq =
            i32::try_from(seq).map_err(|_| BackendError(format!("slot {seq} out of range")))?;
        // SAFETY: `i < capacity`, the length every array was allocated with; each `seq_id[i]`
        // points to room for one id (n_seq_max = 1).
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `llama_batch_init` and is freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

/// One `llama_context` over a loaded model.
pub struct LlamaEngine<'m> {
    ctx: NonNull<sys::llama_context>,
    batch: Batch,
    n_vocab: usize,
    size: ContextSize,
    threads: usize,
    _model: PhantomData<&'m LlamaModel>,
}

// SAFETY: the context is used by one thread at a time (the engine is `!Sync` and every call
// takes `&mut self`); llama.cpp keeps no thread-local state for it.
unsafe impl Send for LlamaEngine<'_> {}

impl Drop for LlamaEngine<'_> {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from `llama_init_from_model` and is freed once, before the model
        // it borrows (the `'m` lifetime).
        unsafe { sys::llama_free(self.ctx.as_ptr()) }
    }
}

impl<'m> LlamaEngine<'m> {
    pub fn new(model: &'m LlamaModel, size: ContextSize) -> Result<Self, BackendError> {
        backend()?;
        let slot_context = size.slot_context.max(1).div_ceil(256) * 256;
        let size = ContextSize {
            slots: size.slots.max(1),
            slot_context,
            max_tokens_per_call: size.max_tokens_per_call.max(1),
            threads: size.threads.max(1),
            kv_f32: size.kv_f32,
        };
        let total = u32::try_from(size.slots * slot_context)
            .map_err(|_| BackendError("the requested context is too large".into()))?;
        let per_call = u32::try_from(size.max_tokens_per_call)
            .map_err(|_| BackendError("the batch size is too large".into()))?;
        let threads = i32::try_from(size.threads).unwrap_or(i32::MAX);
        // SAFETY: plain defaults; no pointers are set below.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.n_ctx = total;
        params.n_batch = per_call;
        params.n_ubatch = per_call;
        params.n_seq_max = size.slots as u32;
        params.kv_unified = false;
        params.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        params.n_threads = threads;
        params.n_threads_batch = threads;
        params.no_perf = true;
        if size.kv_f32 {
            params.type_k = sys::GGML_TYPE_F32;
            params.type_v = sys::GGML_TYPE_F32;
        }
        // SAFETY: `model` is live for `'m`, which the engine cannot outlive.
        let raw = unsafe { sys::llama_init_from_model(model.raw.as_ptr(), params) };
        let ctx = NonNull::new(raw).ok_or_else(|| {
            BackendError(format!(
                "creating the llama.cpp context failed{}",
                recent_problems()
            ))
        })?;
        let n_vocab = model.n_vocab();
        let batch = Batch::new(size.max_tokens_per_call);
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                // SAFETY: freed once, here, as no engine owns it yet.
                unsafe { sys::llama_free(ctx.as_ptr()) };
                return Err(e);
            }
        };
        Ok(Self {
            ctx,
            batch,
            n_vocab,
            threads: size.threads,
            size,
            _model: PhantomData,
        })
    }

    fn memory(&self) -> sys::llama_memory_t {
        // SAFETY: `ctx` is live; the memory handle lives as long as the context.
        unsafe { sys::llama_get_memory(self.ctx.as_ptr()) }
    }

    fn run(&mut self) -> Result<(), BackendError> {
        // SAFETY: the batch's arrays hold `n_tokens` filled entries; `ctx` is live.
        let status = unsafe { sys::llama_decode(self.ctx.as_ptr(), self.batch.raw) };
        match status {
            0 => Ok(()),
            1 => Err(BackendError(
                "llama.cpp decode: no room in the KV cache for this batch".into(),
            )),
            n => Err(BackendError(format!(
                "llama.cpp decode failed ({n}){}",
                recent_problems()
            ))),
        }
    }

    fn read_logits(&self, index: usize, out: &mut Vec<f32>) -> Result<(), BackendError> {
        let i = i32::try_from(index).map_err(|_| BackendError("batch index".into()))?;
        // SAFETY: `ctx` is live; a non-null result points to `n_vocab` floats owned by the
        // context and valid until its next decode, which needs `&mut self`.
        let row = unsafe { sys::llama_get_logits_ith(self.ctx.as_ptr(), i) };
        if row.is_null() {
            return Err(BackendError(format!(
                "llama.cpp has no logits for batch row {index}"
            )));
        }
        let row = unsafe { std::slice::from_raw_parts(row, self.n_vocab) };
        out.clear();
        out.extend_from_slice(row);
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

    fn set_threads(&mut self, threads: usize) {
        let threads = threads.max(1);
        if threads != self.threads {
            let n = i32::try_from(threads).unwrap_or(i32::MAX);
            // SAFETY: `ctx` is live; the next decode uses the new count.
            unsafe { sys::llama_set_n_threads(self.ctx.as_ptr(), n, n) };
            self.threads = threads;
        }
    }

    fn truncate(&mut self, slot: usize, from: usize) -> Result<(), BackendError> {
        let seq = i32::try_from(slot).map_err(|_| BackendError("slot".into()))?;
        let from = i32::try_from(from).map_err(|_| BackendError("position".into()))?;
        // SAFETY: the memory handle belongs to the live context.
        if unsafe { sys::llama_memory_seq_rm(self.memory(), seq, from, -1) } {
            Ok(())
        } else {
            Err(BackendError(format!(
                "llama.cpp could not clear slot {slot}"
            )))
        }
    }

    fn copy(&mut self, src: usize, dst: usize) -> Result<(), BackendError> {
        let slots = self.size.slots;
        if src >= slots || dst >= slots {
            return Err(BackendError(format!(
                "copying slot {src} to {dst}: out of range"
            )));
        }
        // SAFETY: both ids are sequences of this context (checked above).
        unsafe { sys::llama_memory_seq_cp(self.memory(), src as i32, dst as i32, -1, -1) };
        Ok(())
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
        if slot >= self.size.slots {
            return Err(BackendError(format!("slot {slot} out of range")));
        }
        self.batch.clear();
        let last = tokens.len() - 1;
        for (i, &id) in tokens.iter().enumerate() {
            self.batch
                .push(id, start + i, slot, i == last && logits.is_some())?;
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
            if row.slot >= self.size.slots {
                return Err(BackendError(format!("slot {} out of range", row.slot)));
            }
            self.batch.push(row.token, row.pos, row.slot, true)?;
        }
        self.run()?;
        for (i, out) in logits.iter_mut().enumerate().take(rows.len()) {
            self.read_logits(i, out)?;
        }
        Ok(())
    }
}
