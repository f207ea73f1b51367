#!/usr/bin/env bash
# One SFT+DPO optimiser step on SmolLM2-135M: `demorecon train`'s step (its train_step
# example) against PyTorch + peft on the same CPU, in the same run, on the same tokens.
#
# Fixed work: one preference pair, 2 × 128 tokens (64 prompt + 64 response tokens each),
# LoRA r=16 (alpha 32) on q,k,v,o, f32, 2 threads; each step includes the reference pass
# (as TRL runs it), DPO (beta 0.1) + NLL of the chosen response, backward, clipping, AdamW.
# Each side runs RUNS processes (alternating, so both see the same machine load); a process
# times STEPS steps after one warm-up step. Printed: median step time and tokens/s over all
# timed steps, median peak RSS over processes, and our/their ratio.
# Needs the venv of scripts/check-hf-interop.sh (torch, transformers, peft, gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-3}
THREADS=${THREADS:-2}
VENV=target/train-venv
WORK=target/bench-train
if ! "$VENV/bin/python" -c 'import torch, transformers, peft, gguf' 2>/dev/null; then
    echo "run scripts/check-hf-interop.sh first (it installs $VENV)" >&2
    exit 1
fi
cargo build -q -p demorecon --bin demorecon
cargo build -q -p demorecon-train --example train_step
BASE=$(target/debug/demorecon model path)
target/debug/demorecon model fetch >/dev/null
mkdir -p "$WORK"
rm -f "$WORK"/*.jsonl "$WORK"/*.time

"$VENV/bin/python" - "$WORK/pair.json" <<'PY'
import json, sys, random
rng = random.Random(1)
prompt = [rng.randrange(100, 49152) for _ in range(64)]
pair = {"prompt_len": 64,
        "chosen": prompt + [rng.randrange(100, 49152) for _ in range(64)],
        "rejected": prompt + [rng.randrange(100, 49152) for _ in range(64)]}
json.dump(pair, open(sys.argv[1], "w"))
PY

cat > "$WORK/torch_step.py" <<'PY'
# PyTorch + peft: the same step as demorecon's train_step example.
import json, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

gguf, pair_file, steps, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
pair = json.load(open(pair_file))
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.tensor([pair["chosen"], pair["rejected"]])
p = pair["prompt_len"]
labels = ids[:, 1:]
mask = torch.zeros_like(labels, dtype=torch.float32)
mask[:, p - 1:] = 1.0

def seq_logps(logits):
    logp = torch.gather(logits[:, :-1].log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return logp, (logp * mask).sum(-1)

for step in range(steps + 1):
    t0 = time.perf_counter()
    with torch.no_grad(), model.disable_adapter():
        _, ref = seq_logps(model(ids).logits)
    logp, pol = seq_logps(model(ids).logits)
    z = 0.1 * ((pol[0] - ref[0]) - (pol[1] - ref[1]))
    dpo = -F.logsigmoid(z)
    nll = -(logp[0] * mask[0]).sum() / mask[0].sum()
    loss = dpo + 1.0 * nll
    loss.backward()
    torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    if step > 0:
        print(json.dumps({"step": step, "loss": loss.item(), "step_s": dt, "tokens_per_s": ids.numel() / dt}), flush=True)
PY

for run in $(seq 1 "$RUNS"); do
    RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$WORK/ours-$run.time" \
        target/debug/examples/train_step --gguf "$BASE" --pair "$WORK/pair.json" \
        --rank 16 --targets q,k,v,o --steps $((STEPS + 1)) \
        | tail -n "$STEPS" >> "$WORK/ours.jsonl"
    OMP_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$WORK/torch-$run.time" \
        "$VENV/bin/python" "$WORK/torch_step.py" "$BASE" "$WORK/pair.json" "$STEPS" "$THREADS" \
        2>/dev/null >> "$WORK/torch.jsonl"
done

"$VENV/bin/python" - "$WORK" "$RUNS" <<'PY'
import json, statistics, sys
from pathlib import Path
work, runs = Path(sys.argv[1]), int(sys.argv[2])
def load(name):
    rows = [json.loads(l) for l in (work / f"{name}.jsonl").read_text().splitlines() if l.strip()]
    rss = [int((work / f"{name}-{r}.time").read_text().split()[-1]) / 1024 for r in range(1, runs + 1)]
    return statistics.median(r["step_s"] for r in rows), statistics.median(rss), rows
ours_s, ours_rss, ours_rows = load("ours")
torch_s, torch_rss, _ = load("torch")
tokens = 256
phases = {k: statistics.median(r[k] for r in ours_rows) for k in ("ref_s", "forward_s", "backward_s", "optimizer_s")}
print(f"{'':26}{'s/step':>8}{'tokens/s':>10}{'peak RSS MiB':>14}")
print(f"{'demorecon (candle, Rust)':26}{ours_s:8.2f}{tokens / ours_s:10.1f}{ours_rss:14.0f}")
print(f"{'PyTorch + peft':26}{torch_s:8.2f}{tokens / torch_s:10.1f}{torch_rss:14.0f}")
print(f"ratio (ours / PyTorch tokens/s): {torch_s / ours_s:.2f}x; memory ratio: {ours_rss / torch_rss:.2f}x")
print("our phases (median s): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in phases.items()))
PY
