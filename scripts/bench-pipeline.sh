#!/usr/bin/env bash
# Pipeline throughput: `demorecon run` over synthetic seeds against an instant-reply loopback
# endpoint (crates/testkit's `instant-endpoint`: every chat completion answered at once, JSON
# synthesised to validate against the request's schema), side by side with distilabel (PyPI)
# running a comparable three-step generation pipeline (decompose -> vary -> respond, three
# chained TextGeneration tasks) against the same endpoint over the same seeds. Calls are counted
# by the endpoint (/stats before and after each run); wall time and the largest process's peak
# RSS come from GNU time (/usr/bin/time -v), the whole process tree's peak (summed Pss) from
# sampling /proc (distilabel runs one process per step). The two tools alternate, RUNS times
# each, and the table shows medians: wall s, seeds/s, calls/s, calls per seed, peak memory, and
# the ratios ours / distilabel.
#
# Usage: scripts/bench-pipeline.sh
# Knobs (environment):
#   SEEDS (10000)            seeds for demorecon
#   DISTILABEL_SEEDS (SEEDS) seeds for distilabel (fewer if it takes too long: compare rates)
#   RUNS (3)                 repetitions of each tool
#   CONCURRENCY (64)         demorecon --max-concurrency
#   DISTILABEL_BATCH (64)    distilabel input_batch_size per step = requests it sends at once
#                            per step; three steps, each in its own process, so up to 3x that
#   ARRAY_ITEMS (4)          array length in synthesised JSON (= sub-instructions per seed)
#   SKIP_OURS=1 / SKIP_DISTILABEL=1, SKIP_BUILD=1 (use the binaries already in target/release)
#   DISTILABEL_REQ ('distilabel[openai]==1.5.3'), BENCH_VENV (target/bench-venv)
# Outputs: target/bench-pipeline/ (seeds, run folders, logs, results.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-10000}
DISTILABEL_SEEDS=${DISTILABEL_SEEDS:-$SEEDS}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-64}
DISTILABEL_BATCH=${DISTILABEL_BATCH:-64}
ARRAY_ITEMS=${ARRAY_ITEMS:-4}
DISTILABEL_REQ=${DISTILABEL_REQ:-distilabel[openai]==1.5.3}
venv=${BENCH_VENV:-target/bench-venv}
out=target/bench-pipeline
helpers=scripts/bench_pipeline
mkdir -p "$out"

command -v python3 >/dev/null || { echo "bench-pipeline: python3 is required" >&2; exit 1; }
# GNU time (for -v); Debian's package is `time`.
if ! /usr/bin/time -v true >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "== installing GNU time (apt-get install time)" >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
  else
    echo "bench-pipeline: GNU time is required at /usr/bin/time (Debian/Ubuntu: apt-get install time)" >&2
    exit 1
  fi
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  echo "== building demorecon and instant-endpoint (release)" >&2
  if [[ "${SKIP_OURS:-0}" == 1 ]]; then
    cargo build --release -q -p demorecon-testkit --bin instant-endpoint
  else
    cargo build --release -q -p demorecon -p demorecon-testkit --bin demorecon --bin instant-endpoint
  fi
fi
endpoint=target/release/instant-endpoint
demorecon=target/release/demorecon

if [[ "${SKIP_DISTILABEL:-0}" != 1 ]] && ! "$venv/bin/python" -c 'import distilabel, requests' 2>/dev/null; then
  echo "== installing $DISTILABEL_REQ into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$DISTILABEL_REQ" requests
fi

echo "== seeds: $SEEDS synthetic instructions" >&2
seeds_file="$out/seeds-$SEEDS.jsonl"
python3 "$helpers/make_seeds.py" "$SEEDS" "$seeds_file"
peer_seeds_file="$out/seeds-$DISTILABEL_SEEDS.jsonl"
python3 "$helpers/make_seeds.py" "$DISTILABEL_SEEDS" "$peer_seeds_file"

echo "== the endpoint's own ceiling (in-process keep-alive clients, 3 s)" >&2
"$endpoint" --measure 3 --array-items "$ARRAY_ITEMS" | tail -n 1

"$endpoint" --port 0 --array-items "$ARRAY_ITEMS" >"$out/endpoint.log" 2>&1 &
endpoint_pid=$!
trap 'kill "$endpoint_pid" 2>/dev/null || true; wait "$endpoint_pid" 2>/dev/null || true' EXIT
url=
for _ in $(seq 200); do
  url=$(awk 'NR == 1 && /^listening on / { print $3 }' "$out/endpoint.log")
  [[ -n "$url" ]] && break
  sleep 0.05
done
[[ -n "$url" ]] || { echo "bench-pipeline: instant-endpoint did not start" >&2; cat "$out/endpoint.log" >&2; exit 1; }
echo "== endpoint: $url" >&2

requests() {
  python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["requests"])' "${url%/v1}/stats"
}

results="$out/results.tsv"
printf 'tool\trep\tseeds\twall_s\tcalls\tmaxrss_kib\ttree_kib\texit\n' >"$results"

# measure TOOL REP SEEDS -- COMMAND...: runs COMMAND under GNU time and the tree sampler, its
# output to $out/TOOL-REP.log, and appends one row to results.tsv.
measure() {
  local tool=$1 rep=$2 seeds=$3
  shift 4
  local log="$out/$tool-$rep.log" timing="$out/$tool-$rep.time" tree="$out/$tool-$rep.tree"
  local before after status=0
  before=$(requests)
  python3 "$helpers/treepeak.py" "$tree" -- /usr/bin/time -v -o "$timing" "$@" >"$log" 2>&1 || status=$?
  after=$(requests)
  local wall maxrss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s }' "$timing")
  maxrss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$timing")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$seeds" "$wall" "$((after - before))" "$maxrss" "$(cat "$tree")" "$status" >>"$results"
  printf '   %-5s run %s: %s seeds, %s s, %s calls, max RSS %s KiB, exit %s\n' "$tool" "$rep" "$seeds" "$wall" "$((after - before))" "$maxrss" "$status" >&2
  if [[ $status != 0 ]]; then
    echo "   (failed: last lines of $log)" >&2
    tail -n 5 "$log" >&2
  fi
}

# Ours: the whole DeMoRecon pipeline, every role on the instant endpoint; a fresh run folder and
# cache each repetition so nothing is answered from a previous one. Sets cmd=(...) for
# repetition $1 (role variables from the caller's environment are dropped).
ours_command() {
  local run_dir="$out/run-$1" cache="$out/cache-$1.sqlite"
  rm -rf "$run_dir" "$cache" "$cache-wal" "$cache-shm"
  cmd=(env -u DEMORECON_GENERATOR -u DEMORECON_RESPONDER -u DEMORECON_JUDGE -u DEMORECON_TARGET
    -u DEMORECON_CONFIG -u DEMORECON_BACKEND
    "$demorecon" --backend "bench@$url" --max-concurrency "$CONCURRENCY" --cache "$cache"
    run "$seeds_file" -o "$run_dir")
}

# The peer: distilabel's three chained TextGeneration tasks on OpenAILLM, its cache off.
peer_command() {
  local run_dir="$out/distilabel-$1"
  rm -rf "$run_dir"
  mkdir -p "$run_dir"
  cmd=("$venv/bin/python" "$helpers/distilabel_pipeline.py" "$peer_seeds_file" "$url" "$run_dir"
    --batch-size "$DISTILABEL_BATCH")
}

peer_label="distilabel"
if [[ "${SKIP_DISTILABEL:-0}" != 1 ]]; then
  peer_label="distilabel $("$venv/bin/python" -c 'import distilabel; print(distilabel.__version__)')"
fi
ours_label="demorecon"
if [[ "${SKIP_OURS:-0}" != 1 ]]; then
  ours_label=$("$demorecon" --version 2>/dev/null | head -n 1 || echo demorecon)
fi

echo "== $RUNS runs each, alternating; demorecon --max-concurrency $CONCURRENCY; distilabel input_batch_size $DISTILABEL_BATCH per step" >&2
for rep in $(seq "$RUNS"); do
  if [[ "${SKIP_OURS:-0}" != 1 ]]; then
    ours_command "$rep"
    measure ours "$rep" "$SEEDS" -- "${cmd[@]}"
  fi
  if [[ "${SKIP_DISTILABEL:-0}" != 1 ]]; then
    peer_command "$rep"
    measure peer "$rep" "$DISTILABEL_SEEDS" -- "${cmd[@]}"
  fi
done

echo
echo "pipeline throughput against an instant loopback endpoint ($(nproc) cores; $ARRAY_ITEMS sub-instructions per seed)"
echo "ours: demorecon run, --max-concurrency $CONCURRENCY, $SEEDS seeds; peer: $peer_label, 3 TextGeneration steps, input_batch_size $DISTILABEL_BATCH, $DISTILABEL_SEEDS seeds"
python3 "$helpers/summarize.py" "$results" "$ours_label" "$peer_label"
