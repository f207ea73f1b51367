//! Counting what a run did, and saying so: the manifest's `counts` (which add up — every seed
//! is filtered out, quarantined, done or still pending; every variant valid, invalid,
//! quarantined or pending) and the closing table a run prints.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::build::{BuildReport, SeedView};
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
}

impl Counts {
    pub fn of(
        views: &[SeedView],
        unreadable: usize,
        eval_ids: &HashSet<String>,
        _files: &BTreeMap<String, usize>,
    ) -> Self {
        let mut c = Counts {
            seeds_in: views.len(),
            seeds_unreadable: unreadable,
            fgiv_eval_seeds: eval_ids.len(),
            ..Counts::default()
        };
        if unreadable > 0 {
            c.quarantined_by_reason
                .insert("read/bad_seed".into(), unreadable);
        }
        let mut reason = |stage: &str, kind: &str| {
            *c.quarantined_by_reason
                .entry(format!("{stage}/{kind}"))
                .or_default() += 1;
        };
        let (mut filtered, mut quarantined, mut done, mut pending) = (0, 0, 0, 0);
        let mut v = [0usize; 5];
        let mut r = [0usize; 5];
        let mut verify = [0usize; 5];
        for view in views {
            match (&view.filter, &view.decomposition) {
                (None, _) => pending += 1,
                (Some(Outcome::Quarantined(q)), _) => {
                    quarantined += 1;
                    reason("filter", &q.kind);
                }
                (Some(Outcome::Done(f)), _) if !f.keep => filtered += 1,
                // Kept but not decomposed: a filter-only run, or one that was interrupted.
                (Some(Outcome::Done(_)), None) => pending += 1,
                (Some(Outcome::Done(_)), Some(Outcome::Quarantined(q))) => {
                    quarantined += 1;
                    reason("decompose", &q.kind);
                }
                (Some(Outcome::Done(_)), Some(Outcome::Done(_))) => done += 1,
            }
            match &view.seed_response {
                Some(Outcome::Done(resp)) if resp.source == ResponseSource::Given => r[0] += 1,
                Some(Outcome::Done(_)) => r[1] += 1,
                Some(Outcome::Quarantined(q)) => {
                    r[4] += 1;
                    reason("respond_seed", &q.kind);
                }
                None => {}
            }
            for x in &view.variants {
                v[0] += 1;
                match &x.variant {
                    None => v[4] += 1,
                    Some(Outcome::Quarantined(q)) => {
                        v[3] += 1;
                        reason("vary", &q.kind);
                    }
                    Some(Outcome::Done(var)) => {
                        if var.valid {
                            v[1] += 1;
                        } else {
                            v[2] += 1;
                        }
                        if var.rewrite_flagged {
                            c.variants_rewrite_flagged += 1;
                        }
                    }
                }
                for (slot, stage, o) in [(2, "respond_a", &x.fgiv_a), (3, "respond_r", &x.fgiv_r)] {
                    match o {
                        Some(Outcome::Done(_)) => r[slot] += 1,
                        Some(Outcome::Quarantined(q)) => {
                            r[4] += 1;
                            reason(stage, &q.kind);
                        }
                        None => {}
                    }
                }
                match &x.verdict {
                    Some(Outcome::Done(d)) => {
                        if d.method == VerifyMethod::Code {
                            verify[0] += 1;
                        } else {
                            verify[1] += 1;
                        }
                        verify[3] += usize::from(d.pair_valid_a);
                        verify[4] += usize::from(d.pair_valid_r);
                    }
                    Some(Outcome::Quarantined(q)) => {
                        verify[2] += 1;
                        reason("verify", &q.kind);
                    }
                    None => {}
                }
            }
        }
        c.seeds_filtered_out = filtered;
        c.seeds_quarantined = quarantined;
        c.seeds_done = done;
        c.seeds_pending = pending;
        [
            c.variants,
            c.variants_valid,
            c.variants_invalid,
            c.variants_quarantined,
            c.variants_pending,
        ] = v;
        [
            c.seed_responses_given,
            c.seed_responses_generated,
            c.responses_fgiv_a,
            c.responses_fgiv_r,
            c.responses_quarantined,
        ] = r;
        [
            c.verified_by_code,
            c.verified_by_judge,
            c.verify_quarantined,
            c.pairs_valid_fgiv_a,
            c.pairs_valid_fgiv_r,
        ] = verify;
        c
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
