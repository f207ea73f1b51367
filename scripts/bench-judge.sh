#!/usr/bin/env bash
# Judge-protocol overhead: how many items a second `demorecon eval infobench` and
# `demorecon eval followbench` score when the judge answers instantly (crates/testkit's
# `instant-endpoint` on loopback), so the tool itself is what gets measured — it should never be
# the bottleneck in front of a real judge. Beside it, in the same run, the peer: both judge
# protocols as their reference evaluation scripts run them (one item after another, the
# official `openai` Python client; scripts/bench_judge/reference_loops.py) against the same
# endpoint. Ours runs at --concurrency 1 (like for like) and 64 (how it is meant to be run),
# each with a fresh call cache so every call reaches the endpoint.
#
# Usage: scripts/bench-judge.sh            Knobs: RUNS (5), SKIP_BUILD=1, BENCH_VENV
# Data: ../shared/data (or $DEMORECON_SHARED_DATA): InFoBench with the third-party GPT-4
# outputs as responses, FollowBench with the Mistral-7B responses.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
DATA=${DEMORECON_SHARED_DATA:-$PWD/../shared/data}
venv=${BENCH_VENV:-target/venv-openai}
out=target/bench-judge
mkdir -p "$out"

echo "== machine: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores"
echo "   vector extensions: $(grep -o -w -E 'sse4_2|avx|avx2|fma|avx512f|avx512bw|avx512_vnni|amx_tile|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  echo "== building demorecon and instant-endpoint (release)" >&2
  cargo build --release -q -p demorecon -p demorecon-testkit --bin demorecon --bin instant-endpoint
fi
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check 'openai>=1.40,<3'
fi

target/release/instant-endpoint --port 0 >"$out/endpoint.log" 2>&1 &
endpoint_pid=$!
trap 'kill "$endpoint_pid" 2>/dev/null || true; wait "$endpoint_pid" 2>/dev/null || true' EXIT
url=
for _ in $(seq 200); do
  url=$(awk 'NR == 1 && /^listening on / { print $3 }' "$out/endpoint.log")
  [[ -n "$url" ]] && break
  sleep 0.05
done
[[ -n "$url" ]] || { echo "bench-judge: instant-endpoint did not start" >&2; exit 1; }
stats() { python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["requests"])' "${url%/v1}/stats"; }

ib_data=$DATA/infobench/infobench.jsonl
ib_resp=$DATA/infobench/third_party_gpt4_outputs_with_gpt4_eval.jsonl
fb_data=$DATA/followbench
fb_resp=$DATA/followbench/responses_mistral-7b-instruct-v0.3

# ours BENCH CONCURRENCY REP: one scoring run; prints "items calls wall_s".
ours() {
  local bench=$1 conc=$2 rep=$3 cache="$out/cache-$1-$2-$3.sqlite" before after start end
  rm -f "$cache"*
  local args
  if [[ $bench == infobench ]]; then
    args=(eval infobench --input "$ib_data" --responses "$ib_resp")
  else
    args=(eval followbench --data "$fb_data" --responses "$fb_resp")
  fi
  before=$(stats)
  start=$(date +%s.%N)
  env -u DEMORECON_JUDGE -u DEMORECON_CONFIG -u DEMORECON_BACKEND \
    target/release/demorecon --cache "$cache" --judge "judge@$url" --max-concurrency "$conc" \
    "${args[@]}" --concurrency "$conc" --quiet --json -o "$out/ours-$bench" >"$out/ours-$bench.json"
  end=$(date +%s.%N)
  after=$(stats)
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["items"], sys.argv[2], float(sys.argv[4]) - float(sys.argv[3]))' \
    "$out/ours-$bench.json" "$((after - before))" "$start" "$end"
}

# The peer, timed the same way (whole process, interpreter start and imports included).
peer() {
  local bench=$1 data resp start end line
  if [[ $bench == infobench ]]; then data=$ib_data resp=$ib_resp; else data=$fb_data resp=$fb_resp; fi
  start=$(date +%s.%N)
  line=$("$venv/bin/python" scripts/bench_judge/reference_loops.py "$bench" "$url" "$data" "$resp")
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" '{ print $2, $4, e - s }' <<<"$line"
}

results="$out/results.tsv"
printf 'bench\ttool\trep\titems\tcalls\twall_s\n' >"$results"
for bench in infobench followbench; do
  for rep in $(seq "$RUNS"); do
    for tool in ours-1 ours-64 peer; do
      case $tool in
        ours-1) line=$(ours "$bench" 1 "$rep") ;;
        ours-64) line=$(ours "$bench" 64 "$rep") ;;
        peer) line=$(peer "$bench") ;;
      esac
      printf '%s\t%s\t%s\t%s\n' "$bench" "$tool" "$rep" "$(tr ' ' '\t' <<<"$line")" >>"$results"
    done
  done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"\n{'benchmark':<12} {'tool':<36} {'items':>6} {'calls':>6} {'wall s (median)':>16} {'items/s':>9} {'calls/s':>9}")
for bench in ["infobench", "followbench"]:
    med = {}
    for tool, label in [("ours-1", "demorecon, --concurrency 1"), ("ours-64", "demorecon, --concurrency 64"),
                        ("peer", "reference loop (openai client)")]:
        rs = [r for r in rows if r["bench"] == bench and r["tool"] == tool]
        wall = statistics.median(float(r["wall_s"]) for r in rs)
        items, calls = int(rs[0]["items"]), int(rs[0]["calls"])
        med[tool] = items / wall
        print(f"{bench:<12} {label:<36} {items:>6} {calls:>6} {wall:>16.3f} {items / wall:>9.1f} {calls / wall:>9.1f}")
    print(f"{'':<12} ratio ours/peer: {med['ours-1'] / med['peer']:.2f}x at concurrency 1, {med['ours-64'] / med['peer']:.2f}x at 64")
PY
