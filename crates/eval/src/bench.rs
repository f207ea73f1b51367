//! The one shape every benchmark runs on: load items → generate → score → summarize → write.
//!
//! A benchmark implements [`Benchmark`]: it owns its loaded items, says what request the model
//! under test answers for each, scores one item from its response (asking the [`Judge`] when
//! its rules cannot decide), and turns the scored items into a [`Summary`]. [`run`] does the
//! rest the same way for all of them: responses are generated through any [`ChatModel`] (the
//! caller hands in the cached, metered model, so a rerun makes no call twice) or taken from a
//! file, items are scored with bounded concurrency, progress bars show rate and ETA, results
//! come back in input order, and [`crate::record::write_eval_dir`] writes the folder.
//!
//! Failures: a model or judge call that fails after the backend's own retries stops the eval
//! with the item's id. Everything already answered is in the call cache, so rerunning the same
//! command resumes without asking any call twice. A judge reply that does not parse is not a
//! failure: the benchmark records it as unparsed, and the summary counts it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use demorecon_llm::{ChatModel, ChatRequest, LlmError};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::record::{ItemRecord, ModelInfo, Summary};

/// Why an eval stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} failed for item {id}: {source}")]
    Call {
        what: &'static str,
        id: String,
        source: LlmError,
    },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Jsonl(#[from] demorecon_io::JsonlError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
}

/// A model as a judge: the cached model plus what the summary says about it. The model id the
/// endpoint reports in its first answer is recorded, since it may differ from the one asked for.
pub struct Judge {
    model: Arc<dyn ChatModel>,
    info: Mutex<ModelInfo>,
}

impl Judge {
    pub fn new(model: Arc<dyn ChatModel>, spec: Option<String>, prompt_version: &str) -> Self {
        let mut info = model_info(&*model, spec);
        info.prompt_version = Some(prompt_version.to_owned());
        Judge {
            model,
            info: Mutex::new(info),
        }
    }

    /// Sends one judge request and returns the reply text.
    pub async fn ask(&self, req: &ChatRequest) -> Result<String, LlmError> {
        let resp = self.model.chat(req, None).await?;
        self.note_reported(&resp.model);
        Ok(resp.text)
    }

    /// The judge's model, for callers that ask through `demorecon_judge` (structured asks);
    /// they report the answering model back with [`Judge::note_reported`].
    pub fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    /// Records the model id an answer came from, if none is recorded yet.
    pub fn note_reported(&self, model: &str) {
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        if info.reported.is_none() {
            info.reported = Some(model.to_owned());
        }
    }

    /// The judge's identity for the summary.
    pub fn info(&self) -> ModelInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A greedy request for `messages` whose seed is derived from the item's id and the purpose
/// (`{benchmark}/answer`, …), so even a sampling backend answers an item reproducibly.
pub fn greedy_request(
    messages: Vec<demorecon_llm::Message>,
    max_tokens: u32,
    item_id: &str,
    purpose: &str,
    prompt_version: Option<&str>,
) -> ChatRequest {
    let mut req = ChatRequest::new(messages);
    req.sampling = demorecon_llm::Sampling {
        temperature: 0.0,
        max_tokens,
        seed: demorecon_judge::ask::unit_seed(item_id, purpose),
        ..demorecon_llm::Sampling::default()
    };
    req.prompt_version = prompt_version.map(str::to_owned);
    req
}

/// What the summary records about a model, before it has answered.
pub fn model_info(model: &dyn ChatModel, spec: Option<String>) -> ModelInfo {
    let id = model.identity();
    ModelInfo {
        spec,
        kind: id.kind,
        model: id.model,
        reported: None,
        detail: id.detail,
        prompt_version: None,
    }
}

/// One benchmark on the common shape.
#[async_trait::async_trait]
pub trait Benchmark: Sync {
    type Item: Sync;

    /// `ifeval`, `fgiv`, `infobench`, `followbench`.
    fn name(&self) -> &'static str;

    /// The loaded items, in the order results are written.
    fn items(&self) -> &[Self::Item];

    /// The item's stable id (the join key for responses files and paired comparisons).
    fn item_id(&self, item: &Self::Item) -> String;

    /// The request the model under test answers for `item`.
    fn request(&self, item: &Self::Item, max_tokens: u32) -> ChatRequest;

    /// Scores one item from its response, asking `judge` where rules cannot decide (`None`
    /// when the eval runs without a judge, e.g. rules only).
    async fn score(
        &self,
        item: &Self::Item,
        response: &str,
        judge: Option<&Judge>,
    ) -> Result<ItemRecord, BenchError>;

    /// Scores every item at once, for benchmarks whose scoring is CPU-bound code that runs
    /// best in one parallel batch (IFEval). `None` (the default) scores item by item with
    /// [`Benchmark::score`].
    fn score_batch(&self, _responses: &[String]) -> Option<Result<Vec<ItemRecord>, BenchError>> {
        None
    }

    /// Headline metrics, breakdowns and the count of unparsed judge replies over the scored
    /// items (model, responses and judge are filled in by [`run`]).
    fn summarize(&self, items: &[ItemRecord]) -> Summary;
}

/// Where the responses come from.
pub enum Responses {
    /// Given, one per item in item order, read from `source`.
    Given { source: PathBuf, texts: Vec<String> },
    /// Generated by the model under test.
    Generate {
        model: Arc<dyn ChatModel>,
        spec: Option<String>,
    },
}

/// Knobs of [`run`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// New-token cap for generated responses.
    pub max_tokens: u32,
    /// Calls (generation, or items being judged) in flight at once.
    pub concurrency: usize,
    /// Draw progress bars on stderr (they hide themselves when stderr is not a terminal).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_tokens: 2048,
            concurrency: 4,
            progress: true,
        }
    }
}

/// A progress bar with rate and ETA, or a hidden one.
pub fn progress_bar(len: usize, label: &str, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len as u64),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec:>9} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `f` over `items` with at most `concurrency` in flight; results in input order. Stops at
/// the first error (calls already answered stay in the cache).
pub async fn map_ordered<'a, T, R, F, Fut>(
    items: &'a [T],
    concurrency: usize,
    bar: &ProgressBar,
    f: F,
) -> Result<Vec<R>, BenchError>
where
    T: Sync,
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<R, BenchError>>,
{
    let mut out: Vec<Option<R>> = Vec::with_capacity(items.len());
    out.resize_with(items.len(), || None);
    let mut stream = futures::stream::iter(items.iter().enumerate())
        .map(|(i, item)| {
            let fut = f(item);
            async move { (i, fut.await) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((i, result)) = stream.next().await {
        out[i] = Some(result?);
        bar.inc(1);
    }
    bar.finish();
    Ok(out
        .into_iter()
        .map(|r| r.expect("every index is filled once"))
        .collect())
}

/// Generates, scores and summarizes `bench`. The caller writes the folder
/// ([`crate::record::write_eval_dir`]) and prints.
pub async fn run<B: Benchmark>(
    bench: &B,
    responses: Responses,
    judge: Option<&Judge>,
    opts: RunOptions,
) -> Result<(Summary, Vec<ItemRecord>), BenchError> {
    let items = bench.items();
    let (texts, model, given) = match responses {
        Responses::Given { source, texts } => {
            if texts.len() != items.len() {
                return Err(BenchError::Input(format!(
                    "{}: {} responses for {} items",
                    source.display(),
                    texts.len(),
                    items.len()
                )));
            }
            (texts, None, Some(source.display().to_string()))
        }
        Responses::Generate { model, spec } => {
            let info = Mutex::new(model_info(&*model, spec));
            let bar = progress_bar(items.len(), "generate", opts.progress);
            let texts = map_ordered(items, opts.concurrency, &bar, |item| {
                let model = &model;
                let info = &info;
                async move {
                    let req = bench.request(item, opts.max_tokens);
                    let resp = model
                        .chat(&req, None)
                        .await
                        .map_err(|source| BenchError::Call {
                            what: "generation",
                            id: bench.item_id(item),
                            source,
                        })?;
                    let mut info = info.lock().unwrap_or_else(|e| e.into_inner());
                    if info.reported.is_none() {
                        info.reported = Some(resp.model.clone());
                    }
                    Ok(resp.text)
                }
            })
            .await?;
            (
                texts,
                Some(info.into_inner().unwrap_or_else(|e| e.into_inner())),
                None,
            )
        }
    };
    let records = match bench.score_batch(&texts) {
        Some(records) => records?,
        None => {
            let bar = progress_bar(items.len(), "score", opts.progress);
            let indexed: Vec<(usize, &B::Item)> = items.iter().enumerate().collect();
            map_ordered(&indexed, opts.concurrency, &bar, |(i, item)| {
                let text = &texts[*i];
                async move { bench.score(item, text, judge).await }
            })
            .await?
        }
    };
    let mut summary = bench.summarize(&records);
    summary.model = model;
    summary.responses = given;
    summary.judge = judge.map(Judge::info);
    Ok((summary, records))
}
