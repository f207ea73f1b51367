//! The DeMoRecon pipeline: seeds → filter → decompose → vary → respond (FGIV-A and FGIV-R) →
//! verify → datasets.
//!
//! Each stage is a module that turns one unit (a seed or a variant) into one record: it renders
//! the stage's prompt from `demorecon_judge`'s prompt set, asks the role's model through
//! `demorecon_judge::ask` (a JSON schema where structure is needed, strict parsing, one repair
//! re-ask), and [`ask`] turns a failure into quarantine or a run-stopping error. [`runner`]
//! streams every seed through the stages concurrently and records each finished unit in the
//! run's state store at once, which is what makes a killed run resume without repeating a
//! call. [`build`] turns the store into the data files (in input order, so outputs are
//! byte-stable) and [`manifest`] counts what happened. [`verifiable`] makes the variants whose
//! modified requirement code decides (`--variant-kinds`); `respond` rejection-samples them.
//!
//! [`graph`] declares the stages and steps once (unit, role, prompt, record, file); everything
//! above reads it. [`run_folder`] is a run folder's lifecycle — ingest, identity checks,
//! execute, publish, merge of [`shard`]s — so commands only parse and dispatch.

pub mod ask;
pub mod build;
pub mod decompose;
pub mod edit;
pub mod filter;
pub mod graph;
pub mod manifest;
pub mod records;
pub mod respond;
pub mod run_folder;
pub mod runner;
pub mod shard;
pub mod vary;
pub mod verifiable;
pub mod verify;

pub use demorecon_judge::PromptSet;
pub use graph::{GRAPH, Stage};
pub use run_folder::{FolderError, RunFolder};
pub use runner::{Models, Options};
pub use shard::{Shard, ShardSpec};
