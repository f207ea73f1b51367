//! axolotl: DPO rows for its `chat_template.default` DPO strategy (`messages` — the prompt
//! turns — plus one `chosen` and one `rejected` `{role, content}` message, the field names it
//! reads by default), SFT `messages` for `type: chat_template`, and KTO rows for its
//! `user_defined` KTO strategy (`prompt`, `completion`, `label`, with ChatML format strings).
//! Config keys checked against axolotl 0.19.0 (`utils/schemas/config.py`: `rl: dpo`,
//! `dpo_loss_type` and `dpo_loss_weights` lists, `rl_beta`). axolotl hands them to TRL's
//! `DPOTrainer` (TRL 1.9.0 under axolotl 0.19.0), whose `sft` term is the per-token mean over
//! the batch — ours — so the weight maps 1:1.

use serde_json::{Value, json};

use super::defaults::*;
use super::{
    DataFile, Folder, TrainOptions, Trainer, dpo_files, eval_file, kto_files, llama_factory,
    pair_lineage, sft_files, trl,
};
use crate::rows::KtoRow;
use crate::run::RunData;
use crate::yaml::to_yaml;

/// ChatML, the template of SmolLM2 and Qwen: axolotl's user-defined KTO strategy formats
/// plain strings, so the chat template has to be spelled out.
const KTO_PROMPT_FORMAT: &str = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n";
const KTO_COMPLETION_FORMAT: &str = "{completion}<|im_end|>";

fn kto_row(k: &KtoRow<'_>) -> Value {
    let prompt = k.pair.prompt.last().map_or("", |m| m.content.as_str());
    let mut row = json!({
        "prompt": prompt,
        "completion": k.completion.content,
        "label": k.desirable,
    });
    pair_lineage(&mut row, k.pair);
    row
}

fn common(opts: &TrainOptions, output_dir: &str) -> Value {
    json!({
        "base_model": opts.model,
        "chat_template": "tokenizer_default",
        "adapter": "lora",
        "lora_r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_target_modules": LORA_TARGETS,
        "sequence_len": MAX_LENGTH,
        "micro_batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "num_epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "optimizer": "adamw_torch",
        "lr_scheduler": "cosine",
        "output_dir": output_dir,
    })
}

pub(crate) fn dpo_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "./out-dpo-sft");
    c["rl"] = json!("dpo");
    c["rl_beta"] = json!(opts.beta);
    c["dpo_loss_type"] = json!(["sigmoid", "sft"]);
    c["dpo_loss_weights"] = json!([1.0, opts.sft_weight]);
    c["datasets"] = json!([{
        "path": "./dpo_mixed.jsonl",
        "split": "train",
        "type": "chat_template.default",
        "field_messages": "messages",
        "field_chosen": "chosen",
        "field_rejected": "rejected",
    }]);
    c
}

fn kto_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "./out-kto");
    c["rl"] = json!("kto");
    c["rl_beta"] = json!(opts.beta);
    // axolotl's validator requires it for KTO: the trainer needs the `label` column.
    c["remove_unused_columns"] = json!(false);
    c["datasets"] = json!([{
        "path": "./kto_mixed.jsonl",
        "split": "train",
        "type": {
            "field_prompt": "prompt",
            "field_completion": "completion",
            "field_label": "label",
            "prompt_format": KTO_PROMPT_FORMAT,
            "completion_format": KTO_COMPLETION_FORMAT,
        },
    }]);
    c
}

fn sft_config(opts: &TrainOptions) -> Value {
    let mut c = common(opts, "./out-sft");
    c["datasets"] = json!([{
        "path": "./sft_mixed.jsonl",
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
    }]);
    c
}

const HEADER: &str = "# Written by `demorecon export`. Run from this folder:";

pub fn folder(run: &RunData, opts: &TrainOptions) -> Folder {
    let mut data: Vec<DataFile> = dpo_files(run, llama_factory::dpo_row);
    data.extend(kto_files(run, kto_row));
    data.extend(sft_files(run, trl::sft_row));
    data.push(eval_file(run));
    let config = |name: &str, value: Value| {
        (
            name.to_owned(),
            format!("{HEADER} axolotl train {name}\n{}", to_yaml(&value)),
        )
    };
    let configs = vec![
        config("dpo_sft.yaml", dpo_config(opts)),
        config("kto.yaml", kto_config(opts)),
        config("sft.yaml", sft_config(opts)),
    ];
    let how_to_train = format!(
        "```sh\npip install axolotl   # checked with axolotl 0.19.0\ncd THIS_FOLDER\n\
axolotl train dpo_sft.yaml   # DPO + SFT on dpo_mixed.jsonl (type: chat_template.default)\n\
axolotl train kto.yaml       # KTO on kto_mixed.jsonl\naxolotl train sft.yaml       # SFT on sft_mixed.jsonl\n```\n\n\
`dpo_sft.yaml` sets `rl: dpo`, `dpo_loss_type: [sigmoid, sft]` and `dpo_loss_weights: [1.0, {w}]`. axolotl \
passes these to TRL's `DPOTrainer`, whose `sft` term is the mean NLL over every chosen-response token of \
the batch, as in `demorecon train`: `--sft-weight {w}` maps to `{w}` unchanged. axolotl's KTO loader formats \
plain strings, so `kto.yaml` spells the chat template out (ChatML, as SmolLM2 and Qwen use); change \
`prompt_format`/`completion_format` for a model with another template.\n",
        w = crate::yaml::float(opts.sft_weight)
    );
    Folder {
        trainer: Trainer::Axolotl,
        data,
        configs,
        how_to_train,
    }
}
