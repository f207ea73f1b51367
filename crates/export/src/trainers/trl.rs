//! TRL: conversational rows with an explicit prompt — DPO `prompt`/`chosen`/`rejected`
//! (message lists), KTO's unpaired `prompt`/`completion`/`label`, SFT `messages` — and
//! `trl dpo` / `trl kto` configs. Key names checked against TRL 1.16.0 (`DPOConfig.loss_type`
//! is a list combined with `loss_weights`; its `sft` term is the mean NLL over every chosen
//! token of the micro-batch, exactly our `--sft-weight` term, so the weight maps 1:1).

use serde_json::{Value, json};

use super::defaults::*;
use super::{
    DataFile, Folder, TrainOptions, Trainer, dpo_files, eval_file, kto_files, lineage, messages,
    pair_lineage, sft_files,
};
use crate::rows::{KtoRow, Pair, SftRow};
use crate::run::RunData;
use crate::yaml::to_yaml;

pub(crate) fn dpo_row(p: &Pair) -> Value {
    let mut row = json!({
        "prompt": messages(&p.prompt),
        "chosen": messages(std::slice::from_ref(&p.chosen)),
        "rejected": messages(std::slice::from_ref(&p.rejected)),
    });
    pair_lineage(&mut row, p);
    row
}

pub(crate) fn kto_row(k: &KtoRow<'_>) -> Value {
    let mut row = json!({
        "prompt": messages(&k.pair.prompt),
        "completion": messages(std::slice::from_ref(k.completion)),
        "label": k.desirable,
    });
    pair_lineage(&mut row, k.pair);
    row
}

pub(crate) fn sft_row(r: &SftRow) -> Value {
    let mut row = json!({ "messages": messages(&r.messages) });
    lineage(&mut row, &r.seed_id, r.variant_id.as_deref(), r.fgiv);
    row
}

/// The shared part of both configs: data, model, LoRA, schedule.
fn common(opts: &TrainOptions, dataset_config: &str, output_dir: &str) -> Value {
    json!({
        "model_name_or_path": opts.model,
        "dataset_name": ".",
        "dataset_config": dataset_config,
        "dataset_train_split": "train",
        "output_dir": output_dir,
        "use_peft": true,
        "lora_r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_target_modules": LORA_TARGETS,
        "learning_rate": LEARNING_RATE,
        "num_train_epochs": EPOCHS,
        "per_device_train_batch_size": BATCH,
        "max_length": MAX_LENGTH,
        "beta": opts.beta,
    })
}

pub(crate) fn dpo_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "dpo_mixed", "out-dpo-sft");
    c["loss_type"] = json!(["sigmoid", "sft"]);
    c["loss_weights"] = json!([1.0, opts.sft_weight]);
    c
}

fn kto_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "kto_mixed", "out-kto");
    // One desirable and one undesirable row per pair: balanced, so both weights stay 1.
    c["desirable_weight"] = json!(1.0);
    c["undesirable_weight"] = json!(1.0);
    c
}

const HEADER: &str = "# Written by `demorecon export`. Run from this folder:";

pub fn folder(run: &RunData, opts: &TrainOptions) -> Folder {
    let mut data: Vec<DataFile> = dpo_files(run, dpo_row);
    data.extend(kto_files(run, kto_row));
    data.extend(sft_files(run, sft_row));
    data.push(eval_file(run));
    let configs = vec![
        (
            "dpo_sft.yaml".to_owned(),
            format!(
                "{HEADER} trl dpo --config dpo_sft.yaml\n{}",
                to_yaml(&dpo_config(opts))
            ),
        ),
        (
            "kto.yaml".to_owned(),
            format!(
                "{HEADER} trl kto --config kto.yaml\n{}",
                to_yaml(&kto_config(opts))
            ),
        ),
    ];
    let how_to_train = format!(
        "```sh\npip install trl peft   # checked with trl 1.16.0\ncd THIS_FOLDER\n\
trl dpo --config dpo_sft.yaml   # DPO + SFT on dpo_mixed; set dataset_config: dpo_fgiv_a or dpo_fgiv_r for one set\n\
trl kto --config kto.yaml       # KTO on kto_mixed\n```\n\n\
`dpo_sft.yaml` combines the losses the way the paper trains: `loss_type: [sigmoid, sft]` with \
`loss_weights: [1.0, {w}]`. TRL's `sft` term is the mean negative log-likelihood over every chosen-response \
token of the batch — the same normalisation as `demorecon train`, so `--sft-weight {w}` maps to \
`{w}` unchanged. In Python: `load_dataset(\"THIS_FOLDER\", \"dpo_mixed\")` gives rows `DPOTrainer` takes as they are.\n",
        w = crate::yaml::float(opts.sft_weight)
    );
    Folder {
        trainer: Trainer::Trl,
        data,
        configs,
        how_to_train,
    }
}
