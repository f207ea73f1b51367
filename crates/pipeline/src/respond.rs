//! Stage 4, respond: the seed's own response (kept from the seed file unless
//! `--regenerate-seed-responses`), FGIV-A (the variant answered directly) and FGIV-R (the
//! seed's response revised only where the variant differs).
//!
//! A verifiable variant's responses are rejection-sampled: up to `--samples K` draws at
//! `--sample-temperature`, each with its own seed (`{step}/{i}` of the unit), checked against
//! the variant's constraint in order; the first that passes is kept. When none passes, the
//! first draw is kept and the record says so, so the pair is counted as failed rather than
//! dropped.

use demorecon_data::Seed;
use demorecon_llm::{FinishReason, Sampling};
use minijinja::context;

use demorecon_judge::ask::call;

use crate::ask::{StepFailure, failed, request, unit_seed};
use crate::graph::{FGIV_A, FGIV_R, SEED_RESPONSE, Typed};
use crate::records::{Quarantine, ResponseRecord, ResponseSource, Samples, Variant};
use crate::runner::Cx;

/// One response: sampled at `temperature` with the seed of `(unit, seed_step)`.
async fn generate_once(
    cx: &Cx<'_>,
    unit: &str,
    step: Typed<ResponseRecord>,
    messages: Vec<demorecon_llm::Message>,
    temperature: f32,
    seed_step: &str,
    calls: &mut Vec<demorecon_judge::CallRecord>,
) -> Result<(String, &'static str), StepFailure> {
    let sampling = Sampling {
        temperature,
        top_p: 0.9,
        max_tokens: cx.opts.response_max_tokens,
        stop: Vec::new(),
        seed: unit_seed(unit, seed_step),
    };
    let req = request(messages, sampling, cx.prompts.version(step.prompt));
    let resp = call(cx.model(step.role), &req, calls)
        .await
        .map_err(|e| failed(e, calls))?;
    let finish = match resp.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    };
    Ok((resp.text, finish))
}

async fn generate(
    cx: &Cx<'_>,
    unit: &str,
    step: Typed<ResponseRecord>,
    template: &str,
    vars: minijinja::Value,
) -> Result<ResponseRecord, StepFailure> {
    let messages = cx.prompts.render(step.prompt, template, vars)?;
    let mut calls = Vec::new();
    let (raw, finish) = generate_once(
        cx,
        unit,
        step,
        messages,
        cx.opts.response_temperature,
        step.name,
        &mut calls,
    )
    .await?;
    let text = raw.trim().to_owned();
    if text.is_empty() {
        return Err(StepFailure::Quarantine(Quarantine {
            kind: "empty_response".into(),
            reason: "the responder returned no text".into(),
            raw: Some(raw),
            calls,
        }));
    }
    Ok(ResponseRecord {
        text,
        source: ResponseSource::Generated,
        finish_reason: finish.into(),
        samples: None,
        calls,
    })
}

/// Rejection sampling for a verifiable variant: draws until one passes `check` or
/// `--samples` are spent. An empty draw counts as a failing one.
async fn sample_until_pass(
    cx: &Cx<'_>,
    variant: &Variant,
    step: Typed<ResponseRecord>,
    template: &str,
    vars: minijinja::Value,
    check: &demorecon_judge::checkable::Check,
) -> Result<ResponseRecord, StepFailure> {
    let messages = cx.prompts.render(step.prompt, template, vars)?;
    let mut calls = Vec::new();
    let mut passed = Vec::new();
    let mut first: Option<(String, &'static str)> = None;
    for i in 0..cx.opts.samples.max(1) {
        let (raw, finish) = generate_once(
            cx,
            &variant.variant_id,
            step,
            messages.clone(),
            cx.opts.sample_temperature,
            &format!("{}/{i}", step.name),
            &mut calls,
        )
        .await?;
        let text = raw.trim().to_owned();
        let ok = !text.is_empty() && check.check(&text);
        passed.push(ok);
        if ok {
            return Ok(ResponseRecord {
                text,
                source: ResponseSource::Generated,
                finish_reason: finish.into(),
                samples: Some(Samples {
                    passed,
                    kept: Some(i as usize),
                }),
                calls,
            });
        }
        first.get_or_insert((text, finish));
    }
    let (text, finish) = first.expect("at least one sample is drawn");
    Ok(ResponseRecord {
        text,
        source: ResponseSource::Generated,
        finish_reason: finish.into(),
        samples: Some(Samples { passed, kept: None }),
        calls,
    })
}

/// Answers with `template`: rejection-sampled against the variant's constraint when it has
/// one, one draw otherwise.
async fn respond_to(
    cx: &Cx<'_>,
    variant: &Variant,
    step: Typed<ResponseRecord>,
    template: &str,
    vars: minijinja::Value,
) -> Result<ResponseRecord, StepFailure> {
    match &variant.constraint {
        Some(spec) => {
            let check = spec.check_for_step()?;
            sample_until_pass(cx, variant, step, template, vars, &check).await
        }
        None => generate(cx, &variant.variant_id, step, template, vars).await,
    }
}

pub async fn seed(cx: &Cx<'_>, seed: &Seed) -> Result<ResponseRecord, StepFailure> {
    if let Some(given) = seed
        .response
        .as_ref()
        .filter(|_| !cx.opts.regenerate_seed_responses)
    {
        return Ok(ResponseRecord {
            text: given.clone(),
            source: ResponseSource::Given,
            finish_reason: "given".into(),
            samples: None,
            calls: Vec::new(),
        });
    }
    generate(
        cx,
        &seed.id,
        SEED_RESPONSE,
        "answer",
        context! { prompt => seed.prompt() },
    )
    .await
}

pub async fn fgiv_a(cx: &Cx<'_>, variant: &Variant) -> Result<ResponseRecord, StepFailure> {
    respond_to(
        cx,
        variant,
        FGIV_A,
        "answer",
        context! { prompt => variant.prompt.clone() },
    )
    .await
}

pub async fn fgiv_r(
    cx: &Cx<'_>,
    seed: &Seed,
    seed_response: &ResponseRecord,
    variant: &Variant,
) -> Result<ResponseRecord, StepFailure> {
    respond_to(
        cx,
        variant,
        FGIV_R,
        "revise",
        context! {
            seed => seed.prompt(),
            seed_response => seed_response.text.clone(),
            original => variant.original_sub_instruction.clone(),
            modified => variant.modified_sub_instruction.clone(),
            variant => variant.prompt.clone(),
        },
    )
    .await
}
