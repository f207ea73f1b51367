#!/usr/bin/env bash
# Benchmark: whole-process wall time and peak memory of `demorecon eval ifeval` scoring the 541
# archived GPT-4 IFEval responses (strict and loose, all output files written), against the
# Python reference logic as lm-eval 0.4.13 ships it (lm_eval/tasks/ifeval), in the same run.
#
# Usage: scripts/bench-ifeval.sh [RUNS]          (default 7 runs each; medians are reported)
#
# Needs: cargo, python3 (with venv), /usr/bin/time (GNU time), network access to PyPI the
# first time (the venv is cached). Data: ../shared/data beside the repo, or
# $DEMORECON_SHARED_DATA. Nothing is written inside the repo except under target/.
#
# The Python side: lm-eval is installed with --no-deps plus only what its IFEval checks import
# (nltk, langdetect, immutabledict, absl-py); a small driver loads lm_eval.tasks.ifeval without
# running lm_eval's package __init__ (which would pull torch/datasets/...), then scores every
# row strict and loose with lm-eval's own functions and writes the same two output files.
# Punkt parameters come from the shared data, copied into an NLTK_DATA folder in the cache.
# nltk is pinned at 3.10.4, the version IFEval parity is defined against (it compiles its
# patterns with the `regex` module; see crates/checks/src/pyregex.rs).
set -euo pipefail

RUNS=${1:-7}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${DEMORECON_SHARED_DATA:-$ROOT/../shared/data}
IFEVAL=$DATA/ifeval
INPUT=$IFEVAL/input_data_gpt4_20231107_145030.jsonl
RESPONSES=$IFEVAL/input_response_data_gpt4_20231107_145030.jsonl
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=$TARGET/bench-ifeval
VENV=$CACHE/venv-lm-eval-0.4.13
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[[ -f $INPUT && -f $RESPONSES ]] || { echo "IFEval data not found under $IFEVAL" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 1; }

echo "== building demorecon (release)" >&2
(cd "$ROOT" && cargo build --release --quiet -p demorecon --bin demorecon)
BIN=$TARGET/release/demorecon

if [[ ! -x $VENV/bin/python ]]; then
  echo "== creating the lm-eval 0.4.13 venv in $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --no-deps lm-eval==0.4.13
  "$VENV/bin/pip" install --quiet nltk==3.10.4 langdetect==1.0.9 immutabledict absl-py packaging
fi
NLTK_DATA_DIR=$CACHE/nltk_data
if [[ ! -d $NLTK_DATA_DIR/tokenizers/punkt_tab/english ]]; then
  mkdir -p "$NLTK_DATA_DIR/tokenizers/punkt_tab"
  cp -r "$DATA/punkt_tab/english" "$NLTK_DATA_DIR/tokenizers/punkt_tab/"
fi

cat > "$WORK/lm_eval_ifeval.py" <<'PY'
"""Score IFEval responses with lm-eval 0.4.13's own IFEval functions (strict and loose)."""
import importlib.util, json, os, sys, types

spec = importlib.util.find_spec("lm_eval")
root = list(spec.submodule_search_locations)[0]
# Stub the parent packages so their heavy __init__ modules do not run.
for name, sub in (("lm_eval", ""), ("lm_eval.tasks", "tasks")):
    mod = types.ModuleType(name)
    mod.__path__ = [os.path.join(root, sub)]
    sys.modules[name] = mod
from lm_eval.tasks.ifeval import utils  # noqa: E402

input_path, responses_path, out_dir = sys.argv[1:4]
responses = {}
for line in open(responses_path, encoding="utf-8"):
    row = json.loads(line)
    responses[row["prompt"]] = row["response"]
os.makedirs(out_dir, exist_ok=True)
totals = {"strict": [0, 0, 0, 0], "loose": [0, 0, 0, 0]}
outs = {m: open(os.path.join(out_dir, f"eval_results_{m}.jsonl"), "w", encoding="utf-8") for m in totals}
for line in open(input_path, encoding="utf-8"):
    doc = json.loads(line)
    inp = utils.InputExample(key=doc["key"], instruction_id_list=doc["instruction_id_list"],
                             prompt=doc["prompt"], kwargs=doc["kwargs"])
    for mode, fn in (("strict", utils.test_instruction_following_strict),
                     ("loose", utils.test_instruction_following_loose)):
        o = fn(inp, responses[doc["prompt"]])
        t = totals[mode]
        t[0] += o.follow_all_instructions; t[1] += 1
        t[2] += sum(o.follow_instruction_list); t[3] += len(o.follow_instruction_list)
        outs[mode].write(json.dumps({"follow_all_instructions": o.follow_all_instructions,
                                     "follow_instruction_list": o.follow_instruction_list,
                                     "instruction_id_list": o.instruction_id_list,
                                     "prompt": o.prompt, "response": o.response}) + "\n")
summary = {f"prompt_level_{m}_acc": t[0] / t[1] for m, t in totals.items()}
summary.update({f"inst_level_{m}_acc": t[2] / t[3] for m, t in totals.items()})
json.dump(summary, open(os.path.join(out_dir, "summary.json"), "w"), indent=1)
PY

# run_timed NAME CMD...: appends "wall_s max_rss_kb" to $WORK/NAME.times. The wall time is
# taken with nanosecond timestamps around the run (GNU time's %e has 10 ms steps, a third of
# our whole run); it includes starting /usr/bin/time, the same for both sides.
run_timed() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$WORK/$name.one" "$@" > "$WORK/$name.stdout" 2> "$WORK/$name.stderr" || {
    echo "$name failed:" >&2; cat "$WORK/$name.stderr" >&2; exit 1; }
  t1=$(date +%s%N)
  echo "$(echo "($t1 - $t0) / 1000000000" | bc -l) $(tail -n 1 "$WORK/$name.one")" >> "$WORK/$name.times"
}

OURS=(env DEMORECON_HOME="$WORK/home" "$BIN" eval ifeval --input "$INPUT" --responses "$RESPONSES" -o "$WORK/ours")
REF=(env NLTK_DATA="$NLTK_DATA_DIR" "$VENV/bin/python" "$WORK/lm_eval_ifeval.py" "$INPUT" "$RESPONSES" "$WORK/ref")

echo "== warm-up" >&2
run_timed warm "${OURS[@]}"; run_timed warm "${REF[@]}"
for i in $(seq "$RUNS"); do
  echo "== run $i/$RUNS" >&2
  run_timed ours "${OURS[@]}"
  run_timed ref "${REF[@]}"
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ours_wall=$(cut -d' ' -f1 "$WORK/ours.times" | median)
ours_rss=$(cut -d' ' -f2 "$WORK/ours.times" | median)
ref_wall=$(cut -d' ' -f1 "$WORK/ref.times" | median)
ref_rss=$(cut -d' ' -f2 "$WORK/ref.times" | median)

# Sanity: how many instruction verdicts the two disagree on (lm-eval's letter_frequency rule
# differs from the newest reference for non-letters, keys 1122 and 1129: it replaces the
# character by a random letter, so 0 to 4 verdicts differ from run to run).
diffs=$(python3 - "$WORK/ours" "$WORK/ref" <<'PY'
import json, sys
n = 0
for m in ("strict", "loose"):
    a = [json.loads(l) for l in open(f"{sys.argv[1]}/eval_results_{m}.jsonl")]
    b = [json.loads(l) for l in open(f"{sys.argv[2]}/eval_results_{m}.jsonl")]
    n += sum(x != y for r, s in zip(a, b) for x, y in zip(r["follow_instruction_list"], s["follow_instruction_list"]))
print(n)
PY
)

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
echo
echo "IFEval scoring, 541 GPT-4 responses, strict + loose, whole process, median of $RUNS runs"
echo "CPU: ${cpu:-unknown}, $(nproc) cores available; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
printf '%-28s %10s %14s\n' "" "wall (s)" "peak RSS (MB)"
printf '%-28s %10.4f %14.1f\n' "demorecon eval ifeval" "$ours_wall" "$(echo "$ours_rss/1024" | bc -l)"
printf '%-28s %10.4f %14.1f\n' "lm-eval 0.4.13 (Python)" "$ref_wall" "$(echo "$ref_rss/1024" | bc -l)"
printf 'speed-up: %.1fx   memory: %.1fx less\n' "$(echo "$ref_wall/$ours_wall" | bc -l)" "$(echo "$ref_rss/$ours_rss" | bc -l)"
echo "instruction verdicts that differ between the two: $diffs"
echo "summary (ours): $(tr -d '\n ' < "$WORK/ours/summary.json" | head -c 160)..."
