//! Stage 5, verify: for each variant, does its response satisfy the modified requirement, and
//! does the seed's response violate it? A pair is valid only if both hold — then the seed's
//! response is a true hard negative. When the requirement is code-checkable (counts, case,
//! commas, keywords, formats, language; see [`crate::checkable`]) the checks decide and the
//! judge is not asked.

use std::sync::Arc;

use demorecon_llm::{ChatModel, Sampling};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ask::{StepFailure, ask_json, request, unit_seed};
use crate::checkable::{self, Check};
use crate::records::{CallRecord, Judgement, Variant, Verdict, VerifyMethod, stage};
use crate::runner::Cx;

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": 200},
            "satisfied": {"type": "boolean"}
        },
        "required": ["reason", "satisfied"],
        "additionalProperties": false
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    reason: String,
    satisfied: bool,
}

fn by_code(checks: &[Check], text: &str) -> Judgement {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.check(text))
        .map(|c| c.name.as_str())
        .collect();
    Judgement {
        satisfied: failed.is_empty(),
        reason: if failed.is_empty() {
            "passes every code check".into()
        } else {
            format!("fails {}", failed.join(", "))
        },
    }
}

async fn by_judge(
    cx: &Cx<'_>,
    judge: &Arc<dyn ChatModel>,
    variant: &Variant,
    which: &str,
    response: &str,
) -> Result<(Judgement, Vec<CallRecord>), StepFailure> {
    let messages = cx.prompts.render(
        "verify",
        "judge",
        context! {
            prompt => variant.prompt.clone(),
            requirement => variant.modified_sub_instruction.clone(),
            response => response,
        },
    )?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 160,
        seed: unit_seed(&variant.variant_id, &format!("{}/{which}", stage::VERIFY)),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version("verify"));
    let mut calls = Vec::new();
    let answer: Answer =
        ask_json(judge, req, "judgement", schema(), |_| Ok(()), &mut calls).await?;
    Ok((
        Judgement {
            satisfied: answer.satisfied,
            reason: answer.reason,
        },
        calls,
    ))
}

pub async fn run(
    cx: &Cx<'_>,
    variant: &Variant,
    seed_response: &str,
    fgiv_a: Option<&str>,
    fgiv_r: Option<&str>,
) -> Result<Verdict, StepFailure> {
    let checks = checkable::checks_for(&variant.modified_sub_instruction);
    let (method, seed, a, r, calls) = if !checks.is_empty() {
        (
            VerifyMethod::Code,
            by_code(&checks, seed_response),
            fgiv_a.map(|t| by_code(&checks, t)),
            fgiv_r.map(|t| by_code(&checks, t)),
            Vec::new(),
        )
    } else {
        let judge = &cx.models.judge;
        let optional = |which: &'static str, text: Option<&str>| {
            let text = text.map(str::to_owned);
            async move {
                match text {
                    Some(t) => by_judge(cx, judge, variant, which, &t).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let (seed, a, r) = futures::try_join!(
            by_judge(cx, judge, variant, "seed", seed_response),
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
