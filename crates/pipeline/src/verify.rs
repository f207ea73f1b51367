//! Stage 5, verify: for each variant, does its response satisfy the modified requirement, and
//! does the seed's response violate it? A pair is valid only if both hold — then the seed's
//! response is a true hard negative. Each response is judged by
//! `demorecon_judge::requirement`: code decides when the requirement is code-checkable (counts,
//! case, commas, keywords, formats, language), the judge model otherwise. A verifiable
//! variant is always decided by its own constraint's check.

use demorecon_judge::checkable;
use demorecon_judge::requirement::{Question, by_code, by_judge};

use crate::ask::{StepFailure, failed, unit_seed};
use crate::graph::VERIFY;
use crate::records::{CallRecord, Judgement, Variant, Verdict, VerifyMethod};
use crate::runner::Cx;

async fn judged(
    cx: &Cx<'_>,
    variant: &Variant,
    which: &str,
    response: &str,
) -> Result<(Judgement, Vec<CallRecord>), StepFailure> {
    let q = Question {
        instruction: &variant.prompt,
        requirement: &variant.modified_sub_instruction,
        response,
        seed: unit_seed(&variant.variant_id, &format!("{}/{which}", VERIFY.name)),
    };
    by_judge(cx.model(VERIFY.role), cx.prompts, &q)
        .await
        .map_err(|e| failed(e, &[]))
}

pub async fn run(
    cx: &Cx<'_>,
    variant: &Variant,
    seed_response: &str,
    fgiv_a: Option<&str>,
    fgiv_r: Option<&str>,
) -> Result<Verdict, StepFailure> {
    // A verifiable variant carries its constraint; a free-form one is parsed from its words.
    let checks = match &variant.constraint {
        Some(spec) => vec![spec.check_for_step()?],
        None => checkable::checks_for(&variant.modified_sub_instruction),
    };
    let (method, seed, a, r, calls) = if !checks.is_empty() {
        (
            VerifyMethod::Code,
            by_code(&checks, seed_response),
            fgiv_a.map(|t| by_code(&checks, t)),
            fgiv_r.map(|t| by_code(&checks, t)),
            Vec::new(),
        )
    } else {
        let optional = |which: &'static str, text: Option<&str>| {
            let text = text.map(str::to_owned);
            async move {
                match text {
                    Some(t) => judged(cx, variant, which, &t).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let (seed, a, r) = futures::try_join!(
            judged(cx, variant, "seed", seed_response),
            optional("a", fgiv_a),
            optional("r", fgiv_r),
        )?;
        let mut calls = seed.1;
        let (a, r) = (
            a.map(|(j, c)| {
                calls.extend(c);
                j
            }),
            r.map(|(j, c)| {
                calls.extend(c);
                j
            }),
        );
        (VerifyMethod::Judge, seed.0, a, r, calls)
    };
    let seed_violates = !seed.satisfied;
    Ok(Verdict {
        method,
        checks: checks.iter().map(|c| c.name.clone()).collect(),
        pair_valid_a: seed_violates && a.as_ref().is_some_and(|j| j.satisfied),
        pair_valid_r: seed_violates && r.as_ref().is_some_and(|j| j.satisfied),
        seed_response: seed,
        fgiv_a: a,
        fgiv_r: r,
        calls,
    })
}
