//! What each step stores for a unit. Seed-level steps are keyed by `seed_id`, variant-level
//! ones by `variant_id` (`{seed_id}/v{k}`); which step stores which record is declared in
//! [`crate::graph`]. Every record lists the calls that made it (cache key, model, tokens), so
//! any output row can be traced to its seed and its calls.

use serde::{Deserialize, Serialize};

pub use crate::verifiable::ConstraintSpec;

pub use demorecon_judge::{CallRecord, Judgement};

/// A unit's result: done, or set aside with the reason and the text that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<T> {
    Done(T),
    Quarantined(Quarantine),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// A short category for counting: `llm_error`, `unparsable`, `too_few_sub_instructions`, ...
    pub kind: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default)]
    pub calls: Vec<CallRecord>,
}

impl<T> Outcome<T> {
    pub fn done(&self) -> Option<&T> {
        match self {
            Outcome::Done(t) => Some(t),
            Outcome::Quarantined(_) => None,
        }
    }
}

/// A record that lists the calls that made it.
pub trait Calls {
    fn calls(&self) -> &[CallRecord];
}

impl<T: Calls> Outcome<T> {
    /// The calls behind this outcome, done or quarantined.
    pub fn calls(&self) -> &[CallRecord] {
        match self {
            Outcome::Done(t) => t.calls(),
            Outcome::Quarantined(q) => &q.calls,
        }
    }
}

macro_rules! calls {
    ($($t:ty),*) => {$(
        impl Calls for $t {
            fn calls(&self) -> &[CallRecord] {
                &self.calls
            }
        }
    )*};
}

calls!(
    FilterResult,
    Decomposition,
    Variant,
    ResponseRecord,
    Verdict
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterResult {
    pub keep: bool,
    pub reason: String,
    pub calls: Vec<CallRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decomposition {
    pub facts: Vec<String>,
    pub sub_instructions: Vec<String>,
    pub calls: Vec<CallRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditKind {
    Contradict,
    Parallel,
    /// A requirement added beside the seed's own (verifiable variants).
    Add,
}

/// A seed with one sub-instruction modified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub variant_id: String,
    pub seed_id: String,
    /// Index of the modified sub-instruction (0-based).
    pub k: usize,
    pub original_sub_instruction: String,
    pub modified_sub_instruction: String,
    pub edit_kind: EditKind,
    /// The seed's words that were replaced, and what replaced them.
    pub find: String,
    pub replace: String,
    /// The reconstructed instruction (empty when the edit could not be applied).
    pub prompt: String,
    pub valid: bool,
    pub reason: String,
    /// Token-level edit distance to the seed over the seed's length.
    pub edit_ratio: f64,
    /// The edit is past `--max-edit-ratio`: more of a rewrite than a minimal edit.
    pub rewrite_flagged: bool,
    /// The code-checkable constraint of a verifiable variant (`{seed_id}/c{k}`); none for the
    /// paper's free-form variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<ConstraintSpec>,
    pub calls: Vec<CallRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseSource {
    /// Came with the seed file.
    Given,
    Generated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub text: String,
    pub source: ResponseSource,
    /// `length` when the model ran out of tokens.
    pub finish_reason: String,
    /// Rejection sampling against a verifiable variant's constraint: what was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
    pub calls: Vec<CallRecord>,
}

/// The draws of a rejection-sampled response: one verdict of the constraint's check per
/// sample, in order, stopping at the first that passed. `text` is that sample's, or the
/// first sample's when none passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    pub passed: Vec<bool>,
    /// Index of the kept sample, when one passed.
    pub kept: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    /// Decided by code checks (IFEval-style constraints); no judge call.
    Code,
    Judge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub method: VerifyMethod,
    /// The code checks that decided, when `method` is `code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// The seed's response against the modified requirement (a valid pair needs `false`).
    pub seed_response: Judgement,
    pub fgiv_a: Option<Judgement>,
    pub fgiv_r: Option<Judgement>,
    pub pair_valid_a: bool,
    pub pair_valid_r: bool,
    pub calls: Vec<CallRecord>,
}
