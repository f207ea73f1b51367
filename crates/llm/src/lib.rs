//! The language-model layer every DeMoRecon stage, judge and evaluation stands on.
//!
//! One trait, [`ChatModel`], with plain request/response types; backends implement it
//! (the OpenAI-compatible client here, the embedded candle model in `demorecon-embedded`),
//! and wrappers add behaviour by implementing it again around an inner model: the
//! content-addressed [`cache`], the token/cost [`ledger`] and [`single_flight`]; [`batch`] writes calls to batch
//! files instead of sending them and imports the answers. [`roles`] turns flags, env and a
//! TOML file into one configured model per role.

pub mod batch;
pub mod cache;
pub mod home;
pub mod ledger;
pub mod openai;
pub mod roles;
pub mod single_flight;
mod types;

pub use types::*;
