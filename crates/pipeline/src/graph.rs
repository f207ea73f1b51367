//! The pipeline's graph, declared once: the stages a command can run through and the steps
//! each stage makes, with the unit a step works on (a seed or a variant), the role whose model
//! answers it, its prompt file, the record it stores and the file its rows are published to.
//!
//! Everything that names a step reads [`GRAPH`]: the runner (state keys, progress bars, how
//! far a command goes), `build` (which file a record goes to and how its row is keyed), the
//! manifest's counts and usage (quarantine reasons, tokens per step), the run folder's
//! identity (which prompt files matter) and the one-stage commands (`filter` … `verify`). It is
//! not where the work is done: each step's logic stays in its own module (`filter.rs`, …), and
//! the order of work within a seed is the runner's.

use std::marker::PhantomData;
use std::ops::Deref;

use serde::Serialize;

use crate::records::{Decomposition, FilterResult, ResponseRecord, Variant, Verdict};

/// How far a command takes each seed. Stages are ordered; a later one includes the earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Filter,
    Decompose,
    Vary,
    Respond,
    Verify,
}

/// What one result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Keyed by `seed_id`.
    Seed,
    /// Keyed by `variant_id` (`{seed_id}/v{k}`).
    Variant,
}

/// Whose model answers a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Generator,
    Responder,
    /// Asked only where no code check decides.
    Judge,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Generator, Role::Responder, Role::Judge];

    pub fn name(self) -> &'static str {
        match self {
            Role::Generator => "generator",
            Role::Responder => "responder",
            Role::Judge => "judge",
        }
    }
}

/// A command of the pipeline: `demorecon {command}` runs every step up to and including its
/// stage's.
#[derive(Debug)]
pub struct StageDecl {
    pub stage: Stage,
    pub command: &'static str,
    /// The command's one-line help.
    pub about: &'static str,
}

/// One kind of result the pipeline makes and stores.
#[derive(Debug)]
pub struct Step {
    /// Its key in the state store, in token usage and in quarantine rows (`stage`); also part
    /// of each request's sampling seed, so it never changes.
    pub name: &'static str,
    /// The command that first makes it.
    pub stage: Stage,
    pub unit: Unit,
    pub role: Role,
    /// Its prompt file (`prompts/{prompt}.toml`), part of the run folder's identity.
    pub prompt: &'static str,
    /// The record type stored for a unit (see [`Typed`]).
    pub record: &'static str,
    /// The run-folder file its rows are published to.
    pub file: &'static str,
    /// The column that leads each row: `seed_id`, `variant_id` or `unit`.
    pub key: &'static str,
    /// The `kind` column, for files that hold several steps' rows.
    pub kind: Option<&'static str>,
}

/// The stages and steps of the pipeline, in the order a seed meets them.
#[derive(Debug)]
pub struct Graph {
    pub stages: [StageDecl; 5],
    pub steps: [Step; 7],
}

/// The pipeline, declared once.
pub static GRAPH: Graph = Graph {
    stages: [
        StageDecl {
            stage: Stage::Filter,
            command: "filter",
            about: "Stage 1 over a run folder: keep seeds that can be answered as written",
        },
        StageDecl {
            stage: Stage::Decompose,
            command: "decompose",
            about: "Through stage 2: facts and sub-instructions of each seed",
        },
        StageDecl {
            stage: Stage::Vary,
            command: "vary",
            about: "Through stage 3: one minimally edited variant per sub-instruction",
        },
        StageDecl {
            stage: Stage::Respond,
            command: "respond",
            about: "Through stage 4: seed responses, FGIV-A and FGIV-R",
        },
        StageDecl {
            stage: Stage::Verify,
            command: "verify",
            about: "Through stage 5: check each pair (code checks, else the judge)",
        },
    ],
    steps: [
        Step {
            name: "filter",
            stage: Stage::Filter,
            unit: Unit::Seed,
            role: Role::Generator,
            prompt: "filter",
            record: "FilterResult",
            file: "filter.jsonl",
            key: "seed_id",
            kind: None,
        },
        Step {
            name: "decompose",
            stage: Stage::Decompose,
            unit: Unit::Seed,
            role: Role::Generator,
            prompt: "decompose",
            record: "Decomposition",
            file: "decompositions.jsonl",
            key: "seed_id",
            kind: None,
        },
        Step {
            name: "vary",
            stage: Stage::Vary,
            unit: Unit::Variant,
            role: Role::Generator,
            prompt: "vary",
            record: "Variant",
            file: "variants.jsonl",
            key: "variant_id",
            kind: None,
        },
        Step {
            name: "respond_seed",
            stage: Stage::Respond,
            unit: Unit::Seed,
            role: Role::Responder,
            prompt: "respond",
            record: "ResponseRecord",
            file: "responses.jsonl",
            key: "unit",
            kind: Some("seed"),
        },
        Step {
            name: "respond_a",
            stage: Stage::Respond,
            unit: Unit::Variant,
            role: Role::Responder,
            prompt: "respond",
            record: "ResponseRecord",
            file: "responses.jsonl",
            key: "unit",
            kind: Some("fgiv_a"),
        },
        Step {
            name: "respond_r",
            stage: Stage::Respond,
            unit: Unit::Variant,
            role: Role::Responder,
            prompt: "respond",
            record: "ResponseRecord",
            file: "responses.jsonl",
            key: "unit",
            kind: Some("fgiv_r"),
        },
        Step {
            name: "verify",
            stage: Stage::Verify,
            unit: Unit::Variant,
            role: Role::Judge,
            prompt: "verify",
            record: "Verdict",
            file: "verdicts.jsonl",
            key: "variant_id",
            kind: None,
        },
    ],
};

/// A step of [`GRAPH`] together with the type of the record it stores, so reading and writing
/// a result is checked by the compiler.
pub struct Typed<T> {
    index: usize,
    marker: PhantomData<fn() -> T>,
}

impl<T> Typed<T> {
    const fn at(index: usize) -> Self {
        Self {
            index,
            marker: PhantomData,
        }
    }
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Typed<T> {}

impl<T> Deref for Typed<T> {
    type Target = Step;
    fn deref(&self) -> &Step {
        &GRAPH.steps[self.index]
    }
}

pub const FILTER: Typed<FilterResult> = Typed::at(0);
pub const DECOMPOSE: Typed<Decomposition> = Typed::at(1);
pub const VARY: Typed<Variant> = Typed::at(2);
pub const SEED_RESPONSE: Typed<ResponseRecord> = Typed::at(3);
pub const FGIV_A: Typed<ResponseRecord> = Typed::at(4);
pub const FGIV_R: Typed<ResponseRecord> = Typed::at(5);
pub const VERIFY: Typed<Verdict> = Typed::at(6);

impl Stage {
    pub fn decl(self) -> &'static StageDecl {
        GRAPH
            .stages
            .iter()
            .find(|d| d.stage == self)
            .expect("every stage is declared")
    }

    /// The command's name, also how the stage is shown.
    pub fn name(self) -> &'static str {
        self.decl().command
    }

    /// The stage of command `name`.
    pub fn from_command(name: &str) -> Option<Stage> {
        GRAPH
            .stages
            .iter()
            .find(|d| d.command == name)
            .map(|d| d.stage)
    }

    /// The steps this stage makes.
    pub fn steps(self) -> impl Iterator<Item = &'static Step> {
        GRAPH.steps.iter().filter(move |s| s.stage == self)
    }
}

/// The prompt files the pipeline renders, each once, in graph order.
pub fn prompt_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for step in &GRAPH.steps {
        if !files.contains(&step.prompt) {
            files.push(step.prompt);
        }
    }
    files
}

/// The run-folder files the steps publish to, each once, in graph order.
pub fn step_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for step in &GRAPH.steps {
        if !files.contains(&step.file) {
            files.push(step.file);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of<T>(_: Typed<T>) -> &'static str {
        let full = std::any::type_name::<T>();
        full.rsplit("::").next().unwrap_or(full)
    }

    #[test]
    fn typed_handles_match_the_declaration() {
        let handles = [
            (FILTER.name, FILTER.record, record_of(FILTER)),
            (DECOMPOSE.name, DECOMPOSE.record, record_of(DECOMPOSE)),
            (VARY.name, VARY.record, record_of(VARY)),
            (
                SEED_RESPONSE.name,
                SEED_RESPONSE.record,
                record_of(SEED_RESPONSE),
            ),
            (FGIV_A.name, FGIV_A.record, record_of(FGIV_A)),
            (FGIV_R.name, FGIV_R.record, record_of(FGIV_R)),
            (VERIFY.name, VERIFY.record, record_of(VERIFY)),
        ];
        assert_eq!(handles.len(), GRAPH.steps.len());
        for ((name, declared, typed), step) in handles.iter().zip(&GRAPH.steps) {
            assert_eq!(*name, step.name);
            assert_eq!(declared, typed, "{name}");
        }
    }

    #[test]
    fn stages_are_ordered_and_each_makes_a_step() {
        assert!(Stage::Filter < Stage::Decompose && Stage::Respond < Stage::Verify);
        for (i, d) in GRAPH.stages.iter().enumerate() {
            assert!(d.stage.steps().count() >= 1, "{}", d.command);
            assert_eq!(Stage::from_command(d.command), Some(d.stage));
            assert!(GRAPH.stages[..i].iter().all(|e| e.stage < d.stage));
        }
        let names: std::collections::HashSet<_> = GRAPH.steps.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), GRAPH.steps.len(), "step names are unique");
        assert!(GRAPH.steps.windows(2).all(|w| w[0].stage <= w[1].stage));
    }

    #[test]
    fn prompt_files_are_the_judge_crates_pipeline_files() {
        assert_eq!(
            prompt_files(),
            demorecon_judge::prompts::PIPELINE_FILES.to_vec()
        );
    }
}
