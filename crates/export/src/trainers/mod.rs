//! The four trainers we export for, and what an export folder holds for one of them: data
//! files (rows already in that trainer's own shape), its configs, and the card's "how to
//! train" section. Each trainer's module says how its rows and configs are spelled and which
//! release the key names were checked against; this module holds what they share.
//!
//! Writing the folder (JSONL, Parquet twins, the card) is [`crate::write_folder`]'s job.

pub mod axolotl;
pub mod llama_factory;
pub mod openrlhf;
pub mod trl;

use serde_json::{Value, json};

use crate::rows::{Fgiv, KtoRow, Message, Mix, Pair, SftRow};
use crate::run::RunData;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trainer {
    Trl,
    LlamaFactory,
    Axolotl,
    OpenRlhf,
}

impl Trainer {
    pub const ALL: [Trainer; 4] = [
        Trainer::Trl,
        Trainer::LlamaFactory,
        Trainer::Axolotl,
        Trainer::OpenRlhf,
    ];

    /// The name on the command line and of the folder under `--to all`.
    pub fn name(self) -> &'static str {
        match self {
            Trainer::Trl => "trl",
            Trainer::LlamaFactory => "llama-factory",
            Trainer::Axolotl => "axolotl",
            Trainer::OpenRlhf => "openrlhf",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Trainer::Trl => "TRL",
            Trainer::LlamaFactory => "LLaMA-Factory",
            Trainer::Axolotl => "axolotl",
            Trainer::OpenRlhf => "OpenRLHF",
        }
    }

    /// Parses `trl`, `llama-factory`, `axolotl`, `openrlhf`, `all`, or a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Trainer>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().replace('_', "-").as_str() {
                "all" => out.extend(Trainer::ALL),
                "trl" => out.push(Trainer::Trl),
                "llama-factory" | "llamafactory" => out.push(Trainer::LlamaFactory),
                "axolotl" => out.push(Trainer::Axolotl),
                "openrlhf" => out.push(Trainer::OpenRlhf),
                other => {
                    return Err(format!(
                        "unknown trainer `{other}` (trl, llama-factory, axolotl, openrlhf, all)"
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(
                "name at least one trainer (trl, llama-factory, axolotl, openrlhf, all)".into(),
            );
        }
        Ok(out)
    }

    pub fn folder(self, run: &RunData, opts: &TrainOptions) -> Folder {
        match self {
            Trainer::Trl => trl::folder(run, opts),
            Trainer::LlamaFactory => llama_factory::folder(run, opts),
            Trainer::Axolotl => axolotl::folder(run, opts),
            Trainer::OpenRlhf => openrlhf::folder(run, opts),
        }
    }
}

/// What the training configs say, from the export's flags.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Our `demorecon train --sft-weight`: DPO + w × the mean per-token NLL of the chosen
    /// responses.
    pub sft_weight: f64,
    /// DPO β.
    pub beta: f64,
    /// The model the configs train (a Hugging Face id or a local folder).
    pub model: String,
    /// LLaMA-Factory's chat template name for that model.
    pub template: String,
}

/// What the rows of a data file are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sft,
    Dpo,
    Kto,
    Eval,
}

impl Kind {
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Sft => "sft",
            Kind::Dpo => "dpo",
            Kind::Kto => "kto",
            Kind::Eval => "fgiv_eval",
        }
    }
}

/// One data file of an export folder (written as `{stem}.jsonl` and `{stem}.parquet`).
#[derive(Debug, Clone)]
pub struct DataFile {
    pub stem: String,
    pub kind: Kind,
    pub mix: Option<Mix>,
    pub rows: Vec<Value>,
}

/// Everything one trainer's folder holds besides the card's common parts.
#[derive(Debug, Clone)]
pub struct Folder {
    pub trainer: Trainer,
    pub data: Vec<DataFile>,
    /// Config files: name and text.
    pub configs: Vec<(String, String)>,
    /// Markdown for the card: the commands to train on this folder.
    pub how_to_train: String,
}

pub(crate) fn messages(list: &[Message]) -> Value {
    serde_json::to_value(list).expect("messages serialise")
}

pub(crate) fn message(m: &Message) -> Value {
    serde_json::to_value(m).expect("messages serialise")
}

/// Columns every row carries back to the run: seed, variant and response set.
pub(crate) fn lineage(row: &mut Value, seed_id: &str, variant_id: Option<&str>, fgiv: Fgiv) {
    row["seed_id"] = json!(seed_id);
    row["variant_id"] = json!(variant_id);
    row["fgiv"] = json!(fgiv.tag());
}

pub(crate) fn pair_lineage(row: &mut Value, p: &Pair) {
    lineage(row, &p.seed_id, Some(&p.variant_id), p.fgiv);
    row["edit_kind"] = json!(p.edit_kind);
    row["modified_sub_instruction"] = json!(p.modified_sub_instruction);
}

/// One data file per mix of `kind`, rows made by `row`.
pub(crate) fn per_mix<T>(
    kind: Kind,
    select: impl Fn(Mix) -> Vec<T>,
    row: impl Fn(T) -> Value,
) -> Vec<DataFile> {
    Mix::ALL
        .iter()
        .map(|&mix| DataFile {
            stem: format!("{}_{}", kind.tag(), mix.tag()),
            kind,
            mix: Some(mix),
            rows: select(mix).into_iter().map(&row).collect(),
        })
        .collect()
}

pub(crate) fn sft_files(run: &RunData, row: impl Fn(&SftRow) -> Value) -> Vec<DataFile> {
    per_mix(Kind::Sft, |m| m.sft(&run.sft), row)
}

pub(crate) fn dpo_files(run: &RunData, row: impl Fn(&Pair) -> Value) -> Vec<DataFile> {
    per_mix(Kind::Dpo, |m| m.pairs(&run.pairs), row)
}

pub(crate) fn kto_files(run: &RunData, row: impl Fn(&KtoRow<'_>) -> Value) -> Vec<DataFile> {
    per_mix(
        Kind::Kto,
        |m| {
            m.pairs(&run.pairs)
                .into_iter()
                .flat_map(crate::rows::kto_rows)
                .collect::<Vec<_>>()
        },
        |k| row(&k),
    )
}

pub(crate) fn eval_file(run: &RunData) -> DataFile {
    DataFile {
        stem: Kind::Eval.tag().into(),
        kind: Kind::Eval,
        mix: None,
        rows: run.eval.clone(),
    }
}

/// The training settings every config shares, as `demorecon train`'s defaults: LoRA r16 α32
/// on q, k, v, o; learning rate 2e-4; 3 epochs; 2 pairs per device; 1024 tokens.
pub(crate) mod defaults {
    pub const LORA_R: u32 = 16;
    pub const LORA_ALPHA: u32 = 32;
    pub const LORA_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
    pub const LEARNING_RATE: f64 = 2e-4;
    pub const EPOCHS: u32 = 3;
    pub const BATCH: u32 = 2;
    pub const MAX_LENGTH: u32 = 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainer_lists_parse_all_and_reject_unknown_names() {
        assert_eq!(Trainer::parse_list("all").unwrap(), Trainer::ALL);
        assert_eq!(
            Trainer::parse_list("axolotl,trl,trl").unwrap(),
            [Trainer::Trl, Trainer::Axolotl]
        );
        assert_eq!(
            Trainer::parse_list("LlamaFactory").unwrap(),
            [Trainer::LlamaFactory]
        );
        assert!(
            Trainer::parse_list("deepspeed")
                .unwrap_err()
                .contains("deepspeed")
        );
        assert!(Trainer::parse_list(",").is_err());
    }
}
