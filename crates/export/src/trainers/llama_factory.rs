//! LLaMA-Factory: ShareGPT-formatted rows with OpenAI-style `role`/`content` tags, described
//! by a `dataset_info.json` (the file its loader reads first): preference sets with
//! `ranking: true` and `messages`/`chosen`/`rejected` columns (the prompt turns, then one
//! chosen and one rejected assistant message), KTO sets with a boolean `kto_tag` column, SFT
//! sets with `messages`. Configs for `llamafactory-cli train`: `stage: dpo`,
//! `pref_loss: sigmoid`, `pref_ftx`; and `stage: kto`. Key names checked against
//! llamafactory 0.9.5 (`data/parser.py`, `hparams/finetuning_args.py`): its `pref_ftx` term is
//! each chosen response's mean per-token NLL averaged over the batch's sequences.

use serde_json::{Map, Value, json};

use super::defaults::*;
use super::{
    DataFile, Folder, Kind, TrainOptions, Trainer, dpo_files, eval_file, kto_files, lineage,
    message, messages, pair_lineage, sft_files,
};
use crate::rows::{KtoRow, Pair, SftRow};
use crate::run::RunData;
use crate::yaml::to_yaml;

/// The prefix of every dataset name we add to `dataset_info.json`.
pub const PREFIX: &str = "demorecon_";

pub(crate) fn dpo_row(p: &Pair) -> Value {
    let mut row = json!({
        "messages": messages(&p.prompt),
        "chosen": message(&p.chosen),
        "rejected": message(&p.rejected),
    });
    pair_lineage(&mut row, p);
    row
}

fn kto_row(k: &KtoRow<'_>) -> Value {
    let mut turns = k.pair.prompt.clone();
    turns.push(k.completion.clone());
    let mut row = json!({ "messages": messages(&turns), "label": k.desirable });
    pair_lineage(&mut row, k.pair);
    row
}

pub(crate) fn sft_row(r: &SftRow) -> Value {
    let mut row = json!({ "messages": messages(&r.messages) });
    lineage(&mut row, &r.seed_id, r.variant_id.as_deref(), r.fgiv);
    row
}

fn tags() -> Value {
    json!({
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    })
}

/// The `dataset_info.json` entry of one data file (`None` for the eval prompts, which have
/// no responses to train on).
fn dataset_info_entry(file: &DataFile) -> Option<Value> {
    let columns = match file.kind {
        Kind::Dpo => json!({"messages": "messages", "chosen": "chosen", "rejected": "rejected"}),
        Kind::Kto => json!({"messages": "messages", "kto_tag": "label"}),
        Kind::Sft => json!({"messages": "messages"}),
        Kind::Eval => return None,
    };
    let mut entry = json!({
        "file_name": format!("{}.jsonl", file.stem),
        "formatting": "sharegpt",
    });
    if file.kind == Kind::Dpo {
        entry["ranking"] = json!(true);
    }
    entry["columns"] = columns;
    entry["tags"] = tags();
    Some(entry)
}

/// `dataset_info.json` for the data files that have rows.
pub fn dataset_info(data: &[DataFile]) -> Value {
    let map: Map<String, Value> = data
        .iter()
        .filter(|f| !f.rows.is_empty())
        .filter_map(|f| dataset_info_entry(f).map(|e| (format!("{PREFIX}{}", f.stem), e)))
        .collect();
    Value::Object(map)
}

fn common(opts: &TrainOptions, stage: &str, dataset: &str, output_dir: &str) -> Value {
    json!({
        "model_name_or_path": opts.model,
        "template": opts.template,
        "stage": stage,
        "do_train": true,
        "finetuning_type": "lora",
        "lora_rank": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_target": LORA_TARGETS.join(","),
        "dataset_dir": ".",
        "dataset": format!("{PREFIX}{dataset}"),
        "cutoff_len": MAX_LENGTH,
        "output_dir": output_dir,
        "per_device_train_batch_size": BATCH,
        "learning_rate": LEARNING_RATE,
        "num_train_epochs": f64::from(EPOCHS),
        "pref_beta": opts.beta,
    })
}

pub(crate) fn dpo_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "dpo", "dpo_mixed", "out-dpo-sft");
    c["pref_loss"] = json!("sigmoid");
    c["pref_ftx"] = json!(opts.sft_weight);
    c
}

fn kto_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "kto", "kto_mixed", "out-kto");
    c["kto_chosen_weight"] = json!(1.0);
    c["kto_rejected_weight"] = json!(1.0);
    c
}

const HEADER: &str = "# Written by `demorecon export`. Run from this folder:";

pub fn folder(run: &RunData, opts: &TrainOptions) -> Folder {
    let mut data: Vec<DataFile> = dpo_files(run, dpo_row);
    data.extend(kto_files(run, kto_row));
    data.extend(sft_files(run, sft_row));
    data.push(eval_file(run));
    let mut info = serde_json::to_string_pretty(&dataset_info(&data)).expect("json");
    info.push('\n');
    let configs = vec![
        ("dataset_info.json".to_owned(), info),
        (
            "dpo_sft.yaml".to_owned(),
            format!(
                "{HEADER} llamafactory-cli train dpo_sft.yaml\n{}",
                to_yaml(&dpo_config(opts))
            ),
        ),
        (
            "kto.yaml".to_owned(),
            format!(
                "{HEADER} llamafactory-cli train kto.yaml\n{}",
                to_yaml(&kto_config(opts))
            ),
        ),
    ];
    let how_to_train = format!(
        "```sh\npip install llamafactory   # checked with llamafactory 0.9.5\ncd THIS_FOLDER\n\
llamafactory-cli train dpo_sft.yaml   # DPO + SFT on {p}dpo_mixed\n\
llamafactory-cli train kto.yaml       # KTO on {p}kto_mixed\n```\n\n\
`dataset_info.json` registers every file here (`{p}dpo_fgiv_a`, `{p}sft_fgiv_r`, …: ShareGPT \
formatting with `role`/`content` tags, `ranking: true` for the preference sets, `kto_tag: label` for \
KTO); to use them from another folder, merge its entries into that folder's `dataset_info.json` and \
copy the files. `dpo_sft.yaml` sets `pref_loss: sigmoid` and `pref_ftx: {w}`: LLaMA-Factory's SFT term \
is each chosen response's mean per-token NLL, averaged over the sequences of the batch, so the same \
number `{w}` matches `demorecon train --sft-weight {w}` when responses are of similar length (ours \
weights every token alike; LLaMA-Factory weights every sequence alike). Set `template` to your model's.\n",
        p = PREFIX,
        w = crate::yaml::float(opts.sft_weight)
    );
    Folder {
        trainer: Trainer::LlamaFactory,
        data,
        configs,
        how_to_train,
    }
}
