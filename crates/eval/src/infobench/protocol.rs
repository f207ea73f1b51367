//! The InFoBench judge conversation and how its replies are read, as the reference
//! evaluation does it.
//!
//! One conversation per instruction. The first user turn is the judge preamble with the input
//! (left out when empty), the generated text and the first question
//! (`prompts/infobench.toml`, `[judge]`); every later user turn is just the next question,
//! after the judge's previous reply appended as an assistant turn. Each turn is its own
//! request (so each is cached on its own), greedy, with a small token cap. A reply that is
//! neither yes nor no ([`parse_reply`]) is recorded as `None` and ends the conversation: the
//! remaining questions of that instruction are not asked.
//!
//! Not here: what the verdicts add up to ([`super::score`]).

use demorecon_judge::ask::unit_seed;
use demorecon_judge::{PromptError, PromptSet};
use demorecon_llm::{ChatRequest, Message, Sampling};
use minijinja::context;

use super::{Item, NAME};
use crate::bench::{BenchError, Judge};

/// Default new-token cap of one judge reply: room for "YES" or "NO" and a short reason.
pub const JUDGE_MAX_TOKENS: u32 = 64;

/// Reads one judge reply, in the reference's order: lowercased, it starts with "yes" → yes;
/// starts with "no" → no (so "Not …" and "None …" are no); otherwise "YES" occurring without
/// "NO" → yes, "NO" occurring without "YES" → no (case-sensitive substrings, and "NOT"
/// contains "NO"); anything else → `None`. Leading whitespace is not skipped, as in the
/// reference.
pub fn parse_reply(reply: &str) -> Option<bool> {
    let lower = reply.to_lowercase();
    if lower.starts_with("yes") {
        return Some(true);
    }
    if lower.starts_with("no") {
        return Some(false);
    }
    match (reply.contains("YES"), reply.contains("NO")) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// The messages of the first turn: the preamble, the input when non-empty, the generated text
/// and the first question.
pub fn first_turn(
    prompts: &PromptSet,
    input: &str,
    output: &str,
    question: &str,
) -> Result<Vec<Message>, PromptError> {
    prompts.render(
        NAME,
        "judge",
        context! { input => input, output => output, question => question },
    )
}

/// Asks `judge` the item's questions in order about `response`. Returns the verdict of each
/// question asked (`None` for the reply that stopped the conversation) and every raw reply.
pub async fn converse(
    prompts: &PromptSet,
    judge: &Judge,
    item: &Item,
    response: &str,
    max_tokens: u32,
) -> Result<(Vec<Option<bool>>, Vec<String>), BenchError> {
    let mut verdicts = Vec::with_capacity(item.decomposed_questions.len());
    let mut raw = Vec::with_capacity(item.decomposed_questions.len());
    let mut messages = Vec::new();
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens,
        seed: unit_seed(&item.id, "infobench/judge"),
        ..Sampling::default()
    };
    let version = prompts.version(NAME).to_owned();
    for (i, question) in item.decomposed_questions.iter().enumerate() {
        if i == 0 {
            messages = first_turn(prompts, &item.input, response, question)
                .map_err(|e| BenchError::Input(e.to_string()))?;
        } else {
            messages.push(Message::user(question.clone()));
        }
        let mut req = ChatRequest::new(messages.clone());
        req.sampling = sampling.clone();
        req.prompt_version = Some(version.clone());
        let reply = judge.ask(&req).await.map_err(|source| BenchError::Call {
            what: "judge",
            id: item.id.clone(),
            source,
        })?;
        let verdict = parse_reply(&reply);
        messages.push(Message::assistant(reply.clone()));
        raw.push(reply);
        verdicts.push(verdict);
        if verdict.is_none() {
            break;
        }
    }
    Ok((verdicts, raw))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::infobench::tests::item;
    use demorecon_llm::Role;
    use std::sync::Arc;

    #[test]
    fn replies_parse_like_the_reference() {
        for (reply, want) in [
            ("Yes.", Some(true)),
            ("YES", Some(true)),
            ("yes, every sentence does", Some(true)),
            ("no", Some(false)),
            ("No. The second sentence is not.", Some(false)),
            ("Not really", Some(false)),
            ("None of the sentences does", Some(false)),
            ("The answer is YES", Some(true)),
            ("The answer is YES, although it is NOT perfect", None),
            ("NO, because the text is too long", Some(false)),
            ("The answer is NOT clear", Some(false)),
            // Starts with "yes" once lowercased: the first rule decides before the substrings.
            ("YES and NO", Some(true)),
            ("Partly YES and partly NO", None),
            ("maybe", None),
            ("The answer is yes", None),
            (" Yes", None),
            ("", None),
        ] {
            assert_eq!(parse_reply(reply), want, "{reply:?}");
        }
    }

    pub(crate) use demorecon_testkit::scripted::Scripted;

    fn judge_of(model: &Arc<Scripted>, prompts: &PromptSet) -> Judge {
        Judge::new(model.clone(), None, prompts.version(NAME))
    }

    #[tokio::test]
    async fn one_question_per_turn_with_the_history() {
        let prompts = PromptSet::builtin();
        let model = Scripted::new(&["YES", "No, it is long.", "yes"]);
        let judge = judge_of(&model, &prompts);
        let it = item(
            "user_oriented_task_9",
            "The input text.",
            &[
                ("Is it a title?", &["Format"]),
                ("Is it short?", &["Number"]),
                ("Is it catchy?", &["Style"]),
            ],
        );
        let (verdicts, raw) = converse(&prompts, &judge, &it, "A Title", 64)
            .await
            .unwrap();
        assert_eq!(verdicts, vec![Some(true), Some(false), Some(true)]);
        assert_eq!(raw, vec!["YES", "No, it is long.", "yes"]);

        let seen = model.seen();
        assert_eq!(seen.len(), 3);
        let first = &seen[0].messages;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].role, Role::User);
        let text = &first[0].content;
        assert!(text.contains("YES"), "the preamble: {text}");
        assert!(
            text.ends_with(
                "Input:\n\"The input text.\"\n\nGenerated Text:\n\"A Title\"\n\nQuestion:\nIs it a title?"
            ),
            "{text}"
        );
        let second = &seen[1].messages;
        assert_eq!(second.len(), 3);
        assert_eq!(second[0], first[0]);
        assert_eq!(second[1], Message::assistant("YES"));
        assert_eq!(second[2], Message::user("Is it short?"));
        let third = &seen[2].messages;
        assert_eq!(&third[..3], &second[..]);
        assert_eq!(third[3], Message::assistant("No, it is long."));
        assert_eq!(third[4], Message::user("Is it catchy?"));
        for req in seen.iter() {
            assert_eq!(req.sampling.temperature, 0.0);
            assert_eq!(req.sampling.max_tokens, 64);
            assert_eq!(req.sampling.seed, seen[0].sampling.seed);
            assert_eq!(req.prompt_version.as_deref(), Some(prompts.version(NAME)));
            assert!(
                req.prompt_version
                    .as_deref()
                    .unwrap()
                    .starts_with("infobench/1+")
            );
        }
        assert_eq!(judge.info().reported.as_deref(), Some("judge-1"));
    }

    #[tokio::test]
    async fn an_unparseable_reply_stops_the_instruction() {
        let prompts = PromptSet::builtin();
        let model = Scripted::new(&["Yes", "It depends.", "Yes"]);
        let judge = judge_of(&model, &prompts);
        let it = item(
            "user_oriented_task_3",
            "",
            &[
                ("Q1?", &["Content"]),
                ("Q2?", &["Content"]),
                ("Q3?", &["Format"]),
            ],
        );
        let (verdicts, raw) = converse(&prompts, &judge, &it, "out", 64).await.unwrap();
        assert_eq!(verdicts, vec![Some(true), None]);
        assert_eq!(raw, vec!["Yes", "It depends."]);
        assert_eq!(model.seen().len(), 2);
    }

    #[tokio::test]
    async fn an_empty_input_is_left_out() {
        let prompts = PromptSet::builtin();
        let model = Scripted::new(&["NO"]);
        let judge = judge_of(&model, &prompts);
        let it = item("user_oriented_task_4", "", &[("Q1?", &["Content"])]);
        converse(&prompts, &judge, &it, "the output", 64)
            .await
            .unwrap();
        let seen = model.seen();
        let text = &seen[0].messages[0].content;
        assert!(!text.contains("Input:\n"), "{text}");
        assert!(
            text.ends_with("\n\nGenerated Text:\n\"the output\"\n\nQuestion:\nQ1?"),
            "{text}"
        );
        let with_input = first_turn(&prompts, "x", "the output", "Q1?").unwrap();
        let preamble = text.split("\n\nGenerated Text:").next().unwrap();
        assert_eq!(
            with_input[0].content,
            format!(
                "{preamble}\n\nInput:\n\"x\"\n\nGenerated Text:\n\"the output\"\n\nQuestion:\nQ1?"
            )
        );
    }

    #[tokio::test]
    async fn a_failed_call_names_the_item() {
        let prompts = PromptSet::builtin();
        let model = Scripted::new(&["Yes"]);
        let judge = judge_of(&model, &prompts);
        let it = item(
            "user_oriented_task_5",
            "",
            &[("Q1?", &["Content"]), ("Q2?", &["Content"])],
        );
        let err = converse(&prompts, &judge, &it, "out", 64)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("user_oriented_task_5"), "{err}");
    }
}
