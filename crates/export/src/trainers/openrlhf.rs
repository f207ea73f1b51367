//! OpenRLHF: the same conversational rows as TRL (`prompt`, `chosen`, `rejected` message
//! lists; SFT `messages`), named to its loader with `--data.prompt_key`, `--data.chosen_key`,
//! `--data.rejected_key` and `--data.apply_chat_template`, and a launch script per stage.
//! Flag names checked against openrlhf 0.11.2 (`cli/train_dpo.py`, `cli/train_sft.py`), whose
//! flags are dotted (`--model.nll_loss_coef`) and which has no KTO trainer any more — so no
//! KTO files here. Its NLL term is each chosen response's mean per-token NLL averaged over
//! the batch's sequences (`trainer/dpo_trainer.py`).

use super::defaults::*;
use super::{DataFile, Folder, TrainOptions, Trainer, dpo_files, eval_file, sft_files, trl};
use crate::run::RunData;
use crate::yaml::float;

fn dpo_script(opts: &TrainOptions) -> String {
    format!(
        "#!/usr/bin/env bash\n# Written by `demorecon export`: DPO + NLL (the paper's SFT+DPO) on dpo_mixed.jsonl.\n\
# Run from this folder on a GPU machine with openrlhf installed (checked with openrlhf 0.11.2).\n\
set -euo pipefail\ncd \"$(dirname \"$0\")\"\n\
deepspeed --module openrlhf.cli.train_dpo \\\n\
  --model.model_name_or_path {model} \\\n\
  --data.dataset ./dpo_mixed.jsonl \\\n\
  --data.prompt_key prompt --data.chosen_key chosen --data.rejected_key rejected \\\n\
  --data.apply_chat_template \\\n\
  --data.max_len {max_len} \\\n\
  --model.beta {beta} \\\n\
  --model.nll_loss_coef {w} \\\n\
  --ds.lora.rank {r} --ds.lora.alpha {alpha} --ds.lora.target_modules {targets} \\\n\
  --adam.lr {lr} \\\n\
  --train.max_epochs {epochs} \\\n\
  --train.micro_batch_size {batch} \\\n\
  --ckpt.output_dir ./out-dpo-sft \\\n\
  \"$@\"\n",
        model = opts.model,
        max_len = MAX_LENGTH,
        beta = float(opts.beta),
        w = float(opts.sft_weight),
        r = LORA_R,
        alpha = LORA_ALPHA,
        targets = LORA_TARGETS.join(" "),
        lr = float(LEARNING_RATE),
        epochs = EPOCHS,
        batch = BATCH,
    )
}

fn sft_script(opts: &TrainOptions) -> String {
    format!(
        "#!/usr/bin/env bash\n# Written by `demorecon export`: SFT on sft_mixed.jsonl (OpenRLHF 0.11.2).\n\
set -euo pipefail\ncd \"$(dirname \"$0\")\"\n\
deepspeed --module openrlhf.cli.train_sft \\\n\
  --model.model_name_or_path {model} \\\n\
  --data.dataset ./sft_mixed.jsonl \\\n\
  --data.input_key messages --data.apply_chat_template \\\n\
  --data.max_len {max_len} \\\n\
  --ds.lora.rank {r} --ds.lora.alpha {alpha} --ds.lora.target_modules {targets} \\\n\
  --adam.lr {lr} \\\n\
  --train.max_epochs {epochs} \\\n\
  --train.micro_batch_size {batch} \\\n\
  --ckpt.output_dir ./out-sft \\\n\
  \"$@\"\n",
        model = opts.model,
        max_len = MAX_LENGTH,
        r = LORA_R,
        alpha = LORA_ALPHA,
        targets = LORA_TARGETS.join(" "),
        lr = float(LEARNING_RATE),
        epochs = EPOCHS,
        batch = BATCH,
    )
}

pub fn folder(run: &RunData, opts: &TrainOptions) -> Folder {
    let mut data: Vec<DataFile> = dpo_files(run, trl::dpo_row);
    data.extend(sft_files(run, trl::sft_row));
    data.push(eval_file(run));
    let configs = vec![
        ("train_dpo_sft.sh".to_owned(), dpo_script(opts)),
        ("train_sft.sh".to_owned(), sft_script(opts)),
    ];
    let how_to_train = format!(
        "```sh\npip install openrlhf   # checked with openrlhf 0.11.2 (GPU machine)\n\
bash THIS_FOLDER/train_dpo_sft.sh   # DPO + NLL on dpo_mixed.jsonl; extra flags are passed on\n\
bash THIS_FOLDER/train_sft.sh       # SFT on sft_mixed.jsonl\n```\n\n\
The rows are TRL's conversational ones; `--data.prompt_key prompt --data.chosen_key chosen \
--data.rejected_key rejected --data.apply_chat_template` tell OpenRLHF where they are. The SFT term \
is `--model.nll_loss_coef {w}`: OpenRLHF's NLL is each chosen response's mean per-token NLL averaged \
over the sequences of the batch, so `{w}` matches `demorecon train --sft-weight {w}` when responses \
are of similar length. OpenRLHF 0.11 has no KTO trainer, so this folder has no KTO files (take them \
from the TRL export).\n",
        w = float(opts.sft_weight)
    );
    Folder {
        trainer: Trainer::OpenRlhf,
        data,
        configs,
        how_to_train,
    }
}
