#!/usr/bin/env bash
# The embedded model on a GPU: builds llama.cpp's CUDA backend from the exact llama.cpp source
# that our pinned binding (llama-cpp-sys-2) vendors, with scripts/bench-cuda/bench.cpp beside
# it, and times the GGUF with the engine's settings (one KV stream per sequence, no flash
# attention, 64-token prefill chunks): single-stream prefill and decode, and aggregate decode
# of 1, 4, 8, 16 and 32 sequences, on the GPU and, for the same run's reference, on the CPU.
# Prints the GPU, the CPU and its vector extensions first.
#
# It needs cmake, a C++ compiler and the CUDA toolkit (nvcc), not cargo, so it runs on GPU
# machines without a Rust toolchain. The crate's `cuda` feature builds the same backend into the
# binary (`cargo build --release --features cuda`) where both are installed; this script does
# not build it.
#
# Usage: scripts/bench-cuda.sh [build|bench|all]   (default all)
# Knobs (environment): LLAMA_SRC (default: llama.cpp inside llama-cpp-sys-2's crate source in
#   ~/.cargo/registry), MODEL (default: `demorecon model path`), CUDA_ARCH (default: native),
#   BUILD_DIR (default: target/bench-cuda), JOBS (default: all cores), RUNS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
BUILD_DIR=${BUILD_DIR:-target/bench-cuda}
CUDA_ARCH=${CUDA_ARCH:-native}
JOBS=${JOBS:-$(nproc)}
RUNS=${RUNS:-5}
if [[ -z "${LLAMA_SRC:-}" ]]; then
  version=$(grep -A1 '^name = "llama-cpp-sys-2"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
  LLAMA_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$version"/llama.cpp 2>/dev/null | head -n1)
  [[ -n "$LLAMA_SRC" ]] || { echo "bench-cuda: no llama-cpp-sys-2 $version source; run cargo fetch, or set LLAMA_SRC" >&2; exit 1; }
fi
export PATH=$PATH:/usr/local/cuda/bin

if [[ $what == build || $what == all ]]; then
  command -v nvcc >/dev/null || { echo "bench-cuda: no nvcc (the CUDA toolkit) on PATH" >&2; exit 1; }
  echo "== building llama.cpp with CUDA from $LLAMA_SRC ($(nvcc --version | tail -n1))" >&2
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S scripts/bench-cuda -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_SRC="$(cd "$LLAMA_SRC" && pwd)" -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
    -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_LLAMAFILE=OFF -DGGML_CPU_REPACK=OFF >"$BUILD_DIR.configure.log" 2>&1 ||
    { tail -n 30 "$BUILD_DIR.configure.log" >&2; exit 1; }
  cmake --build "$BUILD_DIR" --target bench-cuda -j "$JOBS"
fi

if [[ $what == bench || $what == all ]]; then
  MODEL=${MODEL:-$(target/release/demorecon model path 2>/dev/null || true)}
  [[ -f "$MODEL" ]] || { echo "bench-cuda: no GGUF at '$MODEL'; set MODEL" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/== GPU: /' >&2 || true
  scripts/cpu-info.sh >&2 || true
  bin="$BUILD_DIR/bench-cuda"
  echo "== GPU (every layer offloaded)" >&2
  "$bin" "$MODEL" 99 98 128 "$RUNS" 1
  echo "== CPU, same build (no layers offloaded, $(nproc) threads)" >&2
  "$bin" "$MODEL" 0 98 128 "$RUNS" "$(nproc)"
fi
