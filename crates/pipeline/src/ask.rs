//! How a stage's model call ends for the pipeline. The asking itself (prompt rendering,
//! schema-checked JSON, one repair re-ask) is `demorecon_judge::ask`; this module turns its
//! outcome into the pipeline's two kinds of failure.
//!
//! Some failures stop the whole run because going on cannot help — the budget is spent,
//! `--offline` has no answer, the cache or the run state cannot be written, a prompt override
//! does not render — and a rerun picks up where it stopped. Everything else (HTTP errors after
//! the backend's retries, text that stays unparsable after the repair) sets that one unit
//! aside in quarantine with its reason, raw text and the calls made so far, and the run goes on.

use demorecon_data::StateError;
pub use demorecon_judge::ask::{non_blank, request, unit_seed};
use demorecon_judge::{AskError, CallRecord, PromptError};
use demorecon_llm::LlmError;

use crate::records::Quarantine;

/// An error that stops the run (it resumes on rerun).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{0}")]
    Other(String),
}

/// Why a unit did not finish.
#[derive(Debug)]
pub enum StepFailure {
    Fatal(PipelineError),
    Quarantine(Quarantine),
}

impl From<PipelineError> for StepFailure {
    fn from(e: PipelineError) -> Self {
        StepFailure::Fatal(e)
    }
}

impl From<PromptError> for StepFailure {
    fn from(e: PromptError) -> Self {
        StepFailure::Fatal(e.into())
    }
}

/// The pipeline's reading of a failed ask: stop the run, or quarantine the unit with the calls
/// it made.
pub fn failed(err: AskError, calls: &[CallRecord]) -> StepFailure {
    match err {
        AskError::Stop(e) => StepFailure::Fatal(e.into()),
        AskError::Prompt(e) => StepFailure::Fatal(e.into()),
        AskError::Failed(f) => StepFailure::Quarantine(Quarantine {
            kind: f.kind,
            reason: f.reason,
            raw: f.raw,
            calls: calls.to_vec(),
        }),
    }
}
