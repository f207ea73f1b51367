//! The seam between the scheduler and an inference engine: what [`crate::scheduler`] needs
//! from a model that keeps one KV cache per *slot* (a sequence id). llama.cpp implements it
//! ([`crate::llama`]); another engine can be swapped in by implementing [`Backend`].
//!
//! The trait is about positions and logits only — no text, sampling or scheduling policy.
//! Determinism rests on three promises an implementation must keep (the scheduler relies on
//! them and `tests/determinism.rs` checks llama.cpp keeps them):
//!
//! - a [`Backend::decode`] row's logits do not depend on the other rows in the batch,
//! - a [`Backend::prefill`] of a chunk depends only on the slot's tokens so far and the chunk,
//! - and neither depends on the thread count [`Backend::set_threads`] chose.

use std::fmt;

/// One token of one sequence in a decode batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub slot: usize,
    /// Its position in the sequence (= how many tokens the slot holds before it).
    pub pos: usize,
    pub token: u32,
}

/// An engine failure (not the request's fault).
#[derive(Debug, Clone)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// A model with per-slot KV caches.
pub trait Backend {
    /// Length of a logits row.
    fn n_vocab(&self) -> usize;
    /// How many slots there are (`0..slots()`).
    fn slots(&self) -> usize;
    /// How many tokens one slot holds.
    fn slot_context(&self) -> usize;
    /// The most tokens one [`Backend::prefill`] or [`Backend::decode`] call may carry.
    fn max_tokens_per_call(&self) -> usize;
    /// Runs the following calls on `threads` CPU threads (results must not change).
    fn set_threads(&mut self, threads: usize);
    /// Drops `slot`'s cache from position `from` on (0: all of it).
    fn truncate(&mut self, slot: usize, from: usize) -> Result<(), BackendError>;
    /// Makes `dst` hold exactly what `src` holds.
    fn copy(&mut self, src: usize, dst: usize) -> Result<(), BackendError>;
    /// Runs `tokens` at positions `start..` of `slot`, alone in the batch; when `logits` is
    /// given, fills it with the last token's logits.
    fn prefill(
        &mut self,
        slot: usize,
        start: usize,
        tokens: &[u32],
        logits: Option<&mut Vec<f32>>,
    ) -> Result<(), BackendError>;
    /// Runs one token for each row (distinct slots) in one batch and fills `logits[i]` with
    /// row `i`'s logits.
    fn decode(&mut self, rows: &[Row], logits: &mut [Vec<f32>]) -> Result<(), BackendError>;
}
