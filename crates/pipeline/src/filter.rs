//! Stage 1, filter: keep a seed only if it can be answered as written — it has the details it
//! needs and does not lean on an earlier conversation. The model's yes/no and its reason are
//! kept either way.

use demorecon_data::Seed;
use demorecon_judge::ask::ask_json;
use demorecon_llm::Sampling;
use minijinja::context;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ask::{StepFailure, failed, request, unit_seed};
use crate::graph::FILTER;
use crate::records::FilterResult;
use crate::runner::Cx;

/// The model's answer (its JSON schema is derived from this type).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub keep: bool,
    #[schemars(length(max = 120))]
    pub reason: String,
}

pub async fn run(cx: &Cx<'_>, seed: &Seed) -> Result<FilterResult, StepFailure> {
    let messages = cx.prompts.render(
        FILTER.prompt,
        "check",
        context! { instruction => seed.prompt() },
    )?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 96,
        seed: unit_seed(&seed.id, FILTER.name),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version(FILTER.prompt));
    let mut calls = Vec::new();
    let answer: Answer = ask_json(cx.model(FILTER.role), req, "filter", |_| Ok(()), &mut calls)
        .await
        .map_err(|e| failed(e, &calls))?;
    Ok(FilterResult {
        keep: answer.keep,
        reason: answer.reason,
        calls,
    })
}
