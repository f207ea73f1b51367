#!/usr/bin/env bash
# One SFT+DPO optimiser step on SmolLM2-135M: `demorecon train`'s step (its train_step
# example) against PyTorch + peft on the same CPU, in the same run, on the same tokens.
#
# Fixed work per shape: one preference pair of two sequences of LEN tokens (LEN/2 prompt +
# LEN/2 response tokens each), LoRA r=16 (alpha 32) on the shape's projections, f32, THREADS
# threads; each step includes the reference pass (as TRL runs it), DPO (beta 0.1) + NLL of the
# chosen response, backward, clipping, AdamW. Each side runs RUNS processes per shape
# (alternating, so both see the same machine load); a process times STEPS steps after one
# warm-up step. Printed per shape: median step time and tokens/s over all timed steps, median
# peak RSS over processes, and our/their ratios; first the CPU, its vector extensions, the load
# average and the BLAS/thread settings both sides ran with.
#
# Knobs (environment):
#   SHAPES   shapes as LEN:TARGETS, space-separated; "all" = q,k,v,o,gate,up,down.
#            Default: the headline 128:q,k,v,o, then 512:q,k,v,o, 1024:q,k,v,o and 128:all.
#   RUNS, STEPS            processes and timed steps of the first (headline) shape (3, 3)
#   SCALE_RUNS, SCALE_STEPS  the same for the other shapes (1, 1)
#   THREADS  threads on both sides (2): RAYON_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads
# Needs the venv of scripts/check-hf-interop.sh (torch, transformers, peft, gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES=${SHAPES:-"128:q,k,v,o 512:q,k,v,o 1024:q,k,v,o 128:all"}
RUNS=${RUNS:-3}
STEPS=${STEPS:-3}
SCALE_RUNS=${SCALE_RUNS:-1}
SCALE_STEPS=${SCALE_STEPS:-1}
THREADS=${THREADS:-2}
VENV=target/train-venv
WORK=target/bench-train
if ! "$VENV/bin/python" -c 'import torch, transformers, peft, gguf' 2>/dev/null; then
    echo "run scripts/check-hf-interop.sh first (it installs $VENV)" >&2
    exit 1
fi
scripts/system-deps.sh build
cargo build -q -p demorecon --bin demorecon
cargo build -q -p demorecon-train --example train_step
BASE=$(target/debug/demorecon model path)
target/debug/demorecon model fetch >/dev/null
mkdir -p "$WORK"
rm -f "$WORK"/*.jsonl "$WORK"/*.time "$WORK"/*.info

cat > "$WORK/torch_step.py" <<'PY'
# PyTorch + peft: the same step as demorecon's train_step example.
import json, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

gguf, pair_file, steps, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
targets = [f"{t}_proj" for t in sys.argv[5].split(",")]
torch.set_num_threads(threads)
pair = json.load(open(pair_file))
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                         target_modules=targets))
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
    t0, c0 = time.perf_counter(), time.process_time()
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
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if step > 0:
        print(json.dumps({"step": step, "loss": loss.item(), "step_s": dt, "cpu_s": cpu,
                          "tokens_per_s": ids.numel() / dt}), flush=True)
PY

# What both sides run on.
model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-)
have=""
for f in avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8; do
    case " $flags " in *" $f "*) have="$have $f" ;; esac
done
echo "CPU: $model, $(nproc) cores visible; vector extensions:${have:- none of avx2/avx512/amx}"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
"$VENV/bin/python" - "$THREADS" <<'PY'
import re, sys, torch
torch.set_num_threads(int(sys.argv[1]))
cfg = torch.__config__.show()
blas = re.search(r"BLAS_INFO=([^,\n]+)", cfg)
isa = re.search(r"CPU capability usage: (\S+)", cfg)
print(f"PyTorch {torch.__version__}: BLAS {blas.group(1) if blas else '?'}, MKL {torch.backends.mkl.is_available()}, "
      f"oneDNN {torch.backends.mkldnn.is_available()}, CPU capability {isa.group(1) if isa else torch.backends.cpu.get_cpu_capability()}, "
      f"{torch.get_num_threads()} threads")
PY
echo "ours: RAYON_NUM_THREADS=$THREADS, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (OpenBLAS picks its kernel from cpuid)}, DEMORECON_GEMM=${DEMORECON_GEMM:-unset}"
RAYON_NUM_THREADS=$THREADS target/debug/examples/train_step --describe

shape_no=0
for shape in $SHAPES; do
    shape_no=$((shape_no + 1))
    len=${shape%%:*}
    targets=${shape#*:}
    [ "$targets" = all ] && targets=q,k,v,o,gate,up,down
    if [ "$shape_no" = 1 ]; then runs=$RUNS steps=$STEPS; else runs=$SCALE_RUNS steps=$SCALE_STEPS; fi
    tag="s$shape_no"
    "$VENV/bin/python" - "$WORK/$tag-pair.json" "$len" <<'PY'
import json, sys, random
rng = random.Random(1)
n = int(sys.argv[2]); p = n // 2
prompt = [rng.randrange(100, 49152) for _ in range(p)]
pair = {"prompt_len": p,
        "chosen": prompt + [rng.randrange(100, 49152) for _ in range(n - p)],
        "rejected": prompt + [rng.randrange(100, 49152) for _ in range(n - p)]}
json.dump(pair, open(sys.argv[1], "w"))
PY
    echo "$len $targets $runs $steps" > "$WORK/$tag.info"
    for run in $(seq 1 "$runs"); do
        RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$WORK/$tag-ours-$run.time" \
            target/debug/examples/train_step --gguf "$BASE" --pair "$WORK/$tag-pair.json" \
            --rank 16 --targets "$targets" --steps $((steps + 1)) \
            | tail -n "$steps" >> "$WORK/$tag-ours.jsonl"
        OMP_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$WORK/$tag-torch-$run.time" \
            "$VENV/bin/python" "$WORK/torch_step.py" "$BASE" "$WORK/$tag-pair.json" "$steps" \
            "$THREADS" "$targets" 2>/dev/null >> "$WORK/$tag-torch.jsonl"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

"$VENV/bin/python" - "$WORK" "$shape_no" <<'PY'
import json, statistics, sys
from pathlib import Path
work, shapes = Path(sys.argv[1]), int(sys.argv[2])
def load(tag, name, runs):
    rows = [json.loads(l) for l in (work / f"{tag}-{name}.jsonl").read_text().splitlines() if l.strip()]
    rss = [int((work / f"{tag}-{name}-{r}.time").read_text().split()[-1]) / 1024 for r in range(1, runs + 1)]
    cpu = statistics.median(r["cpu_s"] for r in rows if r.get("cpu_s") is not None)
    return statistics.median(r["step_s"] for r in rows), cpu, statistics.median(rss), rows
print(f"{'tokens/seq':>10} {'LoRA on':<21}|{'ours s/step':>12}{'cpu s':>7}{'tok/s':>7}{'RSS MiB':>8} |"
      f"{'torch s/step':>13}{'cpu s':>7}{'tok/s':>7}{'RSS MiB':>8} |{'speed':>7}{'memory':>8}")
phases_of = []
for i in range(1, shapes + 1):
    tag = f"s{i}"
    length, targets, runs, _ = (work / f"{tag}.info").read_text().split()
    runs, tokens = int(runs), 2 * int(length)
    ours_s, ours_cpu, ours_rss, rows = load(tag, "ours", runs)
    torch_s, torch_cpu, torch_rss, _ = load(tag, "torch", runs)
    print(f"{length:>10} {targets:<21}|{ours_s:12.2f}{ours_cpu:7.1f}{tokens / ours_s:7.1f}{ours_rss:8.0f} |"
          f"{torch_s:13.2f}{torch_cpu:7.1f}{tokens / torch_s:7.1f}{torch_rss:8.0f} |"
          f"{torch_s / ours_s:6.2f}x{ours_rss / torch_rss:7.2f}x")
    phases = {k: statistics.median(r[k] for r in rows) for k in ("ref_s", "forward_s", "backward_s", "optimizer_s")}
    phases_of.append((length, targets, phases))
print("speed = our tokens/s over PyTorch's (>1: we are faster); memory = our peak RSS over PyTorch's;")
print("cpu s = CPU seconds (all threads) per step: the work done, whatever other processes took")
for length, targets, phases in phases_of:
    print(f"our phases at {length} × {targets} (median s): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in phases.items()))
PY
