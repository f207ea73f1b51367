//! The export's own view of a run's training data: preference pairs and SFT rows as read back
//! from the run folder's published datasets, with the messages typed. Every trainer format is
//! written from these; nothing here knows a trainer, a file layout or how a row was made.

use serde::{Deserialize, Serialize};

/// One chat message, as every trainer we write for spells it (`role`, `content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: &str) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: &str) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// Which of the paper's two response sets a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fgiv {
    /// FGIV-A: the variant answered directly.
    A,
    /// FGIV-R: the seed's response revised for the variant.
    R,
}

impl Fgiv {
    pub const BOTH: [Fgiv; 2] = [Fgiv::A, Fgiv::R];

    /// The tag used in file names and the `fgiv` column: `fgiv_a`, `fgiv_r`.
    pub fn tag(self) -> &'static str {
        match self {
            Fgiv::A => "fgiv_a",
            Fgiv::R => "fgiv_r",
        }
    }
}

/// A preference pair: the variant's prompt, its verified response (chosen) and the seed's
/// response (rejected — the hard negative).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub fgiv: Fgiv,
    pub seed_id: String,
    pub variant_id: String,
    /// The conversation before the answer (a single user turn in today's runs).
    pub prompt: Vec<Message>,
    pub chosen: Message,
    pub rejected: Message,
    pub edit_kind: Option<String>,
    pub modified_sub_instruction: Option<String>,
}

/// An SFT conversation ending in the assistant turn to learn.
#[derive(Debug, Clone, PartialEq)]
pub struct SftRow {
    pub fgiv: Fgiv,
    pub seed_id: String,
    /// `None` for the seed's own prompt and response.
    pub variant_id: Option<String>,
    pub messages: Vec<Message>,
}

/// A KTO example: one response with a desirable/undesirable label.
#[derive(Debug, Clone, PartialEq)]
pub struct KtoRow<'p> {
    pub pair: &'p Pair,
    pub completion: &'p Message,
    pub desirable: bool,
}

/// The unpaired form of a pair: the verified response desirable, then the seed's response
/// undesirable for the same (variant) prompt.
pub fn kto_rows(pair: &Pair) -> [KtoRow<'_>; 2] {
    [
        KtoRow {
            pair,
            completion: &pair.chosen,
            desirable: true,
        },
        KtoRow {
            pair,
            completion: &pair.rejected,
            desirable: false,
        },
    ]
}

/// The three mixes every format is written in: FGIV-A alone, FGIV-R alone, and both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Only(Fgiv),
    Mixed,
}

impl Mix {
    pub const ALL: [Mix; 3] = [Mix::Only(Fgiv::A), Mix::Only(Fgiv::R), Mix::Mixed];

    pub fn tag(self) -> &'static str {
        match self {
            Mix::Only(f) => f.tag(),
            Mix::Mixed => "mixed",
        }
    }

    pub fn pairs(self, pairs: &[Pair]) -> Vec<&Pair> {
        pairs.iter().filter(|p| self.takes(p.fgiv)).collect()
    }

    /// SFT rows of this mix. The seed's own row appears in both of the run's SFT files; the
    /// mix keeps it once.
    pub fn sft(self, rows: &[SftRow]) -> Vec<&SftRow> {
        rows.iter()
            .filter(|r| match self {
                Mix::Only(f) => r.fgiv == f,
                Mix::Mixed => r.fgiv == Fgiv::A || r.variant_id.is_some(),
            })
            .collect()
    }

    fn takes(self, fgiv: Fgiv) -> bool {
        match self {
            Mix::Only(f) => f == fgiv,
            Mix::Mixed => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(fgiv: Fgiv) -> Pair {
        Pair {
            fgiv,
            seed_id: "s".into(),
            variant_id: "s/v0".into(),
            prompt: vec![Message::user("p")],
            chosen: Message::assistant("good"),
            rejected: Message::assistant("seed"),
            edit_kind: None,
            modified_sub_instruction: None,
        }
    }

    #[test]
    fn kto_labels_the_verified_response_desirable_and_the_seed_response_not() {
        let p = pair(Fgiv::A);
        let [good, bad] = kto_rows(&p);
        assert!(good.desirable && good.completion.content == "good");
        assert!(!bad.desirable && bad.completion.content == "seed");
    }

    #[test]
    fn mixes_split_and_join_and_keep_the_seed_row_once() {
        let pairs = [pair(Fgiv::A), pair(Fgiv::R)];
        assert_eq!(Mix::Only(Fgiv::R).pairs(&pairs).len(), 1);
        assert_eq!(Mix::Mixed.pairs(&pairs).len(), 2);
        let row = |fgiv, variant: Option<&str>| SftRow {
            fgiv,
            seed_id: "s".into(),
            variant_id: variant.map(str::to_owned),
            messages: vec![],
        };
        let sft = [
            row(Fgiv::A, None),
            row(Fgiv::A, Some("s/v0")),
            row(Fgiv::R, None),
            row(Fgiv::R, Some("s/v0")),
        ];
        assert_eq!(Mix::Only(Fgiv::A).sft(&sft).len(), 2);
        assert_eq!(Mix::Mixed.sft(&sft).len(), 3);
    }
}
