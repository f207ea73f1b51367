//! Stage 1, filter: keep a seed only if it can be answered as written — it has the details it
//! needs and does not lean on an earlier conversation. The model's yes/no and its reason are
//! kept either way.

use demorecon_data::Seed;
use demorecon_llm::Sampling;
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ask::{StepFailure, ask_json, request, unit_seed};
use crate::records::{FilterResult, stage};
use crate::runner::Cx;

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "keep": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 120}
        },
        "required": ["keep", "reason"],
        "additionalProperties": false
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    keep: bool,
    reason: String,
}

pub async fn run(cx: &Cx<'_>, seed: &Seed) -> Result<FilterResult, StepFailure> {
    let messages =
        cx.prompts
            .render("filter", "check", context! { instruction => seed.prompt() })?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 96,
        seed: unit_seed(&seed.id, stage::FILTER),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version("filter"));
    let mut calls = Vec::new();
    let answer: Answer = ask_json(
        &cx.models.generator,
        req,
        "filter",
        schema(),
        |_| Ok(()),
        &mut calls,
    )
    .await?;
    Ok(FilterResult {
        keep: answer.keep,
        reason: answer.reason,
        calls,
    })
}
