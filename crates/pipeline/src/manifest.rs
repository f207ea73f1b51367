//! Counting what a run did, and saying so: the manifest's `counts` (which add up — every seed
//! is filtered out, quarantined, done or still pending; every variant valid, invalid,
//! quarantined or pending), the `manifest.json` document, and the closing table a run prints.
//! Quarantine reasons and usage are keyed by the step names of [`crate::graph`]. Writing the
//! manifest (and knowing where the run's identity is stored) is [`crate::run_folder`]'s job.

use std::collections::BTreeMap;
use std::time::Instant;

use demorecon_llm::cache::CacheCounts;
use demorecon_llm::ledger::PriceTable;
use serde::Serialize;
use serde_json::{Value, json};

use crate::build::{BuildOptions, BuildReport, SeedView};
use crate::graph::{DECOMPOSE, FGIV_A, FGIV_R, FILTER, SEED_RESPONSE, VARY, VERIFY};
use crate::records::{Outcome, ResponseSource, VerifyMethod};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Seeds this run is responsible for (its shard, if any).
    pub seeds_in: usize,
    /// Records of the seed file that could not be read (`--skip-bad-seeds`).
    pub seeds_unreadable: usize,
    pub seeds_filtered_out: usize,
    pub seeds_quarantined: usize,
    /// Decomposed into at least two sub-instructions (or kept, for a filter-only run).
    pub seeds_done: usize,
    /// Not yet through the stages this run asked for (interrupted, or an earlier stage only).
    pub seeds_pending: usize,
    pub variants: usize,
    pub variants_valid: usize,
    pub variants_invalid: usize,
    pub variants_quarantined: usize,
    pub variants_pending: usize,
    pub variants_rewrite_flagged: usize,
    pub seed_responses_given: usize,
    pub seed_responses_generated: usize,
    pub responses_fgiv_a: usize,
    pub responses_fgiv_r: usize,
    pub responses_quarantined: usize,
    pub verified_by_code: usize,
    pub verified_by_judge: usize,
    pub verify_quarantined: usize,
    pub pairs_valid_fgiv_a: usize,
    pub pairs_valid_fgiv_r: usize,
    pub fgiv_eval_seeds: usize,
    /// Quarantined units by `stage/kind`.
    pub quarantined_by_reason: BTreeMap<String, usize>,
    /// Verifiable variants by constraint family (IFEval instruction id): the data's yield.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub verifiable: BTreeMap<String, FamilyYield>,
}

/// What one constraint family of verifiable variants gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FamilyYield {
    /// Valid variants of this family.
    pub variants: usize,
    /// Variants verified so far, and those whose seed response fails the check (a hard
    /// negative needs it to fail).
    pub verified: usize,
    pub seed_response_fails: usize,
    pub fgiv_a: SampleYield,
    pub fgiv_r: SampleYield,
}

/// Rejection sampling of one response kind within a family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SampleYield {
    /// Rejection-sampled responses (one per variant).
    pub responses: usize,
    /// Responses where some sample passed.
    pub passed: usize,
    /// Samples drawn in all, and samples that passed the check.
    pub samples: usize,
    pub samples_passed: usize,
    /// Sum over passed responses of the samples it took (mean = this / `passed`).
    pub samples_to_pass: usize,
    /// Valid training pairs (a passing response and a failing seed response).
    pub pairs_valid: usize,
}

impl FamilyYield {
    /// Adds `other`'s counts to these (the overall row).
    fn absorb(&mut self, other: &FamilyYield) {
        self.variants += other.variants;
        self.verified += other.verified;
        self.seed_response_fails += other.seed_response_fails;
        self.fgiv_a.absorb(&other.fgiv_a);
        self.fgiv_r.absorb(&other.fgiv_r);
    }
}

impl SampleYield {
    fn absorb(&mut self, other: &SampleYield) {
        self.responses += other.responses;
        self.passed += other.passed;
        self.samples += other.samples;
        self.samples_passed += other.samples_passed;
        self.samples_to_pass += other.samples_to_pass;
        self.pairs_valid += other.pairs_valid;
    }

    fn add(&mut self, samples: Option<&crate::records::Samples>) {
        let Some(s) = samples else { return };
        self.responses += 1;
        self.samples += s.passed.len();
        self.samples_passed += s.passed.iter().filter(|p| **p).count();
        if let Some(i) = s.kept {
            self.passed += 1;
            self.samples_to_pass += i + 1;
        }
    }

    /// The rates the manifest reports beside the counts.
    fn rates(&self) -> Value {
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        json!({
            "sample_pass_rate": ratio(self.samples_passed, self.samples),
            "response_pass_rate": ratio(self.passed, self.responses),
            "mean_samples_to_pass": ratio(self.samples_to_pass, self.passed),
            "pair_yield": ratio(self.pairs_valid, self.responses),
        })
    }
}

impl Counts {
    /// Counts for a build whose seed file had `unreadable` bad records; add each seed's view.
    pub fn new(unreadable: usize) -> Self {
        let mut c = Counts {
            seeds_unreadable: unreadable,
            ..Counts::default()
        };
        if unreadable > 0 {
            c.quarantined_by_reason
                .insert("read/bad_seed".into(), unreadable);
        }
        c
    }

    fn quarantined(&mut self, stage: &str, kind: &str) {
        *self
            .quarantined_by_reason
            .entry(format!("{stage}/{kind}"))
            .or_default() += 1;
    }

    /// Counts one seed and its variants.
    pub fn add(&mut self, view: &SeedView) {
        self.seeds_in += 1;
        match (&view.filter, &view.decomposition) {
            (None, _) => self.seeds_pending += 1,
            (Some(Outcome::Quarantined(q)), _) => {
                self.seeds_quarantined += 1;
                self.quarantined(FILTER.name, &q.kind);
            }
            (Some(Outcome::Done(f)), _) if !f.keep => self.seeds_filtered_out += 1,
            // Kept but not decomposed: a filter-only run, or one that was interrupted.
            (Some(Outcome::Done(_)), None) => self.seeds_pending += 1,
            (Some(Outcome::Done(_)), Some(Outcome::Quarantined(q))) => {
                self.seeds_quarantined += 1;
                self.quarantined(DECOMPOSE.name, &q.kind);
            }
            (Some(Outcome::Done(_)), Some(Outcome::Done(_))) => self.seeds_done += 1,
        }
        match &view.seed_response {
            Some(Outcome::Done(r)) if r.source == ResponseSource::Given => {
                self.seed_responses_given += 1
            }
            Some(Outcome::Done(_)) => self.seed_responses_generated += 1,
            Some(Outcome::Quarantined(q)) => {
                self.responses_quarantined += 1;
                self.quarantined(SEED_RESPONSE.name, &q.kind);
            }
            None => {}
        }
        for x in &view.variants {
            self.variants += 1;
            match &x.variant {
                None => self.variants_pending += 1,
                Some(Outcome::Quarantined(q)) => {
                    self.variants_quarantined += 1;
                    self.quarantined(VARY.name, &q.kind);
                }
                Some(Outcome::Done(var)) => {
                    if var.valid {
                        self.variants_valid += 1;
                    } else {
                        self.variants_invalid += 1;
                    }
                    self.variants_rewrite_flagged += usize::from(var.rewrite_flagged);
                }
            }
            for (direct, stage, o) in [
                (true, FGIV_A.name, &x.fgiv_a),
                (false, FGIV_R.name, &x.fgiv_r),
            ] {
                match o {
                    Some(Outcome::Done(_)) if direct => self.responses_fgiv_a += 1,
                    Some(Outcome::Done(_)) => self.responses_fgiv_r += 1,
                    Some(Outcome::Quarantined(q)) => {
                        self.responses_quarantined += 1;
                        self.quarantined(stage, &q.kind);
                    }
                    None => {}
                }
            }
            if let Some(spec) = x.valid().and_then(|v| v.constraint.as_ref()) {
                let y = self.verifiable.entry(spec.id.clone()).or_default();
                y.variants += 1;
                let done = |o: &Option<Outcome<crate::records::ResponseRecord>>| {
                    o.as_ref()
                        .and_then(Outcome::done)
                        .and_then(|r| r.samples.clone())
                };
                y.fgiv_a.add(done(&x.fgiv_a).as_ref());
                y.fgiv_r.add(done(&x.fgiv_r).as_ref());
                if let Some(Outcome::Done(d)) = &x.verdict {
                    y.verified += 1;
                    y.seed_response_fails += usize::from(!d.seed_response.satisfied);
                    y.fgiv_a.pairs_valid += usize::from(d.pair_valid_a);
                    y.fgiv_r.pairs_valid += usize::from(d.pair_valid_r);
                }
            }
            match &x.verdict {
                Some(Outcome::Done(d)) => {
                    if d.method == VerifyMethod::Code {
                        self.verified_by_code += 1;
                    } else {
                        self.verified_by_judge += 1;
                    }
                    self.pairs_valid_fgiv_a += usize::from(d.pair_valid_a);
                    self.pairs_valid_fgiv_r += usize::from(d.pair_valid_r);
                }
                Some(Outcome::Quarantined(q)) => {
                    self.verify_quarantined += 1;
                    self.quarantined(VERIFY.name, &q.kind);
                }
                None => {}
            }
        }
    }

    /// The identities the manifest promises; a broken one is a bug in the counting.
    pub fn add_up(&self) -> Result<(), String> {
        let seeds =
            self.seeds_filtered_out + self.seeds_quarantined + self.seeds_done + self.seeds_pending;
        if seeds != self.seeds_in {
            return Err(format!(
                "seeds: {} in, but {} filtered + {} quarantined + {} done + {} pending",
                self.seeds_in,
                self.seeds_filtered_out,
                self.seeds_quarantined,
                self.seeds_done,
                self.seeds_pending
            ));
        }
        let variants = self.variants_valid
            + self.variants_invalid
            + self.variants_quarantined
            + self.variants_pending;
        if variants != self.variants {
            return Err(format!(
                "variants: {} made, but {} valid + {} invalid + {} quarantined + {} pending",
                self.variants,
                self.variants_valid,
                self.variants_invalid,
                self.variants_quarantined,
                self.variants_pending
            ));
        }
        Ok(())
    }
}

/// What one command adds to the manifest besides the run's state.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The command line, as typed.
    pub command: Vec<String>,
    pub prices: &'a PriceTable,
    /// Cache hits and misses of this process so far.
    pub cache: CacheCounts,
    /// When this command started work (none for `build` and `merge`).
    pub started: Option<Instant>,
}

/// What the run folder says about itself: its input, shard and identity.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub seeds_path: Option<String>,
    pub seeds_digest: Option<String>,
    pub shard: Option<String>,
    /// `{"options", "prompts", "models"}`, as stored when the folder was started.
    pub identity: Value,
}

/// The `manifest.json` document of a build.
pub fn document(
    report: &BuildReport,
    build: &BuildOptions,
    facts: &RunFacts,
    invocation: &Invocation,
) -> Value {
    let (usage, cost) = usage_and_cost(report, invocation.prices);
    json!({
        "tool": {"name": "demorecon", "version": env!("CARGO_PKG_VERSION")},
        "command": invocation.command,
        "input": {
            "seeds": facts.seeds_path,
            "seeds_blake3": facts.seeds_digest,
        },
        "shard": facts.shard,
        "options": facts.identity.get("options"),
        "build": build,
        "prompts": facts.identity.get("prompts"),
        "models": facts.identity.get("models"),
        "counts": report.counts,
        "verifiable_yield": verifiable_yield(&report.counts),
        "usage_by_stage": usage,
        "cost_usd": cost,
        "files": report.files,
        "this_invocation": {
            "cache_hits": invocation.cache.hits,
            "cache_misses": invocation.cache.misses,
            "seconds": invocation.started.map(|s| s.elapsed().as_secs_f64()),
        },
    })
}

/// Per constraint family, and over all of them: counts with their rates (sample pass rate,
/// response pass rate, mean samples to a pass, pair yield, seed responses that fail).
fn verifiable_yield(c: &Counts) -> Value {
    if c.verifiable.is_empty() {
        return Value::Null;
    }
    let mut total = FamilyYield::default();
    let mut families = serde_json::Map::new();
    let row = |y: &FamilyYield| {
        json!({
            "variants": y.variants,
            "verified": y.verified,
            "seed_response_fails": y.seed_response_fails,
            "seed_response_fail_rate": (y.verified > 0)
                .then(|| y.seed_response_fails as f64 / y.verified as f64),
            "fgiv_a": {"counts": y.fgiv_a, "rates": y.fgiv_a.rates()},
            "fgiv_r": {"counts": y.fgiv_r, "rates": y.fgiv_r.rates()},
        })
    };
    for (family, y) in &c.verifiable {
        families.insert(family.clone(), row(y));
        total.absorb(y);
    }
    json!({"all": row(&total), "families": families})
}

/// Calls, tokens and cost per step and model, and the total cost.
fn usage_and_cost(report: &BuildReport, prices: &PriceTable) -> (BTreeMap<String, Value>, f64) {
    let mut usage = BTreeMap::new();
    let mut total = 0.0;
    for (stage, models) in &report.usage {
        let mut per_model = serde_json::Map::new();
        for (model, u) in models {
            let cost = prices
                .price(model)
                .map_or(0.0, |p| p.cost(u.prompt_tokens, u.completion_tokens));
            total += cost;
            per_model.insert(
                model.clone(),
                json!({
                    "calls": u.calls,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "cost_usd": cost,
                }),
            );
        }
        usage.insert(stage.clone(), Value::Object(per_model));
    }
    (usage, total)
}

/// The closing table: what went in, what came out, and what it cost.
pub fn closing_table(report: &BuildReport, cache: Option<(u64, u64)>) -> String {
    let c = &report.counts;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<28} {v}\n"));
    line("seeds in", format!("{}", c.seeds_in));
    if c.seeds_unreadable > 0 {
        line("seeds unreadable", format!("{}", c.seeds_unreadable));
    }
    line("filtered out", format!("{}", c.seeds_filtered_out));
    line("decomposed", format!("{}", c.seeds_done));
    line("seeds quarantined", format!("{}", c.seeds_quarantined));
    if c.seeds_pending > 0 {
        line("seeds pending", format!("{}", c.seeds_pending));
    }
    line(
        "variants valid / invalid",
        format!(
            "{} / {} (of {}; {} flagged as rewrites)",
            c.variants_valid, c.variants_invalid, c.variants, c.variants_rewrite_flagged
        ),
    );
    line(
        "responses seed / A / R",
        format!(
            "{} ({} given) / {} / {}",
            c.seed_responses_given + c.seed_responses_generated,
            c.seed_responses_given,
            c.responses_fgiv_a,
            c.responses_fgiv_r
        ),
    );
    line(
        "verified by code / judge",
        format!("{} / {}", c.verified_by_code, c.verified_by_judge),
    );
    line(
        "pairs valid A / R",
        format!("{} / {}", c.pairs_valid_fgiv_a, c.pairs_valid_fgiv_r),
    );
    line("FGIV-Eval seeds", format!("{}", c.fgiv_eval_seeds));
    for (family, y) in &c.verifiable {
        line(
            &format!("verifiable {}", family.rsplit(':').next().unwrap_or(family)),
            format!(
                "{} variants; passed A {}/{} ({} samples), R {}/{}; seed fails {}/{}; pairs A/R {}/{}",
                y.variants,
                y.fgiv_a.passed,
                y.fgiv_a.responses,
                y.fgiv_a.samples,
                y.fgiv_r.passed,
                y.fgiv_r.responses,
                y.seed_response_fails,
                y.verified,
                y.fgiv_a.pairs_valid,
                y.fgiv_r.pairs_valid
            ),
        );
    }
    for (reason, n) in &c.quarantined_by_reason {
        line(&format!("quarantined {reason}"), format!("{n}"));
    }
    for (path, rows) in report
        .files
        .iter()
        .filter(|(p, _)| p.starts_with("datasets/"))
    {
        line(path, format!("{rows} rows"));
    }
    for (stage, models) in &report.usage {
        for (model, u) in models {
            line(
                &format!("tokens {stage}"),
                format!(
                    "{model}: {} calls, {} prompt + {} completion",
                    u.calls, u.prompt_tokens, u.completion_tokens
                ),
            );
        }
    }
    if let Some((hits, misses)) = cache {
        line("cache", format!("{hits} hits, {misses} misses"));
    }
    out
}
