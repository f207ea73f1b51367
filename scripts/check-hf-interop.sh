#!/usr/bin/env bash
# Checks that what `demorecon train` writes loads in the Hugging Face stack and computes what
# our forward pass computes:
#   1. transformers loads the original GGUF (gguf_file=) and agrees with our base forward;
#   2. transformers loads the --export-hf folder and agrees with our merged model;
#   3. peft loads the adapter onto the GGUF-loaded base and agrees with the merged export
#      (and with our forward with the adapter applied as LoRA).
# "Agrees": max |ours - theirs| / max |theirs| <= 1e-4 over all logits of a fixed ChatML prompt.
# Needs Python 3 and network access to PyPI (torch is a large download); CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/train-venv
WORK=target/interop
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, transformers, peft, gguf, safetensors' 2>/dev/null; then
    "$VENV/bin/pip" install -q --upgrade pip
    # The CPU-only wheel index is much smaller; fall back to PyPI's default build.
    "$VENV/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch 2>/dev/null \
        || "$VENV/bin/pip" install -q torch
    "$VENV/bin/pip" install -q transformers peft safetensors gguf numpy
fi

scripts/system-deps.sh build
cargo build -q -p demorecon --bin demorecon
cargo build -q -p demorecon-train --example logits
BIN=target/debug/demorecon
LOGITS=target/debug/examples/logits
BASE=$("$BIN" model path)
"$BIN" model fetch >/dev/null

rm -rf "$WORK"
mkdir -p "$WORK"
# A couple of optimiser steps so the adapter is far from zero; every projection kind adapted
# (q/k exercise the RoPE row permutation, gate/up/down the MLP names).
head -n 4 examples/prefs.jsonl > "$WORK/prefs.jsonl"
"$BIN" train --dpo "$WORK/prefs.jsonl" --base embedded --out "$WORK/run" \
    --epochs 1 --batch-size 2 --lr 2e-3 --lora-rank 8 --lora-alpha 16 \
    --lora-targets q,k,v,o,gate,up,down --no-ref-cache --export-hf "$WORK/hf" --json \
    > "$WORK/train.json"

"$VENV/bin/python" - "$WORK" "$BASE" "$LOGITS" <<'PY'
import json, subprocess, sys
from pathlib import Path
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

work, base_gguf, logits_bin = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(work / "hf")
messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
ids = tok.apply_chat_template(messages, add_generation_prompt=True)
if hasattr(ids, "keys"):
    ids = ids["input_ids"]
ids = list(ids)
assert tok.encode("<|im_start|>system") == [1, 9690], tok.encode("<|im_start|>system")
print(f"prompt: {len(ids)} tokens")

def ours(gguf, adapter=None):
    out = work / f"ours-{len(list(work.glob('ours-*')))}.f32"
    cmd = [logits_bin, "--gguf", str(gguf), "--ids", ",".join(map(str, ids)), "--out", str(out)]
    if adapter:
        cmd += ["--adapter", str(adapter)]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return np.fromfile(out, dtype="<f4").reshape(len(ids), -1)

@torch.no_grad()
def theirs(model):
    return model(torch.tensor([ids])).logits[0].float().numpy()

def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())

results, ok = [], True
def check(name, a, b, tol=1e-4):
    global ok
    r = rel(a, b)
    passed = r <= tol
    ok &= passed
    results.append((name, r, passed))
    print(f"{'PASS' if passed else 'FAIL'} {name}: max|diff|/max|ref| = {r:.2e} (tolerance {tol:g})")

ours_base = ours(base_gguf)
ours_merged = ours(work / "run" / "model.gguf")
ours_lora = ours(base_gguf, work / "run" / "adapter")

gg = AutoModelForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32)
hf_base = theirs(gg)
check("transformers(GGUF) vs our base forward", ours_base, hf_base)

merged = AutoModelForCausalLM.from_pretrained(work / "hf", dtype=torch.float32)
hf_merged = theirs(merged)
check("transformers(--export-hf) vs our merged GGUF forward", ours_merged, hf_merged)
check("transformers(--export-hf) vs our forward with LoRA on", ours_lora, hf_merged)

peft_model = PeftModel.from_pretrained(gg, work / "run" / "adapter")
hf_peft = theirs(peft_model)
check("peft(adapter on GGUF base) vs transformers(--export-hf)", hf_peft, hf_merged)
check("peft(adapter on GGUF base) vs our forward with LoRA on", ours_lora, hf_peft)

shift = rel(ours_merged, ours_base)
print(f"the adapter moves the logits by {shift:.2e} relative (must be well above the tolerance)")
ok &= shift > 1e-2
(work / "interop.json").write_text(json.dumps({"checks": results, "adapter_shift": shift, "ok": ok}, indent=2))
print("interop:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
