//! Benchmarks and their metrics, all on one shape ([`bench`]): load items → generate through
//! any [`demorecon_llm::ChatModel`] → score (rules, code checks, or a judge) → summarize →
//! write an eval folder ([`record`]).
//!
//! [`ifeval`] scores Google's IFEval exactly as the reference implementation does (strict and
//! loose, prompt and instruction level, per-tier breakdowns), lints its prompt data and
//! fetches the official prompt file when asked.

pub mod bench;
pub mod fgiv;
pub mod followbench;
pub mod ifeval;
pub mod infobench;
pub mod record;
