//! Does a response satisfy one requirement? When the requirement is code-checkable (counts,
//! case, commas, keywords, formats, language; see [`crate::checkable`]) the checks decide and
//! no model is asked; otherwise the judge model answers under the `verify.judge` prompt with a
//! short reason and a boolean. The pipeline's verify stage and FGIV-Eval's per-sub-instruction
//! verdicts both come through here, so a requirement is judged the same way wherever it
//! appears.

use std::sync::Arc;

use demorecon_llm::{ChatModel, Sampling};
use minijinja::context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ask::{AskError, CallRecord, ask_json, request};
use crate::checkable::Check;
use crate::prompts::PromptSet;

/// Whether one response satisfies one requirement, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub satisfied: bool,
    pub reason: String,
}

/// The judge's answer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[schemars(length(max = 200))]
    reason: String,
    satisfied: bool,
}

/// The verdict of code checks: satisfied when every check passes.
pub fn by_code(checks: &[Check], text: &str) -> Judgement {
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

/// One requirement to judge: the full instruction it belongs to, the requirement, the response.
pub struct Question<'a> {
    pub instruction: &'a str,
    pub requirement: &'a str,
    pub response: &'a str,
    /// The request's sampling seed (greedy decoding ignores it; a sampling judge reproduces).
    pub seed: u64,
}

/// Asks `judge` whether the response satisfies the requirement.
pub async fn by_judge(
    judge: &Arc<dyn ChatModel>,
    prompts: &PromptSet,
    q: &Question<'_>,
) -> Result<(Judgement, Vec<CallRecord>), AskError> {
    let messages = prompts.render(
        "verify",
        "judge",
        context! {
            prompt => q.instruction,
            requirement => q.requirement,
            response => q.response,
        },
    )?;
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: 160,
        seed: q.seed,
        ..Sampling::default()
    };
    let req = request(messages, sampling, prompts.version("verify"));
    let mut calls = Vec::new();
    let answer: Answer = ask_json(judge, req, "judgement", |_| Ok(()), &mut calls).await?;
    Ok((
        Judgement {
            satisfied: answer.satisfied,
            reason: answer.reason,
        },
        calls,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkable::checks_for;

    #[test]
    fn code_verdicts_name_the_failing_checks() {
        let checks = checks_for("use at most 5 words");
        assert!(!checks.is_empty());
        assert!(by_code(&checks, "one two three").satisfied);
        let j = by_code(&checks, "one two three four five six seven");
        assert!(!j.satisfied);
        assert!(
            j.reason
                .starts_with("fails length_constraints:number_words"),
            "{}",
            j.reason
        );
    }
}
