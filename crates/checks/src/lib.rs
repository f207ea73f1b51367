//! Verifiable instruction constraints with no ML dependencies.
//!
//! The heart is [`Constraint`]: IFEval's 25 instructions, built from an instruction id and its
//! kwargs and checked against a response with the verdict Google's reference implementation
//! gives. The pieces the checks stand on are public too, because other stages (the pipeline's
//! verify step, other benchmarks) need the same semantics: [`punkt`] (NLTK's English sentence
//! splitter with its trained parameters embedded), [`treebank`] (NLTK's `word_tokenize`),
//! [`langid`] (Python langdetect's language id), [`pyjson`] (whether Python's `json.loads`
//! accepts a text), [`pystr`] (Python string and stdlib `re` class semantics), [`pyregex`]
//! (the classes of the Python `regex` module, which nltk's tokenizers use) and [`pattern`]
//! (the keyword checks' case-insensitive patterns).
//!
//! Parity is defined against Google's reference IFEval code running on nltk 3.10.4 (with
//! the `regex` module it requires) and langdetect 1.0.9, the versions
//! `scripts/bench-ifeval.sh` installs.

pub mod followbench;
mod fxhash;
pub mod ifeval;
pub mod langid;
pub mod pattern;
pub mod punkt;
pub mod pyjson;
pub mod pyregex;
pub mod pystr;
mod strtable;
pub mod treebank;

pub use ifeval::{CheckError, Constraint, IFEVAL_IDS, Relation};
