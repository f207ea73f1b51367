//! Data the pipeline reads and writes: seed files in the layouts people have ([`seeds`]), the
//! record types every stage produces with their lineage ids ([`records`]), the run folder's
//! crash-safe state store ([`state`]). Atomic publishing lives in `demorecon-io`.
//!
//! Nothing here talks to a model; the pipeline crate decides what goes into the records.

pub mod records;
pub mod seeds;
pub mod state;

pub use records::{Seed, seed_id_for};
pub use seeds::{BadSeed, FieldMap, SeedError, SeedFormat, SeedSet, read_seeds};
pub use state::{RunState, StateError};
