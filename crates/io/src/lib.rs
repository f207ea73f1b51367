//! File plumbing that every crate of the workspace shares, said once: [`atomic`] publishes a
//! whole file (bytes, a writer callback, or JSONL row by row) so readers and killed writers
//! never see a torn file, and [`jsonl`] reads JSON Lines with errors that name the file and
//! the line. Nothing here knows about records, models or benchmarks.

pub mod atomic;
pub mod jsonl;

pub use atomic::{AtomicJsonl, write_atomic, write_atomic_with, write_json_pretty};
pub use jsonl::{JsonlError, read_jsonl, read_jsonl_values};
