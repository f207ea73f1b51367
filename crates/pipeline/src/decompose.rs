//! Stage 2, decompose: split a seed into facts (background) and sub-instructions (each a
//! separate requirement). A seed with fewer than two sub-instructions cannot yield a variant
//! that differs in one requirement from something else, so it goes to quarantine.

use demorecon_data::Seed;
use demorecon_judge::ask::ask_json;
use demorecon_llm::Sampling;
use minijinja::context;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ask::{StepFailure, failed, non_blank, request, unit_seed};
use crate::graph::DECOMPOSE;
use crate::records::{Decomposition, Quarantine};
use crate::runner::Cx;

/// At most this many sub-instructions are kept (and so variants made) per seed.
pub const MAX_SUB_INSTRUCTIONS: usize = 8;

/// The model's answer (its JSON schema is derived from this type).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[schemars(length(max = 10), inner(length(min = 1, max = 300)))]
    pub facts: Vec<String>,
    #[schemars(length(max = MAX_SUB_INSTRUCTIONS), inner(length(min = 1, max = 200)))]
    pub sub_instructions: Vec<String>,
}

pub async fn run(cx: &Cx<'_>, seed: &Seed) -> Result<Decomposition, StepFailure> {
    let messages = cx.prompts.render(
        DECOMPOSE.prompt,
        "split",
        context! { instruction => seed.prompt() },
    )?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 512,
        seed: unit_seed(&seed.id, DECOMPOSE.name),
        ..Sampling::default()
    };
    let req = request(messages, sampling, cx.prompts.version(DECOMPOSE.prompt));
    let mut calls = Vec::new();
    let answer: Answer = ask_json(
        cx.model(DECOMPOSE.role),
        req,
        "decomposition",
        |a: &Answer| {
            non_blank(&a.sub_instructions, "sub_instructions")?;
            if a.sub_instructions.len() > MAX_SUB_INSTRUCTIONS {
                return Err(format!(
                    "{} sub_instructions; at most {MAX_SUB_INSTRUCTIONS}",
                    a.sub_instructions.len()
                ));
            }
            Ok(())
        },
        &mut calls,
    )
    .await
    .map_err(|e| failed(e, &calls))?;
    // Exact repeats are one requirement, not two.
    let mut subs: Vec<String> = Vec::new();
    for s in answer.sub_instructions {
        let s = s.trim().to_owned();
        if !subs.iter().any(|t| t.eq_ignore_ascii_case(&s)) {
            subs.push(s);
        }
    }
    if subs.len() < 2 {
        return Err(StepFailure::Quarantine(Quarantine {
            kind: "too_few_sub_instructions".into(),
            reason: format!(
                "{} distinct sub-instruction(s); a seed needs at least 2 to make variants",
                subs.len()
            ),
            raw: Some(serde_json::to_string(&subs).expect("strings serialise")),
            calls,
        }));
    }
    Ok(Decomposition {
        facts: answer
            .facts
            .into_iter()
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect(),
        sub_instructions: subs,
        calls,
    })
}
