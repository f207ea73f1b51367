#!/usr/bin/env bash
# Speed of the embedded model: the CPU and its vector extensions; single-stream prefill and
# decode (tokens/s, medians over RUNS) side by side with the same GGUF run by llama.cpp
# (llama-cpp-python built from its PyPI source distribution, CPU only, once, into a cache
# directory); aggregate decode through ChatModel at several concurrencies (continuous
# batching); single-stream decode with one competing CPU-bound process; peak RSS.
#
# Usage: scripts/bench-embedded.sh
# Knobs (environment): PROFILE (release; dev reuses the test build), RUNS (5), DECODE_TOKENS (128),
#   THREADS (single stream, both engines: all cores), AGG_THREADS (aggregate: auto, the engine's
#   own per-call choice, or a number), CONCURRENCY ("1,4,8,16,32"), SKIP_LLAMA_CPP=1 (ours only), SKIP_LOADED=1 (no contention run),
#   LLAMA_CPP_PYTHON (pip requirement, default llama-cpp-python),
#   BENCH_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/demorecon-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
DECODE_TOKENS=${DECODE_TOKENS:-128}
THREADS=${THREADS:-$(nproc)}
AGG_THREADS=${AGG_THREADS:-auto}
CONCURRENCY=${CONCURRENCY:-1,4,8,16,32}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demorecon-bench}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-llama-cpp-python}
mkdir -p "$BENCH_CACHE"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
exts=""
for f in sse4_2 avx avx2 fma f16c bmi2 avx_vnni avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512vbmi amx_tile amx_int8 amx_bf16; do
  [[ " $flags " == *" $f "* ]] && exts+="$f "
done
echo "== CPU: $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(nproc) cores" >&2
echo "== vector extensions: ${exts:-none found}" >&2
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >&2

# PROFILE=dev reuses the test build: llama.cpp is compiled with CMake's Release type and the
# embedded crate at opt-level 3 in both profiles, so the figures match.
PROFILE=${PROFILE:-release}
echo "== building the embedded benchmark ($PROFILE)" >&2
cargo build --profile "$PROFILE" -q -p demorecon-embedded --example bench_embedded
target_dir=${CARGO_TARGET_DIR:-target}
bin="$target_dir/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")/examples/bench_embedded"
model=$("$bin" --print-model-path)
"$bin" --print-prompt >"$out/prompt.txt"

# CPU-only llama.cpp for this machine's x86 extensions, but without AMX: -march=native would
# enable AMX tiles, which sandboxes often do not grant (the first tileload dies with SIGILL).
llama_cmake_args() {
  local args="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=OFF"
  args+=" -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_NATIVE=OFF"
  args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  local flags
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  has() { [[ " $flags " == *" $1 "* ]]; }
  has avx && args+=" -DGGML_AVX=ON"
  has avx2 && args+=" -DGGML_AVX2=ON"
  has fma && args+=" -DGGML_FMA=ON"
  has f16c && args+=" -DGGML_F16C=ON"
  has bmi2 && args+=" -DGGML_BMI2=ON"
  has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
  has avx512f && args+=" -DGGML_AVX512=ON"
  has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
  echo "$args"
}

if [[ "${SKIP_LLAMA_CPP:-0}" != 1 ]]; then
  venv="$BENCH_CACHE/venv"
  # The stamp records the build flags, so a change of flags rebuilds.
  stamp="$venv/.demorecon-cmake-args"
  if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null || [[ "$(cat "$stamp" 2>/dev/null)" != "$(llama_cmake_args)" ]]; then
    echo "== building llama-cpp-python from source into $venv (once; several minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check cmake ninja numpy
    PATH="$venv/bin:$PATH" CMAKE_ARGS="$(llama_cmake_args)" \
      CMAKE_BUILD_PARALLEL_LEVEL=$THREADS \
      "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-cache-dir \
      --no-binary=llama-cpp-python "$LLAMA_CPP_PYTHON"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$LLAMA_CPP_PYTHON"
    llama_cmake_args >"$stamp"
  fi
fi

# The two engines run back to back so they see the same machine load.
echo "== demorecon-embedded, single stream" >&2
"$bin" --model "$model" --mode single --threads "$THREADS" --decode-tokens "$DECODE_TOKENS" --runs "$RUNS" | tee "$out/ours.jsonl"

if [[ "${SKIP_LLAMA_CPP:-0}" != 1 ]]; then
  echo "== llama.cpp (llama-cpp-python $("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)'))" >&2
  "$venv/bin/python" - "$model" "$out/prompt.txt" "$DECODE_TOKENS" "$RUNS" "$THREADS" <<'PY' | tee "$out/llama.json"
import json, resource, statistics, sys, time
import numpy as np
from llama_cpp import Llama, __version__

model, prompt_file, decode_tokens, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prompt = open(prompt_file, encoding="utf-8").read()
t0 = time.perf_counter()
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512, verbose=False)
load_s = time.perf_counter() - t0
tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
prefill, decode = [], []
for run in range(runs + 1):  # run 0 warms up
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(decode_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    decode_s = time.perf_counter() - start
    if run > 0:
        prefill.append(len(tokens) / prefill_s)
        decode.append(decode_tokens / decode_s)
print(json.dumps({
    "engine": "llama.cpp", "version": __version__, "threads": threads,
    "prompt_tokens": len(tokens), "decode_tokens": decode_tokens, "runs": runs, "load_s": load_s,
    "prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode),
    "prefill_tok_s_all": prefill, "decode_tok_s_all": decode,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
PY
fi

echo "== demorecon-embedded, aggregate through ChatModel (concurrency $CONCURRENCY)" >&2
"$bin" --model "$model" --mode aggregate --threads "$AGG_THREADS" --decode-tokens "$DECODE_TOKENS" --concurrency "$CONCURRENCY" | tee "$out/aggregate.jsonl"

if [[ "${SKIP_LOADED:-0}" != 1 ]]; then
  echo "== demorecon-embedded with one competing CPU-bound process: one request through ChatModel ($AGG_THREADS threads), then single stream on a fixed $THREADS" >&2
  python3 -c 'while True: pass' &
  hog=$!
  "$bin" --model "$model" --mode aggregate --threads "$AGG_THREADS" --decode-tokens "$DECODE_TOKENS" --concurrency 1 | tee "$out/loaded.jsonl" || true
  "$bin" --model "$model" --mode single --threads "$THREADS" --decode-tokens "$DECODE_TOKENS" --runs "$RUNS" | tee "$out/loaded-fixed.jsonl" || true
  kill "$hog"
fi

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def rows(name):
    path = os.path.join(out, name)
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
ours = rows("ours.jsonl")[0]
llama = (rows("llama.json") or [None])[0]
print()
print(f"{'single stream':<28} {'prompt':>6} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak RSS MiB':>13}")
table = [("demorecon-embedded", ours)] + ([(f"llama.cpp {llama['version']}", llama)] if llama else [])
for name, r in table:
    print(f"{name:<28} {r['prompt_tokens']:>6} {r['prefill_tok_s']:>14.1f} {r['decode_tok_s']:>13.1f} {r['peak_rss_mb'] or 0:>13.0f}")
if llama:
    print(f"ratio ours/llama.cpp: prefill {ours['prefill_tok_s'] / llama['prefill_tok_s']:.2f}x, "
          f"decode {ours['decode_tok_s'] / llama['decode_tok_s']:.2f}x")
print()
# Aggregate rows count every completion token over the wall time of the whole burst (prefill
# included), so "x 1 request" compares like with like; "x single" is against the raw
# single-stream decode rate above.
agg = rows("aggregate.jsonl")
one = next((r for r in agg if r["concurrency"] == 1), None)
print(f"{'concurrent requests':<20} {'tok/s':>8} {'x 1 request':>12} {'x single':>9} {'mean batch':>11} {'mean threads':>13} {'peak RSS MiB':>13}")
for r in agg:
    x1 = f"{r['tok_s'] / one['tok_s']:.2f}" if one else "-"
    print(f"{r['concurrency']:<20} {r['tok_s']:>8.1f} {x1:>12} {r['tok_s'] / ours['decode_tok_s']:>9.2f} "
          f"{r['mean_batch']:>11.1f} {r.get('mean_threads', 0):>13.2f} {r['peak_rss_mb']:>13.0f}")
loaded, fixed = rows("loaded.jsonl"), rows("loaded-fixed.jsonl")
if loaded and one:
    l = loaded[0]
    print()
    print(f"one request with one competing CPU-bound process: {l['tok_s']:.1f} tok/s "
          f"({l['tok_s'] / one['tok_s']:.0%} of quiet; mean threads {l.get('mean_threads', 0):.2f})")
if fixed:
    f = fixed[0]
    print(f"single stream on a fixed {f['threads']} threads with it: {f['decode_tok_s']:.1f} tok/s "
          f"({f['decode_tok_s'] / ours['decode_tok_s']:.0%} of quiet)")
PY
