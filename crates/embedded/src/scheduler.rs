//! Continuous batching over one [`Backend`]: a thread owns the model, takes requests from a
//! channel, and advances every active sequence by one token per step in one batch, admitting
//! new sequences between steps. Shared prompt prefixes are evaluated once and their KV copied
//! into each sequence that starts with them.
//!
//! # Determinism
//!
//! A request's text is a function of the request alone, not of the batch, the prefix cache
//! or the order of arrival:
//!
//! - **Prefill runs each sequence alone, in canonical chunks**: positions `[k·C, (k+1)·C)`
//!   for [`PREFILL_CHUNK`] `C`, the last chunk ending at the prompt's end. Batched or
//!   differently chunked prefill rounds differently, so it is never done.
//! - **Prefix KV is reused only at chunk boundaries**: the cache keeps, per entry, the KV of
//!   the first `k·C` tokens of some earlier prompt — bitwise what a fresh chunked prefill of
//!   those tokens computes — and a new prompt reuses the longest boundary its tokens share
//!   with an entry, then prefills the rest in the same canonical chunks.
//! - **Decode batches only single-token rows**, whose logits the backend promises do not
//!   depend on the other rows (see [`crate::backend`]).
//! - Sampling, grammar masks and stop checks are per sequence, seeded by the request.
//!
//! Between decode steps at most one prefill chunk runs, so a long prompt does not stall the
//! sequences already streaming. Not for text rendering or tokenization ([`crate::prompt`]).

use crate::backend::{Backend, BackendError, Row};
use crate::constrain::apply_mask;
use crate::prompt::Prompter;
use crate::sampler::Sampler;
use crate::stop::StopScanner;
use crate::threads::{Call, Governor};
use demorecon_llm::{FinishReason, LlmError, TokenSink};
use llguidance::Matcher;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;
use tokio::sync::oneshot;

/// Prefill chunk length: chunk boundaries, and so the prefix lengths that can be reused, are
/// multiples of it. Part of the backend identity: another value rounds differently.
pub const PREFILL_CHUNK: usize = 64;

/// One request, tokenized, on its way to the scheduler.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    /// The most tokens to generate (already capped by the slot's context).
    pub budget: usize,
    pub sampler: Sampler,
    pub matcher: Option<Matcher>,
    pub stops: Vec<String>,
    pub sink: Option<TokenSink>,
    pub reply: oneshot::Sender<Result<Generated, LlmError>>,
}

/// What a finished sequence hands back.
#[derive(Debug)]
pub(crate) struct Generated {
    pub text: String,
    pub finish: FinishReason,
    pub completion_tokens: usize,
}

/// How many sequences decode together, and how many prefixes are kept.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub max_batch: usize,
    pub prefix_slots: usize,
}

/// Running totals of the engine's work, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Prompt tokens whose KV came from the prefix cache.
    pub prompt_tokens_reused: AtomicU64,
    /// Prompt tokens run through the model.
    pub prompt_tokens_computed: AtomicU64,
    /// Decode steps, and the rows (sequences) they carried.
    pub decode_steps: AtomicU64,
    pub decode_rows: AtomicU64,
    /// Engine calls (prefill chunks and decode batches), and the threads they ran on, summed.
    pub engine_calls: AtomicU64,
    pub engine_threads: AtomicU64,
    /// Wall time spent inside engine calls, in microseconds.
    pub engine_micros: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub prompt_tokens_reused: u64,
    pub prompt_tokens_computed: u64,
    pub decode_steps: u64,
    pub decode_rows: u64,
    pub engine_calls: u64,
    pub engine_threads: u64,
    pub engine_micros: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        Stats {
            prompt_tokens_reused: self.prompt_tokens_reused.load(Ordering::Relaxed),
            prompt_tokens_computed: self.prompt_tokens_computed.load(Ordering::Relaxed),
            decode_steps: self.decode_steps.load(Ordering::Relaxed),
            decode_rows: self.decode_rows.load(Ordering::Relaxed),
            engine_calls: self.engine_calls.load(Ordering::Relaxed),
            engine_threads: self.engine_threads.load(Ordering::Relaxed),
            engine_micros: self.engine_micros.load(Ordering::Relaxed),
        }
    }
}

/// One line for a command's closing summary: prompt tokens and the prefix cache's share,
/// decode batching, and the engine's threads and busy time.
impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prompt = self.prompt_tokens_reused + self.prompt_tokens_computed;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        write!(
            f,
            "{prompt} prompt tokens, {} from the prefix cache ({:.0}%); {} tokens decoded in {} \
             steps (mean batch {:.1}); {} engine calls on {:.2} threads on average, {:.1} s busy",
            self.prompt_tokens_reused,
            100.0 * ratio(self.prompt_tokens_reused, prompt),
            self.decode_rows,
            self.decode_steps,
            ratio(self.decode_rows, self.decode_steps),
            self.engine_calls,
            ratio(self.engine_threads, self.engine_calls),
            self.engine_micros as f64 / 1e6,
        )
    }
}

/// When an engine call started, and on how many threads.
struct CallStart {
    threads: usize,
    at: Instant,
}

enum Phase {
    /// Tokens `0..done` of the prompt are in the KV cache.
    Prefill { done: usize },
    /// The next token to feed, at position `pos`.
    Decode { token: u32, pos: usize },
}

struct Sequence {
    job: Job,
    slot: usize,
    phase: Phase,
    /// Whether the prefix cache was consulted (once, before the first chunk).
    looked_up: bool,
    scanner: StopScanner,
    completion_tokens: usize,
}

struct PrefixEntry {
    slot: usize,
    /// A multiple of [`PREFILL_CHUNK`] long.
    tokens: Vec<u32>,
    last_used: u64,
}

/// Runs until every sender of `jobs` is gone and the last sequence finished.
pub(crate) fn run<B: Backend>(
    backend: &mut B,
    prompter: &Prompter,
    capacity: Capacity,
    governor: Governor,
    counters: Arc<Counters>,
    jobs: Receiver<Job>,
) {
    let mut scheduler = Scheduler::new(backend, prompter, capacity, governor, counters);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    loop {
        if open && scheduler.active.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => open = false,
            }
        }
        while open {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && scheduler.active.is_empty() && waiting.is_empty() {
            return;
        }
        scheduler.drop_cancelled();
        while let Some(slot) = scheduler.free.pop() {
            let Some(job) = waiting.pop_front() else {
                scheduler.free.push(slot);
                break;
            };
            if job.reply.is_closed() {
                scheduler.free.push(slot);
                continue;
            }
            scheduler.admit(job, slot);
        }
        if let Err(e) = scheduler.step() {
            // An engine failure ends every sequence in flight; the next ones start clean.
            tracing::error!(error = %e, "the embedded engine failed a step");
            scheduler.fail_all(&e);
        }
    }
}

struct Scheduler<'a, B: Backend> {
    backend: &'a mut B,
    prompter: &'a Prompter,
    active: Vec<Sequence>,
    /// Free decode slots.
    free: Vec<usize>,
    prefixes: Vec<PrefixEntry>,
    /// Cache slots not holding an entry.
    free_prefix_slots: Vec<usize>,
    clock: u64,
    logits: Vec<Vec<f32>>,
    governor: Governor,
    counters: Arc<Counters>,
}

impl<'a, B: Backend> Scheduler<'a, B> {
    fn new(
        backend: &'a mut B,
        prompter: &'a Prompter,
        capacity: Capacity,
        governor: Governor,
        counters: Arc<Counters>,
    ) -> Self {
        let decode_slots = capacity.max_batch.max(1);
        Self {
            backend,
            prompter,
            active: Vec::new(),
            free: (0..decode_slots).rev().collect(),
            prefixes: Vec::new(),
            free_prefix_slots: (decode_slots..decode_slots + capacity.prefix_slots)
                .rev()
                .collect(),
            clock: 0,
            logits: Vec::new(),
            governor,
            counters,
        }
    }

    /// Sets the backend's threads for the next engine call, of kind `call`, as the governor
    /// picks; hand the result to [`Self::call_done`] when the call succeeded.
    fn call_start(&mut self, call: Call) -> CallStart {
        let threads = self.governor.pick(call);
        self.backend.set_threads(threads);
        CallStart {
            threads,
            at: Instant::now(),
        }
    }

    /// Tells the governor and the counters how long the call over `tokens` tokens took.
    fn call_done(&mut self, start: CallStart, tokens: usize) {
        let elapsed = start.at.elapsed();
        self.governor.record(elapsed, tokens);
        self.counters
            .engine_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.counters.engine_calls.fetch_add(1, Ordering::Relaxed);
        self.counters
            .engine_threads
            .fetch_add(start.threads as u64, Ordering::Relaxed);
    }

    /// Puts `job` in `slot`. Its prefix is looked up when its prefill starts, not now: in a
    /// burst of requests with one system prompt, the first one's prefix is only cached once
    /// its prefill is done, and the others start prefilling after it.
    fn admit(&mut self, job: Job, slot: usize) {
        tracing::trace!(slot, prompt = job.prompt.len(), "admitted");
        self.active.push(Sequence {
            scanner: StopScanner::new(&job.stops),
            job,
            slot,
            phase: Phase::Prefill { done: 0 },
            looked_up: false,
            completion_tokens: 0,
        });
    }

    /// Copies the longest cached prefix of sequence `i`'s prompt into its slot; returns how
    /// many prompt tokens that covers.
    fn reuse_prefix(&mut self, i: usize) -> Result<usize, BackendError> {
        let slot = self.active[i].slot;
        let Some((entry, len)) = self.best_prefix(&self.active[i].job.prompt) else {
            return Ok(0);
        };
        let source = self.prefixes[entry].slot;
        let reused = self
            .backend
            .copy(source, slot)
            .and_then(|()| self.backend.truncate(slot, len));
        match reused {
            Ok(()) => {
                self.clock += 1;
                self.prefixes[entry].last_used = self.clock;
                self.counters
                    .prompt_tokens_reused
                    .fetch_add(len as u64, Ordering::Relaxed);
                Ok(len)
            }
            Err(e) => {
                tracing::warn!(error = %e, "prefix reuse failed; prefilling in full");
                self.backend.truncate(slot, 0)?;
                Ok(0)
            }
        }
    }

    /// The entry sharing the longest chunk-aligned prefix with `prompt`, leaving at least one
    /// prompt token to prefill (its logits start generation).
    fn best_prefix(&self, prompt: &[u32]) -> Option<(usize, usize)> {
        let limit = prompt.len().saturating_sub(1);
        self.prefixes
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common.min(limit) / PREFILL_CHUNK * PREFILL_CHUNK)
            })
            .filter(|&(_, len)| len > 0)
            .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)))
    }

    /// Keeps the chunk-aligned prefix of a just-prefilled prompt in `slot` for later prompts.
    fn remember_prefix(&mut self, slot: usize, prompt: &[u32]) -> Result<(), BackendError> {
        let len = prompt.len().saturating_sub(1) / PREFILL_CHUNK * PREFILL_CHUNK;
        if len == 0 {
            return Ok(());
        }
        let wanted = &prompt[..len];
        self.clock += 1;
        if let Some(entry) = self
            .prefixes
            .iter_mut()
            .find(|e| e.tokens.starts_with(wanted))
        {
            entry.last_used = self.clock;
            return Ok(());
        }
        // An entry that is a shorter prefix of this one is superseded; otherwise a free cache
        // slot, else the least recently used entry's.
        let target = if let Some(i) = self
            .prefixes
            .iter()
            .position(|e| wanted.starts_with(&e.tokens))
        {
            self.prefixes.swap_remove(i).slot
        } else if let Some(free) = self.free_prefix_slots.pop() {
            free
        } else if let Some(i) = (0..self.prefixes.len()).min_by_key(|&i| self.prefixes[i].last_used)
        {
            self.prefixes.swap_remove(i).slot
        } else {
            return Ok(()); // no cache slots configured
        };
        let kept = self
            .backend
            .copy(slot, target)
            .and_then(|()| self.backend.truncate(target, len));
        match kept {
            Ok(()) => {
                self.prefixes.push(PrefixEntry {
                    slot: target,
                    tokens: wanted.to_vec(),
                    last_used: self.clock,
                });
                Ok(())
            }
            Err(e) => {
                let _ = self.backend.truncate(target, 0);
                self.free_prefix_slots.push(target);
                Err(e)
            }
        }
    }

    /// Ends sequences whose caller stopped waiting.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].job.reply.is_closed() {
                let seq = self.active.remove(i);
                self.release(seq.slot);
            } else {
                i += 1;
            }
        }
    }

    fn release(&mut self, slot: usize) {
        if let Err(e) = self.backend.truncate(slot, 0) {
            tracing::error!(slot, error = %e, "could not clear a slot; retiring it");
            return;
        }
        self.free.push(slot);
    }

    fn fail_all(&mut self, e: &BackendError) {
        for seq in std::mem::take(&mut self.active) {
            let _ = seq.job.reply.send(Err(engine_err(e)));
            self.release(seq.slot);
        }
    }

    /// One prefill chunk (of the oldest sequence still prefilling), then one decode step over
    /// every sequence that is generating.
    fn step(&mut self) -> Result<(), BackendError> {
        if let Some(i) = self
            .active
            .iter()
            .position(|s| matches!(s.phase, Phase::Prefill { .. }))
        {
            self.prefill_chunk(i)?;
        }
        self.decode_step()
    }

    fn prefill_chunk(&mut self, i: usize) -> Result<(), BackendError> {
        let Phase::Prefill { mut done } = self.active[i].phase else {
            return Ok(());
        };
        if !self.active[i].looked_up {
            self.active[i].looked_up = true;
            done = self.reuse_prefix(i)?;
        }
        let seq = &self.active[i];
        let n = seq.job.prompt.len();
        let chunk = PREFILL_CHUNK.min(self.backend.max_tokens_per_call());
        // Chunks end on multiples of PREFILL_CHUNK; a smaller per-call limit splits each
        // canonical chunk the same way every time.
        let boundary = (done / PREFILL_CHUNK + 1) * PREFILL_CHUNK;
        let end = boundary.min(done + chunk).min(n);
        let last = end == n;
        if self.logits.is_empty() {
            self.logits.push(Vec::new());
        }
        let slot = seq.slot;
        let start = self.call_start(Call::Prefill);
        let logits = last.then_some(&mut self.logits[0]);
        self.backend
            .prefill(slot, done, &self.active[i].job.prompt[done..end], logits)?;
        self.call_done(start, end - done);
        self.counters
            .prompt_tokens_computed
            .fetch_add((end - done) as u64, Ordering::Relaxed);
        if !last {
            self.active[i].phase = Phase::Prefill { done: end };
            return Ok(());
        }
        let prompt = std::mem::take(&mut self.active[i].job.prompt);
        if let Err(e) = self.remember_prefix(slot, &prompt) {
            tracing::warn!(error = %e, "could not keep a prompt prefix");
        }
        self.active[i].job.prompt = prompt;
        let mut logits = std::mem::take(&mut self.logits[0]);
        let outcome = self.advance(i, n, &mut logits);
        self.logits[0] = logits;
        self.settle(i, outcome);
        Ok(())
    }

    fn decode_step(&mut self) -> Result<(), BackendError> {
        let mut rows = Vec::new();
        let mut which = Vec::new();
        for (i, seq) in self.active.iter().enumerate() {
            if let Phase::Decode { token, pos } = seq.phase {
                rows.push(Row {
                    slot: seq.slot,
                    pos,
                    token,
                });
                which.push(i);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let per_call = self.backend.max_tokens_per_call();
        if self.logits.len() < rows.len() {
            self.logits.resize_with(rows.len(), Vec::new);
        }
        for (k, part) in rows.chunks(per_call).enumerate() {
            let at = k * per_call;
            let start = self.call_start(Call::Decode { rows: part.len() });
            self.backend
                .decode(part, &mut self.logits[at..at + part.len()])?;
            self.call_done(start, part.len());
        }
        self.counters.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.counters
            .decode_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut outcomes = Vec::with_capacity(which.len());
        for (k, &i) in which.iter().enumerate() {
            let mut logits = std::mem::take(&mut self.logits[k]);
            outcomes.push(self.advance(i, rows[k].pos + 1, &mut logits));
            self.logits[k] = logits;
        }
        // Settle from the back so earlier indices stay valid while finished ones are removed
        // (removal keeps the rest in admission order).
        for (&i, outcome) in which.iter().zip(outcomes).rev() {
            self.settle(i, outcome);
        }
        Ok(())
    }

    /// Samples sequence `i`'s next token from `logits` (the KV holds `pos` tokens) and decides
    /// whether it goes on.
    fn advance(&mut self, i: usize, pos: usize, logits: &mut [f32]) -> Outcome {
        let prompter = self.prompter;
        let seq = &mut self.active[i];
        if seq.job.budget == 0 {
            return Outcome::Finished(FinishReason::Length);
        }
        if let Some(m) = seq.job.matcher.as_mut() {
            match m.compute_mask() {
                Ok(mask) => apply_mask(logits, &mask),
                Err(e) => return Outcome::Failed(LlmError::Model(format!("grammar: {e}"))),
            }
        }
        let Some(token) = seq.job.sampler.sample(logits) else {
            return Outcome::Failed(LlmError::Model(
                "every token was ruled out; the grammar cannot continue".into(),
            ));
        };
        if prompter.is_stop(token) {
            return Outcome::Finished(FinishReason::Stop);
        }
        if let Some(m) = seq.job.matcher.as_mut()
            && let Err(e) = m.consume_token(token)
        {
            return Outcome::Failed(LlmError::Model(format!("grammar: {e}")));
        }
        seq.completion_tokens += 1;
        let sink = seq.job.sink.as_ref();
        let mut send = |delta: &str| {
            if let Some(sink) = sink {
                let _ = sink.send(delta.to_string());
            }
        };
        if seq.scanner.push(prompter.token_bytes(token), &mut send) {
            return Outcome::Finished(FinishReason::Stop);
        }
        if seq.job.matcher.as_ref().is_some_and(|m| m.is_stopped()) {
            return Outcome::Finished(FinishReason::Stop);
        }
        if seq.completion_tokens >= seq.job.budget {
            return Outcome::Finished(FinishReason::Length);
        }
        Outcome::Continue { token, pos }
    }

    fn settle(&mut self, i: usize, outcome: Outcome) {
        match outcome {
            Outcome::Continue { token, pos } => {
                self.active[i].phase = Phase::Decode { token, pos };
            }
            Outcome::Finished(finish) => {
                let seq = self.active.remove(i);
                let slot = seq.slot;
                let sink = seq.job.sink;
                let text = seq.scanner.finish(&mut |delta: &str| {
                    if let Some(sink) = &sink {
                        let _ = sink.send(delta.to_string());
                    }
                });
                let _ = seq.job.reply.send(Ok(Generated {
                    text,
                    finish,
                    completion_tokens: seq.completion_tokens,
                }));
                self.release(slot);
            }
            Outcome::Failed(e) => {
                let seq = self.active.remove(i);
                let _ = seq.job.reply.send(Err(e));
                self.release(seq.slot);
            }
        }
    }
}

enum Outcome {
    Continue { token: u32, pos: usize },
    Finished(FinishReason),
    Failed(LlmError),
}

fn engine_err(e: &BackendError) -> LlmError {
    LlmError::Model(format!("embedded engine: {e}"))
}
