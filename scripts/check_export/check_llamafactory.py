"""Checks an export with LLaMA-Factory's own code (the `llamafactory` venv).

usage: check_llamafactory.py EXPORT_DIR GGUF WORK_DIR

dpo_sft.yaml and kto.yaml go through LLaMA-Factory's own argument parser (get_train_args,
which rejects unknown keys); then every dataset that dataset_info.json registers is loaded
through that file — converter, template, tokenisation — by get_dataset with the stage it is
for (rm for ranking sets, kto, sft), and must keep every row: no "Cannot find valid samples",
no row dropped as invalid.
"""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import check, export_info, finish, hf_dir, jsonl  # noqa: E402

export, gguf, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
folder = export / "llama-factory"
model_dir = hf_dir(gguf, work.parent / "hf-llamafactory")

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_tokenizer  # noqa: E402

weight = export_info(folder)["sft_weight"]
info = __import__("json").loads((folder / "dataset_info.json").read_text())


def args_from(config, **overrides):
    cfg = yaml.safe_load((folder / config).read_text())
    cfg.update(
        model_name_or_path=model_dir,
        dataset_dir=str(folder),
        output_dir=str(work / "lf-out"),
        overwrite_output_dir=True,
        report_to="none",
        use_cpu=True,
        preprocessing_num_workers=None,
        overwrite_cache=True,
        **overrides,
    )
    return get_train_args(cfg)


def dpo_config():
    _, _, _, finetuning, _ = args_from("dpo_sft.yaml")
    assert finetuning.stage == "dpo" and finetuning.pref_loss == "sigmoid", finetuning.stage
    assert finetuning.pref_ftx == weight, finetuning.pref_ftx
    return f"stage=dpo pref_loss=sigmoid pref_ftx={finetuning.pref_ftx}"


def kto_config():
    _, _, _, finetuning, _ = args_from("kto.yaml")
    assert finetuning.stage == "kto"
    return f"pref_beta={finetuning.pref_beta}"


check("LLaMA-Factory: dpo_sft.yaml passes get_train_args", dpo_config)
check("LLaMA-Factory: kto.yaml passes get_train_args", kto_config)


def load(name, entry):
    if entry.get("ranking"):
        config, stage = "dpo_sft.yaml", "rm"
    elif "kto_tag" in entry.get("columns", {}):
        config, stage = "kto.yaml", "kto"
    else:
        config, stage = "dpo_sft.yaml", "sft"
    overrides = {"dataset": name}
    if stage == "sft":
        overrides.update(stage="sft", pref_loss="sigmoid")
    model_args, data_args, training_args, _, _ = args_from(config, **overrides)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage=stage, tokenizer=tokenizer)
    rows = len(jsonl(folder / entry["file_name"]))
    got = len(module["train_dataset"])
    assert got == rows, f"{got} of {rows} rows survived"
    return f"stage {stage}: {got} rows"


for name, entry in info.items():
    check(f"LLaMA-Factory: {name} loads through dataset_info.json", lambda n=name, e=entry: load(n, e))
finish()
