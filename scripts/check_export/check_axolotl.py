"""Checks an export with axolotl's own code (the `axolotl` venv).

usage: check_axolotl.py EXPORT_DIR GGUF WORK_DIR

Each written config (dpo_sft.yaml, kto.yaml, sft.yaml) goes through axolotl's load_cfg —
its pydantic schema and validators, then normalisation — with only base_model and paths
pointed at local files; then axolotl's own loaders read the rows: the preference loader
(chat_template.default DPO strategy, user_defined KTO strategy) and the SFT loader
(chat_template), and must keep every row.
"""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import check, export_info, finish, hf_dir, jsonl  # noqa: E402



def cfg_of(name):
    cfg = yaml.safe_load((folder / name).read_text())
    cfg["base_model"] = model_dir
    for ds in cfg["datasets"]:
        ds["path"] = str(folder / Path(ds["path"]).name)
    cfg.update(output_dir=str(work / "axolotl-out"), dataset_prepared_path=str(work / f"axolotl-prepared-{name}"))
    path = work / f"axolotl-{name}"
    path.write_text(yaml.safe_dump(cfg))
    return load_cfg(str(path))


def rows_of(name):
    return len(jsonl(folder / name))


def dpo():
    cfg = cfg_of("dpo_sft.yaml")
    assert cfg.rl == "dpo", cfg.rl
    assert list(cfg.dpo_loss_type) == ["sigmoid", "sft"], cfg.dpo_loss_type
    assert list(cfg.dpo_loss_weights) == [1.0, weight], cfg.dpo_loss_weights
    meta = load_preference_datasets(cfg=cfg)
    got, want = len(meta.train_dataset), rows_of("dpo_mixed.jsonl")
    assert got == want, f"{got} of {want} rows"
    row = meta.train_dataset[0]
    assert row["prompt"] and row["chosen"] and row["rejected"], row
    return f"rl=dpo dpo_loss_type={list(cfg.dpo_loss_type)} dpo_loss_weights={list(cfg.dpo_loss_weights)}; {got} rows"


def kto():
    cfg = cfg_of("kto.yaml")
    meta = load_preference_datasets(cfg=cfg)
    got, want = len(meta.train_dataset), rows_of("kto_mixed.jsonl")
    assert got == want, f"{got} of {want} rows"
    assert {bool(x) for x in meta.train_dataset["label"]} == {True, False}
    return f"rl=kto; {got} rows"


def sft():
    cfg = cfg_of("sft.yaml")
    meta = load_datasets(cfg=cfg)
    got, want = len(meta.train_dataset), rows_of("sft_mixed.jsonl")
    assert got == want, f"{got} of {want} rows"
    return f"{got} rows tokenised"


def main():
    global export, gguf, work, folder, model_dir, weight, load_cfg, load_datasets, load_preference_datasets
    export, gguf, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    folder = export / "axolotl"
    model_dir = hf_dir(gguf, work.parent / "hf-axolotl")
    weight = export_info(folder)["sft_weight"]
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets, load_preference_datasets

    check("axolotl: dpo_sft.yaml validates and its DPO loader reads every row", dpo)
    check("axolotl: kto.yaml validates and its KTO loader reads every row", kto)
    check("axolotl: sft.yaml validates and its chat_template loader reads every row", sft)
    finish()


# datasets saves with a "spawn" process pool, whose workers import this file again: only
# the main process may run the checks.
if __name__ == "__main__":
    main()
