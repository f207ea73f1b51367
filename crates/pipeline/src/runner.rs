//! Orchestration: every seed streams through the stages on its own, with up to `jobs` seeds
//! in flight and no barrier between stages, so a large run keeps the backends busy while the
//! backends' own limits (concurrency, RPM/TPM) pace the calls.
//!
//! Each unit's result is written to the run's state store the moment it is known
//! ([`Cx::step`]); before doing a unit the runner looks there first. Together with the call
//! cache underneath the models, a killed run resumes without repeating a call that had
//! answered, and — because results are keyed, not appended — without torn or duplicate rows.
//! Step names, roles, progress bars and how far a command goes are read from [`crate::graph`].
//!
//! A unit whose call went to a batch file (`--batch`) is neither done nor failed: it stays
//! pending, its downstream steps wait for the next round, and every other unit goes on.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use demorecon_data::{RunState, Seed, records::variant_id};
use demorecon_llm::{ChatModel, LlmError};
use futures::{StreamExt, TryStreamExt, future::join_all};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Serialize, de::DeserializeOwned};

use crate::ask::{PipelineError, StepFailure};
pub use crate::graph::Stage;
use crate::graph::{
    DECOMPOSE, FGIV_A, FGIV_R, FILTER, GRAPH, Role, SEED_RESPONSE, Typed, VARY, VERIFY,
};
use crate::records::{Decomposition, Outcome, ResponseRecord, Variant};
pub use crate::shard::Shard;
use crate::verifiable::{self, VariantKinds};
use crate::{decompose, filter, respond, vary, verify};
use demorecon_judge::PromptSet;

/// The models of the three roles the pipeline uses.
#[derive(Clone)]
pub struct Models {
    /// Filter, decompose, vary.
    pub generator: Arc<dyn ChatModel>,
    /// Seed responses, FGIV-A and FGIV-R.
    pub responder: Arc<dyn ChatModel>,
    /// Verification where no code check decides.
    pub judge: Arc<dyn ChatModel>,
}

impl Models {
    pub fn get(&self, role: Role) -> &Arc<dyn ChatModel> {
        match role {
            Role::Generator => &self.generator,
            Role::Responder => &self.responder,
            Role::Judge => &self.judge,
        }
    }
}

/// What changes the data a run makes (and so must be the same when a run is resumed).
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// How far this command goes (one-stage commands stop early; not part of the identity).
    #[serde(skip)]
    pub through: Stage,
    pub regenerate_seed_responses: bool,
    pub max_edit_ratio: f64,
    pub response_max_tokens: u32,
    pub response_temperature: f32,
    /// Free-form variants (the paper's), verifiable ones, or both.
    pub variant_kinds: VariantKinds,
    /// Most draws per verifiable response (rejection sampling).
    pub samples: u32,
    /// Temperature of those draws.
    pub sample_temperature: f32,
    /// Seeds in flight at once (not part of the data's identity).
    #[serde(skip)]
    pub jobs: usize,
    #[serde(skip)]
    pub shard: Option<Shard>,
    /// Draw progress bars (when stderr is a terminal).
    #[serde(skip)]
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            through: Stage::Verify,
            regenerate_seed_responses: false,
            max_edit_ratio: 0.5,
            response_max_tokens: 384,
            response_temperature: 0.7,
            variant_kinds: VariantKinds::Free,
            samples: 4,
            sample_temperature: 0.8,
            jobs: 32,
            shard: None,
            progress: true,
        }
    }
}

impl Options {
    /// The seeds this process is responsible for.
    pub fn in_scope(&self, seed: &Seed) -> bool {
        self.shard.is_none_or(|s| s.contains(&seed.id))
    }
}

/// Live counts per stage (one bar each, in graph order), drawn only on a terminal.
struct Progress {
    bars: BTreeMap<Stage, ProgressBar>,
    _multi: MultiProgress,
}

impl Progress {
    fn new(seeds: u64, draw: bool) -> Self {
        let multi = if draw {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        };
        let style = ProgressStyle::with_template(
            "{prefix:>12} {bar:30} {pos:>7}/{len:<7} {per_sec:>10} eta {eta}",
        )
        .expect("valid template");
        let mut bars = BTreeMap::new();
        for decl in &GRAPH.stages {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(style.clone());
            bar.set_prefix(decl.command);
            bars.insert(decl.stage, bar);
        }
        let progress = Self {
            bars,
            _multi: multi,
        };
        progress.expect(FILTER, seeds);
        progress
    }

    fn expect<T>(&self, step: Typed<T>, more: u64) {
        if let Some(b) = self.bars.get(&step.stage) {
            b.inc_length(more);
        }
    }

    fn done<T>(&self, step: Typed<T>) {
        if let Some(b) = self.bars.get(&step.stage) {
            b.inc(1);
        }
    }

    fn finish(&self) {
        for b in self.bars.values() {
            b.finish();
        }
    }
}

/// A unit's result as this round sees it.
enum Got<T> {
    /// Stored (now or by an earlier round).
    Stored(Outcome<T>),
    /// Its call went to a batch file; nothing is stored and nothing downstream runs.
    Deferred,
}

impl<T> Got<T> {
    fn done(&self) -> Option<&T> {
        match self {
            Got::Stored(outcome) => outcome.done(),
            Got::Deferred => None,
        }
    }
}

/// What one pass over the seeds did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Units left pending because their calls went to a batch file.
    pub deferred_units: u64,
}

/// Everything a stage needs for one unit.
pub struct Cx<'a> {
    pub models: &'a Models,
    pub prompts: &'a PromptSet,
    pub opts: &'a Options,
    state: &'a RunState,
    progress: &'a Progress,
    deferred: AtomicU64,
}

impl Cx<'_> {
    /// The model that answers a step's role.
    pub fn model(&self, role: Role) -> &Arc<dyn ChatModel> {
        self.models.get(role)
    }

    /// Whether this command goes as far as `step`.
    fn wants<T>(&self, step: Typed<T>) -> bool {
        step.stage <= self.opts.through
    }

    /// The stored result of `(unit, step)`, or `make`'s, stored before it is returned.
    async fn step<T: Serialize + DeserializeOwned>(
        &self,
        unit: &str,
        step: Typed<T>,
        make: impl Future<Output = Result<T, StepFailure>>,
    ) -> Result<Got<T>, PipelineError> {
        let stage = step.name;
        let stored = match self.state.get(unit, stage)? {
            Some(value) => value,
            None => {
                let outcome = match make.await {
                    Ok(t) => Outcome::Done(t),
                    Err(StepFailure::Quarantine(q)) => Outcome::Quarantined(q),
                    Err(StepFailure::Fatal(PipelineError::Llm(LlmError::Deferred { .. }))) => {
                        self.deferred.fetch_add(1, Ordering::Relaxed);
                        return Ok(Got::Deferred);
                    }
                    Err(StepFailure::Fatal(e)) => return Err(e),
                };
                let value = serde_json::to_value(&outcome).expect("records serialise");
                self.state.put(unit, stage, &value)?
            }
        };
        self.progress.done(step);
        serde_json::from_value(stored).map(Got::Stored).map_err(|e| {
            PipelineError::Other(format!(
                "{}: the stored {stage} result of {unit} is unreadable ({e}); was the run made by another version?",
                self.state.path().display()
            ))
        })
    }

    async fn process_seed(&self, seed: &Seed) -> Result<(), PipelineError> {
        let kept = self.step(&seed.id, FILTER, filter::run(self, seed)).await?;
        if !kept.done().is_some_and(|f| f.keep) || !self.wants(DECOMPOSE) {
            return Ok(());
        }
        self.progress.expect(DECOMPOSE, 1);
        let decomposition = self
            .step(&seed.id, DECOMPOSE, decompose::run(self, seed))
            .await?;
        let Some(decomposition) = decomposition.done() else {
            return Ok(());
        };
        if !self.wants(VARY) {
            return Ok(());
        }
        let ks = variant_slots(self.opts.variant_kinds, decomposition);
        self.progress.expect(VARY, ks.len() as u64);
        let want_responses = self.wants(SEED_RESPONSE);
        if want_responses {
            self.progress.expect(SEED_RESPONSE, 1);
        }
        // The seed's response depends only on the seed: it runs alongside the variants.
        let seed_response = async {
            if want_responses {
                self.step(&seed.id, SEED_RESPONSE, respond::seed(self, seed))
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let variants = join_all(
            ks.iter()
                .map(|&(kind, k)| self.vary_and_respond(seed, decomposition, kind, k)),
        );
        let (seed_response, variants) = futures::join!(seed_response, variants);
        let seed_response = seed_response?;
        let variants: Vec<Option<(Variant, Option<String>)>> =
            variants.into_iter().collect::<Result<_, _>>()?;
        let Some(seed_response) = seed_response.as_ref().and_then(Got::done) else {
            return Ok(());
        };
        // FGIV-R and verification need the seed's response.
        let tails = variants
            .iter()
            .flatten()
            .map(|(v, direct)| self.revise_and_verify(seed, seed_response, v, direct.as_deref()));
        join_all(tails).await.into_iter().collect()
    }

    /// Vary sub-instruction `k` (a free-form variant, or a verifiable one made by code); for a
    /// valid variant, answer it directly (FGIV-A). Returns the valid variant and its FGIV-A
    /// text, if there is one.
    async fn vary_and_respond(
        &self,
        seed: &Seed,
        decomposition: &Decomposition,
        kind: Kind,
        k: usize,
    ) -> Result<Option<(Variant, Option<String>)>, PipelineError> {
        let variant = match kind {
            Kind::Free => {
                self.step(
                    &variant_id(&seed.id, k),
                    VARY,
                    vary::run(self, seed, decomposition, k),
                )
                .await?
            }
            Kind::Verifiable => {
                let made = verifiable::make(
                    seed,
                    &decomposition.sub_instructions,
                    k,
                    self.opts.max_edit_ratio,
                );
                self.step(&made.variant_id.clone(), VARY, async { Ok(made) })
                    .await?
            }
        };
        let Some(variant) = variant.done().filter(|v| v.valid).cloned() else {
            return Ok(None);
        };
        let vid = variant.variant_id.clone();
        let mut direct = None;
        if self.wants(FGIV_A) {
            self.progress.expect(FGIV_A, 1);
            let answered = self
                .step(&vid, FGIV_A, respond::fgiv_a(self, &variant))
                .await?;
            direct = answered.done().map(|r| r.text.clone());
        }
        Ok(Some((variant, direct)))
    }

    async fn revise_and_verify(
        &self,
        seed: &Seed,
        seed_response: &ResponseRecord,
        variant: &Variant,
        a: Option<&str>,
    ) -> Result<(), PipelineError> {
        let vid = &variant.variant_id;
        self.progress.expect(FGIV_R, 1);
        let revised = self
            .step(
                vid,
                FGIV_R,
                respond::fgiv_r(self, seed, seed_response, variant),
            )
            .await?;
        if !self.wants(VERIFY) {
            return Ok(());
        }
        let r = revised.done().map(|r| r.text.as_str());
        if a.is_none() && r.is_none() {
            return Ok(());
        }
        self.progress.expect(VERIFY, 1);
        self.step(
            vid,
            VERIFY,
            verify::run(self, variant, &seed_response.text, a, r),
        )
        .await?;
        Ok(())
    }
}

/// A variant's kind: the paper's free-form edit, or a code-checkable constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Free,
    Verifiable,
}

/// The variants a decomposed seed gets under `kinds`, in the order they are stored and
/// published: every free one (`/v{k}`), then every verifiable one (`/c{k}`).
pub fn variant_slots(kinds: VariantKinds, decomposition: &Decomposition) -> Vec<(Kind, usize)> {
    let n = decomposition.sub_instructions.len();
    let mut out = Vec::new();
    if kinds.free() {
        out.extend((0..n).map(|k| (Kind::Free, k)));
    }
    if kinds.verifiable() {
        out.extend((0..n).map(|k| (Kind::Verifiable, k)));
    }
    out
}

/// The id of a variant slot.
pub fn slot_id(seed_id: &str, (kind, k): (Kind, usize)) -> String {
    match kind {
        Kind::Free => variant_id(seed_id, k),
        Kind::Verifiable => verifiable::variant_id(seed_id, k),
    }
}

/// Runs every in-scope seed of the run through `opts.through`. Returns on the first error
/// that stops the run; everything finished before it stays in the state store.
pub async fn execute(
    state: &RunState,
    models: &Models,
    prompts: &PromptSet,
    opts: &Options,
) -> Result<Summary, PipelineError> {
    let seeds: Vec<Seed> = state
        .seeds()?
        .into_iter()
        .filter(|s| opts.in_scope(s))
        .collect();
    let progress = Progress::new(seeds.len() as u64, opts.progress);
    let cx = Cx {
        models,
        prompts,
        opts,
        state,
        progress: &progress,
        deferred: AtomicU64::new(0),
    };
    let result = futures::stream::iter(seeds.iter())
        .map(|seed| cx.process_seed(seed))
        .buffer_unordered(opts.jobs.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await;
    progress.finish();
    result.map(|()| Summary {
        deferred_units: cx.deferred.load(Ordering::Relaxed),
    })
}
