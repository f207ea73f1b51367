#!/usr/bin/env bash
# The README's main job end to end — `demorecon run` over the example seeds with every role on
# the embedded model — and beside it the same run with every role pointed at llama-cpp-python's
# OpenAI-compatible server on the same GGUF (what a user would set up instead), in one run of
# this script, on the same machine. Prints wall time, model calls, calls/s and peak memory of
# each, and the ratio.
#
# Usage: scripts/bench-main-job.sh
# Knobs (environment): SEEDS (examples/seeds.jsonl), MAX_TOKENS (160, as in the README),
#   THREADS (all cores), SLOTS (4: requests demorecon keeps in flight to the server),
#   SKIP_SERVER=1 (ours only), SKIP_EMBEDDED=1 (the server run only), LLAMA_CPP_PYTHON (pip requirement, default llama-cpp-python),
#   BENCH_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/demorecon-bench: the llama-cpp-python
#   venv that scripts/bench-embedded.sh builds from source is reused).
# Outputs: OUT_DIR (default target/bench-main-job/: run folders, caches, logs).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-examples/seeds.jsonl}
MAX_TOKENS=${MAX_TOKENS:-160}
THREADS=${THREADS:-$(nproc)}
SLOTS=${SLOTS:-4}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-llama-cpp-python}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demorecon-bench}
out=${OUT_DIR:-target/bench-main-job}
rm -rf "$out"
mkdir -p "$out"

scripts/cpu-info.sh
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building the release binary" >&2
cargo build --release -q -p demorecon --locked
bin=target/release/demorecon
"$bin" model fetch >/dev/null
model=$("$bin" model path)

# `run` prints "cache: H hits, M misses" at the end: the misses are the calls that reached a
# model. GNU time gives wall time and peak RSS.
measure() {
  local name=$1
  shift
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" 2>"$out/$name.log" >/dev/null || {
    tail -n 20 "$out/$name.log" >&2
    echo "bench-main-job: the $name run failed" >&2
    exit 1
  }
  local wall rss calls
  read -r wall rss <"$out/$name.time"
  calls=$(grep -oE 'cache: [0-9]+ hits, [0-9]+ misses' "$out/$name.log" | tail -n1 | awk '{print $4}')
  echo "$name $wall $((rss / 1024)) ${calls:-0}" >>"$out/results.txt"
}

if [[ "${SKIP_EMBEDDED:-0}" != 1 ]]; then
  echo "== demorecon run, every role embedded" >&2
  RAYON_NUM_THREADS=$THREADS measure embedded \
    "$bin" --cache "$out/embedded.sqlite" run "$SEEDS" -o "$out/embedded" --response-max-tokens "$MAX_TOKENS"
  grep -E 'prefix cache' "$out/embedded.log" | tail -n 1 || true
fi

if [[ "${SKIP_SERVER:-0}" != 1 ]]; then
  venv="$BENCH_CACHE/venv"
  if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "bench-main-job: no llama-cpp-python in $venv; run scripts/bench-embedded.sh once (it builds it for this CPU), or SKIP_SERVER=1" >&2
    exit 1
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$LLAMA_CPP_PYTHON[server]" >/dev/null
  port=$((20000 + RANDOM % 20000))
  "$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
    --n_threads "$THREADS" --n_ctx 8192 >"$out/server-process.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
    sleep 1
  done
  echo "== demorecon run, every role on llama-cpp-python's server ($SLOTS requests in flight)" >&2
  measure server \
    "$bin" --cache "$out/server.sqlite" --backend "smollm2@http://127.0.0.1:$port/v1" \
    --max-concurrency "$SLOTS" --timeout 1800 \
    run "$SEEDS" -o "$out/server" --response-max-tokens "$MAX_TOKENS"
  kill "$server" 2>/dev/null || true
fi

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk 'BEGIN { printf "%-34s %9s %7s %9s %13s\n", "main job (" ENVIRON["SEEDS"] ")", "wall s", "calls", "calls/s", "peak RSS MiB" }
     { wall[$1] = $2; printf "%-34s %9.1f %7d %9.2f %13d\n", ($1 == "embedded" ? "demorecon, embedded engine" : "demorecon -> llama-cpp-python server"), $2, $4, ($2 > 0 ? $4 / $2 : 0), $3 }
     END { if (wall["server"] > 0 && wall["embedded"] > 0) printf "wall-time ratio (server / embedded): %.2fx\n", wall["server"] / wall["embedded"] }' \
  SEEDS="$SEEDS" "$out/results.txt"
