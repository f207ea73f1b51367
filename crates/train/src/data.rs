//! Training data: TRL's JSONL formats read and tokenized through the model's own chat
//! template, with a label mask that marks the assistant tokens the loss is taken on.
//!
//! Preference rows (`--dpo`) are TRL's conversational form — `prompt`, `chosen`, `rejected`,
//! each a list of `{role, content}` messages — or its standard form with plain strings (a
//! string prompt is a user turn, a string answer an assistant turn), or the implicit-prompt
//! form where `chosen`/`rejected` are whole conversations. SFT rows (`--sft`) are `messages`
//! lists (every assistant turn is trained on) or `prompt`/`completion` pairs. KTO rows
//! (`--kto`) are TRL's unpaired form — `prompt`, `completion` and a boolean `label`
//! (desirable or not); in a KTO mode, preference pairs are unpaired into one desirable and
//! one undesirable row, as TRL and `demorecon export` do.
//!
//! KTO's reference point compares each prompt with another example's completion. Each
//! unpaired row gets a fixed partner — the next row (cyclically) with a different prompt —
//! and its mismatched sequence is tokenized here once, so its reference log-probability can
//! be cached like every other.
//!
//! Each assistant turn is found by rendering the conversation up to it with and without the
//! generation prompt, so the labels are exactly the tokens the template puts after
//! `<|im_start|>assistant\n`: the content, `<|im_end|>` and the newline after it, as TRL labels
//! them. Pieces are tokenized separately at those boundaries, which sit on special tokens.

use crate::loss::Mode;
use anyhow::Context as _;
use candle_core::quantized::gguf_file;
use demorecon_gguf::template::ChatTemplate;
use demorecon_gguf::tokenizer::{GgufTokenizer, meta_str};
use demorecon_llm::{Message, Role};
use serde_json::Value;
use std::path::Path;

/// A tokenized conversation and which of its tokens are trained on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sequence {
    pub ids: Vec<u32>,
    /// `labels[t]`: token `t` is an assistant token the loss covers.
    pub labels: Vec<bool>,
}

impl Sequence {
    pub fn labelled(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }

    /// Drops tokens past `max_len`; returns how many were cut.
    fn truncate(&mut self, max_len: usize) -> usize {
        let cut = self.ids.len().saturating_sub(max_len);
        self.ids.truncate(max_len);
        self.labels.truncate(max_len);
        cut
    }
}

/// One training row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// A preference pair sharing one prompt.
    Pair {
        chosen: Sequence,
        rejected: Sequence,
    },
    /// A demonstration, trained with NLL alone.
    Sft(Sequence),
    /// One response, desirable or not (KTO), with the mismatched sequence (this prompt,
    /// another row's completion) that its reference point is estimated on.
    Kto {
        seq: Sequence,
        kl: Sequence,
        desirable: bool,
    },
}

impl Example {
    /// Tokens in the row (both sequences of a pair).
    pub fn tokens(&self) -> usize {
        match self {
            Example::Pair { chosen, rejected } => chosen.ids.len() + rejected.ids.len(),
            Example::Sft(seq) => seq.ids.len(),
            Example::Kto { seq, .. } => seq.ids.len(),
        }
    }

    /// The sequences whose reference log-probabilities the loss needs, in the order
    /// [`crate::trainer::References`] holds them.
    pub fn reference_sequences(&self) -> Option<[&Sequence; 2]> {
        match self {
            Example::Pair { chosen, rejected } => Some([chosen, rejected]),
            Example::Kto { seq, kl, .. } => Some([seq, kl]),
            Example::Sft(_) => None,
        }
    }
}

/// What `--max-length` cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncationReport {
    pub sequences_truncated: usize,
    pub tokens_cut: usize,
    /// Rows dropped because nothing trainable was left after the cut.
    pub rows_dropped: usize,
}

/// The tokenizer and chat template of a GGUF.
pub struct ChatEncoder {
    pub tokenizer: GgufTokenizer,
    template: ChatTemplate,
}

impl ChatEncoder {
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let source = meta_str(content, "tokenizer.chat_template")
            .ok_or_else(|| anyhow::anyhow!("the GGUF carries no tokenizer.chat_template"))?;
        let tokenizer = GgufTokenizer::from_gguf(content)?;
        let name = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_name(id))
                .unwrap_or_default()
                .to_string()
        };
        let template = ChatTemplate::new(source, &name(tokenizer.bos_id), &name(tokenizer.eos_id))?;
        Ok(Self {
            tokenizer,
            template,
        })
    }

    /// Tokenizes `messages`, labelling the assistant turns from index `first_trained` on.
    pub fn encode(&self, messages: &[Message], first_trained: usize) -> anyhow::Result<Sequence> {
        let render = |upto: usize, gen_prompt: bool| -> anyhow::Result<String> {
            self.template
                .render_with(&messages[..upto], gen_prompt)
                .map_err(|e| anyhow::anyhow!("the chat template rejected the messages: {e:#}"))
        };
        let mut pieces: Vec<(String, bool)> = Vec::new();
        let mut done = String::new();
        let mut push = |text: &str, labelled: bool, done: &mut String| -> anyhow::Result<()> {
            let Some(rest) = text.strip_prefix(done.as_str()) else {
                anyhow::bail!("the chat template does not render conversations incrementally");
            };
            if !rest.is_empty() {
                pieces.push((rest.to_string(), labelled));
            }
            *done = text.to_string();
            Ok(())
        };
        for (i, message) in messages.iter().enumerate() {
            if message.role == Role::Assistant && i >= first_trained {
                push(&render(i, true)?, false, &mut done)?;
                push(&render(i + 1, false)?, true, &mut done)?;
            }
        }
        push(&render(messages.len(), false)?, false, &mut done)?;
        let mut seq = Sequence::default();
        if self.tokenizer.add_bos
            && let Some(bos) = self.tokenizer.bos_id
        {
            seq.ids.push(bos);
            seq.labels.push(false);
        }
        for (text, labelled) in pieces {
            let ids = self.tokenizer.encode(&text)?;
            if seq.ids.is_empty() && ids.first() == self.tokenizer.bos_id.as_ref() {
                seq.labels.pop();
                seq.ids.pop();
            }
            seq.labels.extend(std::iter::repeat_n(labelled, ids.len()));
            seq.ids.extend(ids);
        }
        Ok(seq)
    }
}

/// A row as read from JSONL, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum RawRow {
    Pair {
        prompt: Vec<Message>,
        chosen: Vec<Message>,
        rejected: Vec<Message>,
    },
    Sft {
        messages: Vec<Message>,
        /// Assistant turns before this index are context, not trained on.
        first_trained: usize,
    },
    /// A KTO row: one completion, desirable or not.
    Unpaired {
        prompt: Vec<Message>,
        completion: Vec<Message>,
        desirable: bool,
    },
}

fn messages(value: &Value, default_role: Role, field: &str) -> anyhow::Result<Vec<Message>> {
    match value {
        Value::String(text) => Ok(vec![Message {
            role: default_role,
            content: text.clone(),
        }]),
        Value::Array(_) => serde_json::from_value(value.clone())
            .with_context(|| format!("`{field}` is not a list of {{role, content}} messages")),
        _ => anyhow::bail!("`{field}` must be a string or a list of messages"),
    }
}

/// Parses one preference row.
pub fn parse_pair(value: &Value) -> anyhow::Result<RawRow> {
    let field = |name: &str| {
        value
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("missing `{name}`"))
    };
    let mut chosen = messages(field("chosen")?, Role::Assistant, "chosen")?;
    let mut rejected = messages(field("rejected")?, Role::Assistant, "rejected")?;
    let prompt = match value.get("prompt") {
        Some(prompt) => messages(prompt, Role::User, "prompt")?,
        None => {
            // Implicit prompt: the messages both conversations share.
            let shared = chosen
                .iter()
                .zip(&rejected)
                .take_while(|(c, r)| c == r)
                .count();
            let prompt = chosen[..shared].to_vec();
            chosen.drain(..shared);
            rejected.drain(..shared);
            prompt
        }
    };
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    for (name, answer) in [("chosen", &chosen), ("rejected", &rejected)] {
        if !answer.iter().any(|m| m.role == Role::Assistant) {
            anyhow::bail!("`{name}` has no assistant message");
        }
    }
    Ok(RawRow::Pair {
        prompt,
        chosen,
        rejected,
    })
}

/// Parses one SFT row.
pub fn parse_sft(value: &Value) -> anyhow::Result<RawRow> {
    let (messages, first_trained) = if let Some(list) = value.get("messages") {
        (messages(list, Role::User, "messages")?, 0)
    } else {
        let prompt = messages(
            value
                .get("prompt")
                .ok_or_else(|| anyhow::anyhow!("needs `messages` or `prompt` + `completion`"))?,
            Role::User,
            "prompt",
        )?;
        let completion = messages(
            value
                .get("completion")
                .ok_or_else(|| anyhow::anyhow!("missing `completion`"))?,
            Role::Assistant,
            "completion",
        )?;
        let first = prompt.len();
        ([prompt, completion].concat(), first)
    };
    if !messages[first_trained..]
        .iter()
        .any(|m| m.role == Role::Assistant)
    {
        anyhow::bail!("no assistant message to train on");
    }
    Ok(RawRow::Sft {
        messages,
        first_trained,
    })
}

/// Parses one KTO row (TRL's unpaired preference form).
pub fn parse_kto(value: &Value) -> anyhow::Result<RawRow> {
    let field = |name: &str| {
        value
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("missing `{name}`"))
    };
    let prompt = messages(field("prompt")?, Role::User, "prompt")?;
    let completion = messages(field("completion")?, Role::Assistant, "completion")?;
    let desirable = field("label")?
        .as_bool()
        .ok_or_else(|| anyhow::anyhow!("`label` must be true (desirable) or false"))?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if !completion.iter().any(|m| m.role == Role::Assistant) {
        anyhow::bail!("`completion` has no assistant message");
    }
    Ok(RawRow::Unpaired {
        prompt,
        completion,
        desirable,
    })
}

/// Reads a JSONL file with `parse` per non-empty line; errors name the file and line.
pub fn read_jsonl(
    path: &Path,
    parse: fn(&Value) -> anyhow::Result<RawRow>,
) -> anyhow::Result<Vec<RawRow>> {
    demorecon_io::read_jsonl_values(path)?
        .into_iter()
        .map(|(line, v)| parse(&v).with_context(|| format!("{}:{line}", path.display())))
        .collect()
}

/// Tokenizes rows for `mode` and applies `--max-length` (tokens past it are dropped from the
/// end). In SFT mode pairs contribute their chosen conversation as an SFT row; in the KTO
/// modes pairs are unpaired (see the module docs).
pub fn tokenize(
    encoder: &ChatEncoder,
    rows: &[RawRow],
    max_len: usize,
    mode: Mode,
) -> anyhow::Result<(Vec<Example>, TruncationReport)> {
    let mut report = TruncationReport::default();
    let mut out = Vec::with_capacity(rows.len());
    let fit = |mut seq: Sequence, report: &mut TruncationReport| {
        let cut = seq.truncate(max_len);
        if cut > 0 {
            report.sequences_truncated += 1;
            report.tokens_cut += cut;
        }
        seq
    };
    let encode = |prompt: &[Message], answer: &[Message]| {
        encoder.encode(&[prompt, answer].concat(), prompt.len())
    };
    // KTO rows wait until all are known: each needs another row's completion. Pairs unpair
    // as TRL does, every chosen row before every rejected one, so each row's partner is
    // another prompt's answer of the same kind.
    let mut unpaired: Vec<(&[Message], &[Message], bool)> = Vec::new();
    let mut later_rows: Vec<(&[Message], &[Message], bool)> = Vec::new();
    for row in rows {
        let example = match row {
            RawRow::Pair {
                prompt,
                chosen,
                rejected,
            } if mode.uses_kto() => {
                unpaired.push((prompt, chosen, true));
                later_rows.push((prompt, rejected, false));
                continue;
            }
            RawRow::Unpaired {
                prompt,
                completion,
                desirable,
            } => {
                if !mode.uses_kto() {
                    anyhow::bail!(
                        "KTO rows (prompt, completion, label) train with --mode kto or sft+kto, not {}",
                        mode.as_str()
                    );
                }
                later_rows.push((prompt, completion, *desirable));
                continue;
            }
            RawRow::Pair {
                prompt,
                chosen,
                rejected,
            } => {
                let c = fit(encode(prompt, chosen)?, &mut report);
                if mode == Mode::Sft {
                    Example::Sft(c)
                } else {
                    Example::Pair {
                        chosen: c,
                        rejected: fit(encode(prompt, rejected)?, &mut report),
                    }
                }
            }
            RawRow::Sft {
                messages,
                first_trained,
            } => Example::Sft(fit(encoder.encode(messages, *first_trained)?, &mut report)),
        };
        push_trainable(&mut out, example, &mut report);
    }
    unpaired.append(&mut later_rows);
    if !unpaired.is_empty() {
        if unpaired.len() < 2 {
            anyhow::bail!(
                "KTO needs at least two rows: its reference point pairs each prompt with another row's completion"
            );
        }
        let n = unpaired.len();
        for (i, &(prompt, completion, desirable)) in unpaired.iter().enumerate() {
            let partner = (1..n)
                .map(|k| (i + k) % n)
                .find(|&j| unpaired[j].0 != prompt)
                .unwrap_or((i + 1) % n);
            let example = Example::Kto {
                seq: fit(encode(prompt, completion)?, &mut report),
                kl: fit(encode(prompt, unpaired[partner].1)?, &mut report),
                desirable,
            };
            push_trainable(&mut out, example, &mut report);
        }
    }
    Ok((out, report))
}

/// Keeps `example` if every sequence of it still has a token to train on after the cut.
fn push_trainable(out: &mut Vec<Example>, example: Example, report: &mut TruncationReport) {
    let trainable = match &example {
        Example::Pair { chosen, rejected } => chosen.labelled() > 0 && rejected.labelled() > 0,
        Example::Sft(seq) => seq.labelled() > 0,
        Example::Kto { seq, kl, .. } => seq.labelled() > 0 && kl.labelled() > 0,
    };
    if trainable {
        out.push(example);
    } else {
        report.rows_dropped += 1;
    }
}
