//! The seed record and its lineage id. Later records (decompositions, variants, responses,
//! verdicts) are the pipeline's own types; they all carry the `seed_id` defined here, and
//! variants carry `variant_id = {seed_id}/v{k}`.

use serde::{Deserialize, Serialize};

/// One complex instruction to build variants from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// From the input (`id`, `idx`, or the `--field id=` key), else [`seed_id_for`].
    pub id: String,
    pub instruction: String,
    /// Alpaca's optional `input` (context the instruction refers to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A response the seed file already carries (Alpaca `output`, a ShareGPT gpt turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// 1-based line of the record in its file, for messages.
    pub line: usize,
}

impl Seed {
    /// The text a model is asked: the instruction, then the input if there is one.
    pub fn prompt(&self) -> String {
        match self.input.as_deref().map(str::trim) {
            Some(input) if !input.is_empty() => format!("{}\n\n{}", self.instruction, input),
            _ => self.instruction.clone(),
        }
    }
}

/// A stable id for a seed that has none: `s-` and 12 hex digits of the instruction's blake3.
pub fn seed_id_for(instruction: &str) -> String {
    let hash = blake3::hash(instruction.as_bytes()).to_hex();
    format!("s-{}", &hash[..12])
}

/// The variant id for sub-instruction `k` (0-based) of a seed.
pub fn variant_id(seed_id: &str, k: usize) -> String {
    format!("{seed_id}/v{k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_joins_a_nonblank_input() {
        let mut s = Seed {
            id: "a".into(),
            instruction: "Summarise.".into(),
            input: Some("  ".into()),
            response: None,
            line: 1,
        };
        assert_eq!(s.prompt(), "Summarise.");
        s.input = Some("Text here.".into());
        assert_eq!(s.prompt(), "Summarise.\n\nText here.");
    }

    #[test]
    fn generated_ids_are_stable_and_distinct() {
        assert_eq!(seed_id_for("x"), seed_id_for("x"));
        assert_ne!(seed_id_for("x"), seed_id_for("y"));
        assert_eq!(seed_id_for("x").len(), 14);
        assert_eq!(variant_id("s-1", 2), "s-1/v2");
    }
}
