//! The DeMoRecon pipeline: seeds → filter → decompose → vary → respond (FGIV-A and FGIV-R) →
//! verify → datasets.
//!
//! Each stage is a module that turns one unit (a seed or a variant) into one record, through
//! [`ask`], which renders the stage's prompt ([`prompts`]), calls the role's model under a JSON
//! schema where structure is needed, parses strictly and re-asks once to repair. [`runner`]
//! streams every seed through the stages concurrently and records each finished unit in the
//! run's state store at once, which is what makes a killed run resume without repeating a
//! call. [`build`] turns the store into the data files (in input order, so outputs are
//! byte-stable) and [`manifest`] counts what happened.

pub mod ask;
pub mod build;
pub mod checkable;
pub mod decompose;
pub mod edit;
pub mod filter;
pub mod manifest;
pub mod prompts;
pub mod records;
pub mod respond;
pub mod runner;
pub mod vary;
pub mod verify;

pub use prompts::PromptSet;
pub use runner::{Models, Options, Stage};
