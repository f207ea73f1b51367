//! Asking models for judgements and structured answers, shared by the pipeline and the
//! benchmarks so that neither copies the other.
//!
//! [`prompts`] holds every prompt file (pipeline stages and benchmark judges) behind one
//! [`PromptSet`]; [`ask`] sends a request through any `ChatModel`, asks for JSON under a schema
//! derived from the answer type, validates the reply on our side, parses it strictly and
//! re-asks once to repair; [`requirement`] decides whether a response satisfies one
//! requirement, by code when [`checkable`] can map the requirement to IFEval-style checks and
//! by the judge model otherwise. Nothing here knows about run folders or benchmark files.

pub mod ask;
pub mod checkable;
pub mod prompts;
pub mod requirement;

pub use ask::{AskError, CallRecord, Failure};
pub use prompts::{PromptError, PromptSet};
pub use requirement::Judgement;
