"""Checks an export with `datasets`, TRL and OpenRLHF's own code (the `trl` venv).

usage: check_trl.py EXPORT_DIR GGUF WORK_DIR [--train-step]

- datasets: every Parquet file holds the same rows as its JSONL twin; load_dataset(folder)
  gives the default config (dpo_mixed) and every config of the card loads.
- TRL: dpo_sft.yaml and kto.yaml parse with TRL's own parser into DPOConfig/KTOConfig (loss
  types, weights); DPOTrainer and KTOTrainer tokenise every DPO and KTO row of every file;
  with --train-step, one DPO+SFT optimiser step on dpo_mixed.
- OpenRLHF: its own preprocess_data turns every DPO and SFT row into prompt/response text
  with the chat template, and every flag in the launch scripts exists in its CLI.
"""
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import check, export_info, finish, jsonl, ok  # noqa: E402

export, gguf, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
train_step = "--train-step" in sys.argv
work.mkdir(parents=True, exist_ok=True)

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

datasets.disable_progress_bars()
torch.set_num_threads(2)


def same_rows(folder):
    n = 0
    for js in sorted(folder.glob("*.jsonl")):
        pq = js.with_suffix(".parquet")
        if not pq.exists():
            continue
        a = datasets.load_dataset("json", data_files=str(js), split="train").to_list()
        b = datasets.load_dataset("parquet", data_files=str(pq), split="train").to_list()
        assert a == b, f"{pq.name} differs from {js.name}"
        assert len(a) == len(jsonl(js)), f"{js.name}: datasets read {len(a)} rows"
        n += len(a)
    return f"{n} rows"


def card_configs(folder):
    default = datasets.load_dataset(str(folder), split="train")
    mixed = jsonl(folder / "dpo_mixed.jsonl")
    assert len(default) == len(mixed), "default config is not dpo_mixed"
    names = datasets.get_dataset_config_names(str(folder))
    for name in names:
        datasets.load_dataset(str(folder), name)
    return f"{len(names)} configs"


for folder in sorted(p for p in export.iterdir() if (p / "export.json").exists()):
    check(f"datasets: {folder.name}: Parquet rows == JSONL rows", lambda f=folder: same_rows(f))
    check(f"datasets: {folder.name}: load_dataset(folder) and every card config", lambda f=folder: card_configs(f))

# ---- TRL -------------------------------------------------------------------------------
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, ModelConfig, ScriptArguments, TrlParser  # noqa: E402

trl_dir = export / "trl"
weight = export_info(trl_dir)["sft_weight"]
tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def parse(cfg_cls, name):
    parser = TrlParser((ScriptArguments, cfg_cls, ModelConfig))
    return parser.parse_args_and_config(["--config", str(trl_dir / name), "--output_dir", str(work / "trl-out"), "--use_cpu", "true", "--bf16", "false"])


def dpo_yaml():
    script, cfg, model = parse(DPOConfig, "dpo_sft.yaml")
    assert cfg.loss_type == ["sigmoid", "sft"], cfg.loss_type
    assert cfg.loss_weights == [1.0, weight], cfg.loss_weights
    assert script.dataset_config == "dpo_mixed" and model.use_peft
    return f"loss_type={cfg.loss_type} loss_weights={cfg.loss_weights}"


def kto_yaml():
    script, cfg, _ = parse(KTOConfig, "kto.yaml")
    assert script.dataset_config == "kto_mixed"
    return f"beta={cfg.beta}"


check("TRL: dpo_sft.yaml parses into DPOConfig", dpo_yaml)
check("TRL: kto.yaml parses into KTOConfig", kto_yaml)



def gguf_model():
    m = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # GGUF weights arrive dequantised to float32, but the model still says it is quantised,
    # which trainers refuse to fine-tune.
    m.hf_quantizer = None
    m.is_quantized = False
    return m


model, ref_model = gguf_model(), gguf_model()
common = dict(report_to="none", use_cpu=True, bf16=False, per_device_train_batch_size=2,
              max_steps=1, logging_steps=1, save_strategy="no", max_length=512, dataset_num_proc=None)


def load(name):
    return datasets.load_dataset("json", data_files=str(trl_dir / f"{name}.jsonl"), split="train")


def tokenised_dpo():
    args = DPOConfig(output_dir=str(work / "dpo"), loss_type=["sigmoid", "sft"], loss_weights=[1.0, weight], **common)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=load("dpo_mixed"), processing_class=tok)
    counts = []
    for name in ["dpo_fgiv_a", "dpo_fgiv_r", "dpo_mixed"]:
        ds = trainer._prepare_dataset(load(name), tok, args, name)
        assert len(ds) == len(jsonl(trl_dir / f"{name}.jsonl")), f"{name}: rows lost"
        for row in ds:
            assert row["prompt_ids"] and row["chosen_ids"] and row["rejected_ids"], f"{name}: empty tokens"
        counts.append(f"{name} {len(ds)}")
    return trainer, ", ".join(counts)


def tokenised_kto():
    args = KTOConfig(output_dir=str(work / "kto"), **common)
    counts = []
    for name in ["kto_fgiv_a", "kto_fgiv_r", "kto_mixed"]:
        trainer = KTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=load(name), processing_class=tok)
        ds = trainer.train_dataset
        assert len(ds) == len(jsonl(trl_dir / f"{name}.jsonl")), f"{name}: rows lost"
        labels = {bool(x) for x in ds["label"]}
        assert labels == {True, False}, f"{name}: labels {labels}"
        counts.append(f"{name} {len(ds)}")
    return ", ".join(counts)


state = {}
check("TRL: DPOTrainer tokenises every DPO row", lambda: state.setdefault("dpo", tokenised_dpo())[1])
if train_step and "dpo" in state:
    def step():
        out = state["dpo"][0].train()
        assert math.isfinite(out.training_loss), out.training_loss
        return f"loss {out.training_loss:.4f}"
    check("TRL: one DPO+SFT training step on dpo_mixed", step)

# KTO last: building a KTOTrainer changes the shared model in place.
check("TRL: KTOTrainer tokenises every KTO row", tokenised_kto)

# ---- OpenRLHF --------------------------------------------------------------------------
orl_dir = export / "openrlhf"


def openrlhf_rows():
    from openrlhf.datasets.reward_dataset import preprocess_data as pref
    from openrlhf.datasets.sft_dataset import preprocess_data as sft

    n = 0
    for path in sorted(orl_dir.glob("dpo_*.jsonl")):
        for row in jsonl(path):
            prompt, chosen, rejected, _ = pref(row, None, "prompt", "chosen", "rejected", tok.apply_chat_template, is_dpo=True)
            assert prompt and row["chosen"][0]["content"] in chosen and row["rejected"][0]["content"] in rejected, path.name
            n += 1
    for path in sorted(orl_dir.glob("sft_*.jsonl")):
        for row in jsonl(path):
            prompt, response = sft(row, None, "messages", None, tok.apply_chat_template)
            assert prompt and row["messages"][-1]["content"] in response, path.name
            n += 1
    return f"{n} rows"


def openrlhf_flags():
    import openrlhf

    cli = Path(openrlhf.__file__).parent / "cli"
    n = 0
    for script, module in [("train_dpo_sft.sh", "train_dpo.py"), ("train_sft.sh", "train_sft.py")]:
        source = (cli / module).read_text()
        for flag in re.findall(r"(--[a-z_]+\.[a-z_.]+)", (orl_dir / script).read_text()):
            assert f'"{flag}"' in source, f"{script}: {flag} is not a flag of openrlhf.cli.{module[:-3]}"
            n += 1
    return f"{n} flags"


check("OpenRLHF: preprocess_data reads every DPO and SFT row", openrlhf_rows)
check("OpenRLHF: every flag of the launch scripts exists", openrlhf_flags)
finish()
