//! [`EmbeddedChat`]: the embedded model behind the async [`ChatModel`] trait.
//!
//! Loading starts one engine thread that owns the llama.cpp context and runs the
//! [`crate::scheduler`]; every clone of an `EmbeddedChat` sends its requests there, so
//! concurrent `chat` calls decode together in one batch. A request is rendered, tokenized and
//! given its grammar matcher on tokio's blocking pool before it reaches the engine; its reply
//! (and its streamed deltas) come back over channels. Dropping the last clone stops the thread.

use crate::backend::Backend;
use crate::llama::{self, ContextSize, ENGINE_ID, LlamaEngine};
use crate::prompt::Prompter;
use crate::sampler::{SAMPLER_ID, Sampler};
use crate::scheduler::{self, Capacity, Counters, Generated, Job, PREFILL_CHUNK, Stats};
use crate::threads::Governor;
use async_trait::async_trait;
use demorecon_gguf::model_name;
use demorecon_gguf::tokenizer::GgufTokenizer;
use demorecon_llm::{
    BackendIdentity, ChatModel, ChatRequest, ChatResponse, FinishReason, LlmError, TokenSink, Usage,
};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// Context per sequence when the caller sets none (the GGUF's own, if smaller). Every decode
/// slot and prefix slot holds this much KV, allocated at load.
pub const DEFAULT_CONTEXT: usize = 4096;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Context length per sequence, in tokens (default: [`DEFAULT_CONTEXT`] or the GGUF's,
    /// whichever is smaller).
    pub max_context: Option<usize>,
    /// The most sequences decoded together in one batch; more requests wait for a slot.
    pub max_batch: usize,
    /// How many prompt prefixes to keep for reuse.
    pub prefix_slots: usize,
    /// CPU threads for llama.cpp: a fixed count, or (the default) chosen per call by
    /// measurement between 1 and the cores available ([`crate::threads`]).
    pub threads: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_context: None,
            max_batch: 16,
            prefix_slots: 4,
            threads: None,
        }
    }
}

/// The identity a model at `path` has, without loading it (for answering from the cache
/// offline). Hashes the file unless its stamp is current.
pub fn identity_of(path: &Path) -> Result<BackendIdentity, LlmError> {
    let digest =
        demorecon_gguf::store::cached_sha256(path).map_err(|e| LlmError::Model(e.to_string()))?;
    Ok(identity_with(model_name(path), &digest))
}

fn identity_with(model: String, sha256: &str) -> BackendIdentity {
    BackendIdentity {
        kind: "embedded".into(),
        model,
        // The weights, the kernels and the prefill chunking all decide the logits; the
        // sampler, which token is drawn from them.
        detail: format!("{sha256}:{ENGINE_ID}:chunk{PREFILL_CHUNK}:{SAMPLER_ID}"),
    }
}

/// Where a request's result arrives from the engine.
type Reply = oneshot::Receiver<Result<Generated, LlmError>>;

/// The embedded backend. Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct EmbeddedChat {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    prompter: Arc<Prompter>,
    identity: BackendIdentity,
    name: String,
    context: usize,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the engine thread once its sequences are done (their
        // callers are gone, so they end at the next step).
        self.jobs.take();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl EmbeddedChat {
    /// Loads the GGUF at `path` and starts its engine thread; hashes the GGUF once for the
    /// identity (a stamp file makes later runs skip the hash).
    pub fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<Self> {
        let prompter = Arc::new(Prompter::load(path)?);
        let trained =
            demorecon_gguf::LlamaConfig::from_gguf(&demorecon_gguf::read_metadata(path)?)?
                .context_length;
        let context = options
            .max_context
            .unwrap_or(DEFAULT_CONTEXT)
            .min(trained)
            .max(1);
        let capacity = Capacity {
            max_batch: options.max_batch.max(1),
            prefix_slots: options.prefix_slots,
        };
        let governor = match options.threads {
            Some(n) => Governor::fixed(n),
            None => Governor::adaptive(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
        };
        let size = ContextSize {
            slots: capacity.max_batch + capacity.prefix_slots,
            slot_context: context,
            max_tokens_per_call: capacity.max_batch.max(PREFILL_CHUNK),
            threads: governor.choices()[0],
            kv_f32: false,
        };
        let digest = demorecon_gguf::store::cached_sha256(path)
            .map_err(|e| anyhow::anyhow!("hashing {}: {e}", path.display()))?;
        let name = model_name(path);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (ready, loaded) = mpsc::sync_channel::<Result<(), String>>(1);
        let engine_prompter = prompter.clone();
        let counters = Arc::new(Counters::default());
        let engine_counters = counters.clone();
        let model_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("demorecon-engine".into())
            .spawn(move || {
                let model = match llama::load_model(&model_path) {
                    Ok(model) => model,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut engine = match LlamaEngine::new(&model, size) {
                    Ok(engine) => engine,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                if engine.n_vocab() < engine_prompter.tokenizer().vocab_size() {
                    let _ = ready.send(Err(format!(
                        "the model has {} logits but its tokenizer {} tokens",
                        engine.n_vocab(),
                        engine_prompter.tokenizer().vocab_size()
                    )));
                    return;
                }
                let _ = ready.send(Ok(()));
                scheduler::run(
                    &mut engine,
                    &engine_prompter,
                    capacity,
                    governor,
                    engine_counters,
                    receiver,
                );
            })
            .map_err(|e| anyhow::anyhow!("starting the engine thread: {e}"))?;
        match loaded.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                anyhow::bail!("{e}");
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the engine thread stopped while loading {}", path.display());
            }
        }
        let context = size.slot_context.div_ceil(256) * 256;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                thread: Mutex::new(Some(thread)),
                prompter,
                identity: identity_with(name.clone(), &digest),
                name,
                context: context.min(trained.max(1)),
                counters,
            }),
        })
    }

    /// Loads the default model from the data directory, fetching it first if needed.
    pub fn load_default(options: &LoadOptions) -> anyhow::Result<Self> {
        let path = demorecon_gguf::ensure_model(&demorecon_llm::home::data_home())?;
        Self::load(&path, options)
    }

    /// The context length of one sequence, in tokens (prompt and completion together).
    pub fn context_length(&self) -> usize {
        self.inner.context
    }

    /// What the engine has done so far (prefix reuse, batch sizes).
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// The model id: the GGUF's file stem.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        self.inner.prompter.tokenizer()
    }

    /// The prompt text the chat template makes of `req.messages`.
    pub fn render_prompt(&self, req: &ChatRequest) -> Result<String, LlmError> {
        self.inner.prompter.render(req)
    }

    /// Prompt token ids for `req`.
    pub fn prompt_tokens(&self, req: &ChatRequest) -> Result<Vec<u32>, LlmError> {
        self.inner.prompter.tokens(req)
    }

    /// Tokenizes `req` and checks it fits; `None` when nothing is to be generated.
    fn prepare(
        &self,
        req: &ChatRequest,
        sink: Option<TokenSink>,
    ) -> Result<(Job, Reply, usize), LlmError> {
        let prompter = &self.inner.prompter;
        let prompt = prompter.tokens(req)?;
        let context = self.inner.context;
        if prompt.len() >= context {
            return Err(LlmError::InvalidRequest(format!(
                "the prompt is {} tokens but {} holds {context} tokens of context",
                prompt.len(),
                self.inner.name
            )));
        }
        let budget = (req.sampling.max_tokens as usize).min(context - prompt.len());
        let matcher = prompter.matcher(&req.response_format)?;
        let (reply, receiver) = oneshot::channel();
        let prompt_tokens = prompt.len();
        Ok((
            Job {
                prompt,
                budget,
                sampler: Sampler::new(
                    req.sampling.temperature,
                    req.sampling.top_p,
                    req.sampling.seed,
                ),
                matcher,
                stops: req.sampling.stop.clone(),
                sink,
                reply,
            },
            receiver,
            prompt_tokens,
        ))
    }

    fn submit(&self, job: Job) -> Result<(), LlmError> {
        self.inner
            .jobs
            .as_ref()
            .ok_or_else(|| LlmError::Model("the embedded engine has stopped".into()))?
            .send(job)
            .map_err(|_| LlmError::Model("the embedded engine has stopped".into()))
    }

    fn response(&self, generated: Generated, prompt_tokens: usize) -> ChatResponse {
        ChatResponse {
            text: generated.text,
            finish_reason: generated.finish,
            usage: Usage {
                prompt_tokens: prompt_tokens as u64,
                completion_tokens: generated.completion_tokens as u64,
            },
            model: self.inner.name.clone(),
            cached: false,
        }
    }

    /// Answers `req` from a synchronous caller (not from inside an async runtime), calling
    /// `on_text` with each new piece of text as it is produced; the pieces concatenate to the
    /// returned text.
    pub fn generate_blocking(
        &self,
        req: &ChatRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError> {
        let (sink, mut deltas) = tokio::sync::mpsc::unbounded_channel();
        let (job, reply, prompt_tokens) = self.prepare(req, Some(sink))?;
        if job.budget == 0 {
            return Ok(self.response(empty(), prompt_tokens));
        }
        self.submit(job)?;
        // The engine drops the sink when the sequence ends.
        while let Some(delta) = deltas.blocking_recv() {
            on_text(&delta);
        }
        let generated = reply
            .blocking_recv()
            .map_err(|_| LlmError::Model("the embedded engine dropped the request".into()))??;
        Ok(self.response(generated, prompt_tokens))
    }
}

fn empty() -> Generated {
    Generated {
        text: String::new(),
        finish: FinishReason::Length,
        completion_tokens: 0,
    }
}

#[async_trait]
impl ChatModel for EmbeddedChat {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity.clone()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        // Templating, tokenizing and building a grammar are CPU work: off the async threads.
        let this = self.clone();
        let req = req.clone();
        let (job, reply, prompt_tokens) =
            tokio::task::spawn_blocking(move || this.prepare(&req, stream))
                .await
                .map_err(|e| LlmError::Model(format!("preparing the request failed: {e}")))??;
        if job.budget == 0 {
            return Ok(self.response(empty(), prompt_tokens));
        }
        self.submit(job)?;
        let generated = reply
            .await
            .map_err(|_| LlmError::Model("the embedded engine dropped the request".into()))??;
        Ok(self.response(generated, prompt_tokens))
    }
}
