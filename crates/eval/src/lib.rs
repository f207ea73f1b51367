//! Benchmarks, metrics and reports.
//!
//! [`ifeval`] scores responses on Google's IFEval exactly as the reference implementation
//! does (strict and loose, prompt and instruction level, per-tier breakdowns), lints its
//! prompt data, fetches the official prompt file when asked, and generates responses through
//! any [`demorecon_llm::ChatModel`].

pub mod ifeval;
