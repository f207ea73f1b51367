//! Stage 4, respond: the seed's own response (kept from the seed file unless
//! `--regenerate-seed-responses`), FGIV-A (the variant answered directly) and FGIV-R (the
//! seed's response revised only where the variant differs).

use demorecon_data::Seed;
use demorecon_llm::{FinishReason, Sampling};
use minijinja::context;

use demorecon_judge::ask::call;

use crate::ask::{StepFailure, failed, request, unit_seed};
use crate::graph::{FGIV_A, FGIV_R, SEED_RESPONSE, Typed};
use crate::records::{Quarantine, ResponseRecord, ResponseSource, Variant};
use crate::runner::Cx;

fn sampling(cx: &Cx<'_>, unit: &str, step: &str) -> Sampling {
    Sampling {
        temperature: cx.opts.response_temperature,
        top_p: 0.9,
        max_tokens: cx.opts.response_max_tokens,
        stop: Vec::new(),
        seed: unit_seed(unit, step),
    }
}

async fn generate(
    cx: &Cx<'_>,
    unit: &str,
    step: Typed<ResponseRecord>,
    template: &str,
    vars: minijinja::Value,
) -> Result<ResponseRecord, StepFailure> {
    let messages = cx.prompts.render(step.prompt, template, vars)?;
    let req = request(
        messages,
        sampling(cx, unit, step.name),
        cx.prompts.version(step.prompt),
    );
    let mut calls = Vec::new();
    let resp = call(cx.model(step.role), &req, &mut calls)
        .await
        .map_err(|e| failed(e, &calls))?;
    let text = resp.text.trim().to_owned();
    if text.is_empty() {
        return Err(StepFailure::Quarantine(Quarantine {
            kind: "empty_response".into(),
            reason: "the responder returned no text".into(),
            raw: Some(resp.text),
            calls,
        }));
    }
    Ok(ResponseRecord {
        text,
        source: ResponseSource::Generated,
        finish_reason: match resp.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
        .into(),
        calls,
    })
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
    generate(
        cx,
        &variant.variant_id,
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
    generate(
        cx,
        &variant.variant_id,
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
