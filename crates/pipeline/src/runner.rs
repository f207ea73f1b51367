//! Orchestration: every seed streams through the stages on its own, with up to `jobs` seeds
//! in flight and no barrier between stages, so a large run keeps the backends busy while the
//! backends' own limits (concurrency, RPM/TPM) pace the calls.
//!
//! Each unit's result is written to the run's state store the moment it is known
//! ([`Cx::step`]); before doing a unit the runner looks there first. Together with the call
//! cache underneath the models, a killed run resumes without repeating a call that had
//! answered, and — because results are keyed, not appended — without torn or duplicate rows.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use demorecon_data::{RunState, Seed, records::variant_id};
use demorecon_llm::ChatModel;
use futures::{StreamExt, TryStreamExt, future::join_all};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Serialize, de::DeserializeOwned};

use crate::ask::{PipelineError, StepFailure};
use crate::records::{Decomposition, Outcome, ResponseRecord, Variant, stage};
use crate::{decompose, filter, respond, vary, verify};
use demorecon_judge::PromptSet;

/// How far a command takes each seed. Stages are ordered; a later one includes the earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Filter,
    Decompose,
    Vary,
    Respond,
    Verify,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Filter => "filter",
            Stage::Decompose => "decompose",
            Stage::Vary => "vary",
            Stage::Respond => "respond",
            Stage::Verify => "verify",
        }
    }
}

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

/// `--shard i/n`: this process does the seeds whose id hashes to `i` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard wants I/N with 0 <= I < N, got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn contains(&self, seed_id: &str) -> bool {
        let h = blake3::hash(seed_id.as_bytes());
        let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        v % u64::from(self.count) == u64::from(self.index)
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

/// Live counts per stage: one bar each, drawn only on a terminal.
struct Progress {
    bars: BTreeMap<&'static str, ProgressBar>,
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
        for (name, len) in [
            (stage::FILTER, seeds),
            (stage::DECOMPOSE, seeds),
            (stage::VARY, 0),
            ("respond", 0),
            (stage::VERIFY, 0),
        ] {
            let bar = multi.add(ProgressBar::new(len));
            bar.set_style(style.clone());
            bar.set_prefix(name);
            bars.insert(name, bar);
        }
        Self {
            bars,
            _multi: multi,
        }
    }

    fn bar(&self, stage: &str) -> Option<&ProgressBar> {
        let name = if stage.starts_with("respond") {
            "respond"
        } else {
            stage
        };
        self.bars.get(name)
    }

    fn expect(&self, stage: &str, more: u64) {
        if let Some(b) = self.bar(stage) {
            b.inc_length(more);
        }
    }

    fn done(&self, stage: &str) {
        if let Some(b) = self.bar(stage) {
            b.inc(1);
        }
    }

    fn finish(&self) {
        for b in self.bars.values() {
            b.finish();
        }
    }
}

/// Everything a stage needs for one unit.
pub struct Cx<'a> {
    pub models: &'a Models,
    pub prompts: &'a PromptSet,
    pub opts: &'a Options,
    state: &'a RunState,
    progress: &'a Progress,
}

impl Cx<'_> {
    /// The stored result of `(unit, stage)`, or `make`'s, stored before it is returned.
    async fn step<T: Serialize + DeserializeOwned>(
        &self,
        unit: &str,
        stage: &str,
        make: impl Future<Output = Result<T, StepFailure>>,
    ) -> Result<Outcome<T>, PipelineError> {
        let stored = match self.state.get(unit, stage)? {
            Some(value) => value,
            None => {
                let outcome = match make.await {
                    Ok(t) => Outcome::Done(t),
                    Err(StepFailure::Quarantine(q)) => Outcome::Quarantined(q),
                    Err(StepFailure::Fatal(e)) => return Err(e),
                };
                let value = serde_json::to_value(&outcome).expect("records serialise");
                self.state.put(unit, stage, &value)?
            }
        };
        self.progress.done(stage);
        serde_json::from_value(stored).map_err(|e| {
            PipelineError::Other(format!(
                "{}: the stored {stage} result of {unit} is unreadable ({e}); was the run made by another version?",
                self.state.path().display()
            ))
        })
    }

    async fn process_seed(&self, seed: &Seed) -> Result<(), PipelineError> {
        let through = self.opts.through;
        let kept = self
            .step(&seed.id, stage::FILTER, filter::run(self, seed))
            .await?;
        if !kept.done().is_some_and(|f| f.keep) || through == Stage::Filter {
            return Ok(());
        }
        let decomposition = self
            .step(&seed.id, stage::DECOMPOSE, decompose::run(self, seed))
            .await?;
        let Some(decomposition) = decomposition.done() else {
            return Ok(());
        };
        if through == Stage::Decompose {
            return Ok(());
        }
        self.progress
            .expect(stage::VARY, decomposition.sub_instructions.len() as u64);
        let want_responses = through >= Stage::Respond;
        if want_responses {
            self.progress.expect(stage::SEED_RESPONSE, 1);
        }
        // The seed's response depends only on the seed: it runs alongside the variants.
        let seed_response = async {
            if want_responses {
                self.step(&seed.id, stage::SEED_RESPONSE, respond::seed(self, seed))
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let variants = join_all(
            (0..decomposition.sub_instructions.len())
                .map(|k| self.vary_and_respond(seed, decomposition, k)),
        );
        let (seed_response, variants) = futures::join!(seed_response, variants);
        let seed_response = seed_response?;
        let variants: Vec<Option<(Variant, Option<String>)>> =
            variants.into_iter().collect::<Result<_, _>>()?;
        let Some(seed_response) = seed_response.as_ref().and_then(|o| o.done()) else {
            return Ok(());
        };
        // FGIV-R and verification need the seed's response.
        let tails = variants
            .iter()
            .flatten()
            .map(|(v, direct)| self.revise_and_verify(seed, seed_response, v, direct.as_deref()));
        join_all(tails).await.into_iter().collect()
    }

    /// Vary sub-instruction `k`; for a valid variant, answer it directly (FGIV-A). Returns the
    /// valid variant and its FGIV-A text, if there is one.
    async fn vary_and_respond(
        &self,
        seed: &Seed,
        decomposition: &Decomposition,
        k: usize,
    ) -> Result<Option<(Variant, Option<String>)>, PipelineError> {
        let vid = variant_id(&seed.id, k);
        let variant = self
            .step(&vid, stage::VARY, vary::run(self, seed, decomposition, k))
            .await?;
        let Some(variant) = variant.done().filter(|v| v.valid).cloned() else {
            return Ok(None);
        };
        let mut direct = None;
        if self.opts.through >= Stage::Respond {
            self.progress.expect(stage::FGIV_A, 1);
            let answered = self
                .step(&vid, stage::FGIV_A, respond::fgiv_a(self, &variant))
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
        self.progress.expect(stage::FGIV_R, 1);
        let revised = self
            .step(
                vid,
                stage::FGIV_R,
                respond::fgiv_r(self, seed, seed_response, variant),
            )
            .await?;
        if self.opts.through < Stage::Verify {
            return Ok(());
        }
        let r = revised.done().map(|r| r.text.as_str());
        if a.is_none() && r.is_none() {
            return Ok(());
        }
        self.progress.expect(stage::VERIFY, 1);
        self.step(
            vid,
            stage::VERIFY,
            verify::run(self, variant, &seed_response.text, a, r),
        )
        .await?;
        Ok(())
    }
}

/// Runs every in-scope seed of the run through `opts.through`. Returns on the first error
/// that stops the run; everything finished before it stays in the state store.
pub async fn execute(
    state: &RunState,
    models: &Models,
    prompts: &PromptSet,
    opts: &Options,
) -> Result<(), PipelineError> {
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
    };
    let result = futures::stream::iter(seeds.iter())
        .map(|seed| cx.process_seed(seed))
        .buffer_unordered(opts.jobs.max(1))
        .try_for_each(|()| async { Ok(()) })
        .await;
    progress.finish();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_seeds() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in 0..300 {
            let id = format!("seed-{n}");
            assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_are_ordered() {
        assert!(Stage::Filter < Stage::Decompose && Stage::Respond < Stage::Verify);
    }
}
